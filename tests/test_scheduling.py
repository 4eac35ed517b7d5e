"""The scheduler on its own: host slots, fairness, rate gates, cool-downs, dead
hosts, eviction and parking, on a clock the tests advance by hand. No network,
no event loop, no sleeps: a wake-up the scheduler arms is delivered by
:meth:`Harness.advance` when the clock passes it, as the event loop would."""

from __future__ import annotations

from typing import Any

import pytest

from fanout.engine.hoststate import HostMemory
from fanout.engine.scheduling import MIN_TIMER, RECENT_READS, Host, Scheduler
from fanout.policy import Limits
from fanout.urls import HostKey


def key(name: str) -> HostKey:
    return ("http", name, 80)


class Run:
    """What the scheduler reads of a run."""

    def __init__(self, *, ordered: bool = False) -> None:
        self.closed = False
        self.ordered = ordered


class Item:
    """A request as the scheduler sees it, named for the assertions."""

    def __init__(self, name: str, host: Host[Any], run: Run) -> None:
        self.name = name
        self.host = host
        self.run = run
        self.parked = False

    def __repr__(self) -> str:
        return self.name


class Harness:
    """A scheduler with a hand-driven clock, and the owner's side recorded:
    items started (``started``, names with the time), dropped, skipped and
    unparked; ``hold`` is what the owner answers when a parked item is next."""

    def __init__(self, limits: Limits | None = None, **options: Any) -> None:
        self.now = 100.0
        self.wake_at: float | None = None
        self.arms: list[float] = []
        self.started: list[tuple[str, float]] = []
        self.dropped: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.unparked: list[str] = []
        self.hold = False
        self.held: list[Host[Item]] = []
        self.run = Run()
        self.sched: Scheduler[Item] = Scheduler(
            limits or Limits(),
            host_errors=options.pop("host_errors", 5),
            clock=lambda: self.now,
            arm=self._arm,
            start=self._start,
            drop=self._drop,
            hold=self._hold,
            unparked=lambda item: self.unparked.append(item.name),
            skip=self._skip,
            **options,
        )

    def _arm(self, when: float) -> None:
        self.arms.append(when)
        self.wake_at = when

    def _start(self, item: Item) -> None:
        self.started.append((item.name, self.now))

    def _drop(self, item: Item) -> None:
        self.dropped.append(item.name)
        self.sched.retire(item)

    def _hold(self, item: Item, host: Host[Item]) -> bool:
        if self.hold:
            self.held.append(host)
        return self.hold

    def _skip(self, item: Item, reason: str) -> None:
        self.skipped.append((item.name, reason))
        self.sched.retire(item)

    def add(self, name: str, run: Run | None = None) -> Item:
        """Admit a request named ``host/n`` to host ``host``."""
        k = key(name.split("/")[0])
        self.sched.reads.append(k)
        host = self.sched.hosts.get(k) or self.sched.host(k)
        item = Item(name, host, run or self.run)
        self.sched.add(item)
        return item

    def end(self, item: Item) -> None:
        """An attempt of ``item`` ended: its slots are given back (not retired),
        and its host, when it has more ready, is runnable again (as the
        Fetcher does)."""
        host = item.host
        host.active -= 1
        self.sched.active -= 1
        if host.ready:
            self.sched.make_runnable(host)

    def finish(self, item: Item) -> Item | None:
        """``item`` is done, as a worker finishes it: slots back, retired, and the
        next startable item taken (recorded as started too)."""
        self.end(item)
        self.sched.retire(item)
        return self.take()

    def take(self) -> Item | None:
        mine = self.sched.pump(True)
        if mine is not None:
            self.started.append((mine.name, self.now))
        return mine

    def advance(self, seconds: float) -> None:
        """Move the clock on, delivering the armed wake-up when it is due."""
        self.now += seconds
        while self.wake_at is not None and self.wake_at <= self.now:
            self.wake_at = None
            self.sched.wake()

    def names(self) -> list[str]:
        return [name for name, _ in self.started]


def items_named(harness: Harness, *names: str) -> list[Item]:
    return [harness.add(name) for name in names]


# ------------------------------------------------------------------ slots


def test_a_host_has_at_most_per_host_requests_in_flight() -> None:
    h = Harness(Limits(concurrency=10, per_host=2))
    a = items_named(h, "a/1", "a/2", "a/3", "a/4", "b/1")
    assert h.names() == ["a/1", "a/2", "b/1"]
    assert a[0].host.active == 2
    assert h.sched.active == 3
    assert h.finish(a[0]) is a[2]  # a slot of a's is free: its next one goes
    assert h.finish(a[2]) is a[3]


def test_no_more_than_concurrency_requests_in_flight() -> None:
    h = Harness(Limits(concurrency=3))
    items = items_named(h, "a/1", "b/1", "c/1", "d/1", "e/1")
    assert h.names() == ["a/1", "b/1", "c/1"]
    assert h.sched.active == 3
    assert h.finish(items[1]) is items[3]
    h.end(items[0])
    h.sched.retire(items[0])
    h.sched.pump()  # not taken: handed to ``start``
    assert h.names()[-1] == "e/1"
    assert h.sched.active == 3


def test_hosts_take_turns() -> None:
    """Round-robin: a host with many requests ready does not go before a host
    that has fewer, each host starts one in its turn."""
    h = Harness(Limits(concurrency=1))
    busy = h.add("c/1")  # holds the only slot while the others queue
    items_named(h, "a/1", "a/2", "a/3", "b/1", "b/2", "b/3")
    item = h.finish(busy)
    while item is not None:
        item = h.finish(item)
    assert h.names() == ["c/1", "a/1", "b/1", "a/2", "b/2", "a/3", "b/3"]


# ------------------------------------------------------------------ rates


def test_the_global_rate_spaces_starts() -> None:
    h = Harness(Limits(concurrency=10, rate=4.0, burst=1))
    items_named(h, "a/1", "b/1", "c/1")
    assert h.started == [("a/1", 100.0)]
    assert h.wake_at == 100.25
    h.advance(0.125)
    assert len(h.started) == 1
    h.advance(0.125)
    h.advance(0.25)
    assert h.started == [("a/1", 100.0), ("b/1", 100.25), ("c/1", 100.5)]


def test_the_global_burst_starts_at_once() -> None:
    h = Harness(Limits(concurrency=10, rate=4.0, burst=2))
    items_named(h, "a/1", "b/1", "c/1")
    assert h.names() == ["a/1", "b/1"]
    h.advance(0.25)
    assert h.started[-1] == ("c/1", 100.25)


def test_a_host_rate_holds_only_that_host() -> None:
    h = Harness(Limits(concurrency=10, per_host_rate=4.0, burst=1))
    items_named(h, "a/1", "a/2", "b/1", "a/3")
    assert h.names() == ["a/1", "b/1"]  # b is not held behind a's rate
    assert h.wake_at == 100.25
    h.advance(0.25)
    h.advance(0.25)
    assert h.started == [("a/1", 100.0), ("b/1", 100.0), ("a/2", 100.25), ("a/3", 100.5)]


def test_no_wake_up_is_armed_closer_than_a_millisecond() -> None:
    h = Harness(Limits(concurrency=10, rate=1e9, burst=1))
    items_named(h, "a/1", "b/1")
    assert h.wake_at == pytest.approx(100.0 + MIN_TIMER)


def test_a_later_wake_up_is_not_armed_over_an_earlier_one() -> None:
    h = Harness(Limits(concurrency=10))
    a, b = items_named(h, "a/1", "b/1")
    h.end(a)
    h.sched.retry_later(a, 1.0)
    h.sched.pump()
    h.end(b)
    h.sched.retry_later(b, 3.0)
    h.sched.pump()
    assert h.arms == [101.0]
    h.advance(1.0)  # a's retry starts; b's wake-up is armed then
    assert h.arms == [101.0, 103.0]
    assert h.names() == ["a/1", "b/1", "a/1"]


# ------------------------------------------------------------- cool-downs


def test_a_cool_down_holds_its_host_until_it_ends() -> None:
    h = Harness(Limits(concurrency=10))
    first = h.add("a/1")
    h.sched.cool_down(first.host, 5.0)
    items_named(h, "a/2", "b/1")
    assert h.names() == ["a/1", "b/1"]
    assert h.wake_at == 105.0
    h.advance(4.5)
    assert h.names() == ["a/1", "b/1"]
    h.advance(0.5)
    assert h.started[-1] == ("a/2", 105.0)


def test_a_shorter_cool_down_does_not_cut_a_longer_one() -> None:
    h = Harness()
    host = h.sched.host(key("a"))
    h.sched.cool_down(host, 10.0)
    h.sched.cool_down(host, 1.0)
    assert host.cool_until == 110.0


def test_a_cool_down_outlives_its_host_state() -> None:
    """Once the host is dropped (nothing queued or in flight), a request that
    comes for it later still waits for the cool-down the server asked for."""
    h = Harness()
    item = h.add("a/1")
    h.sched.cool_down(item.host, 30.0)
    h.finish(item)
    assert h.sched.hosts_held() == 0
    h.advance(10.0)
    h.add("a/2")
    assert h.names() == ["a/1"]
    assert h.wake_at == 130.0
    h.advance(20.0)
    assert h.started[-1] == ("a/2", 130.0)


def test_the_memory_forgets_a_cool_down_past_its_capacity() -> None:
    h = Harness(memory=HostMemory(capacity=1))
    for name in ("a", "b"):
        item = h.add(f"{name}/1")
        h.sched.cool_down(item.host, 30.0)
        h.finish(item)
    items_named(h, "a/2", "b/2")
    assert h.names() == ["a/1", "b/1", "a/2"]  # a's was forgotten, b's kept


# ------------------------------------------------------ advertised quotas


def test_a_host_with_no_quota_left_waits_for_the_reset_and_others_flow() -> None:
    h = Harness(Limits(concurrency=10, per_host=10))
    first = h.add("a/1")
    h.end(first)
    h.sched.server_quota(first.host, remaining=0, reset=2.0, limit=None)
    items_named(h, "a/2", "b/1")
    assert h.names() == ["a/1", "b/1"]
    assert first.host.active == 0  # waiting holds no slot
    h.advance(1.9)
    assert h.names() == ["a/1", "b/1"]
    h.advance(0.1)
    assert h.started[-1] == ("a/2", 102.0)


def test_the_budget_counts_the_requests_in_flight_and_refills_at_the_reset() -> None:
    """3 left, 1 other in flight: 2 more start, then none until the reset,
    when the quota (4, less the 3 in flight) lets 1 more start; the next ones
    wait a whole window (the server's last delay) more."""
    h = Harness(Limits(concurrency=10, per_host=10))
    first, *in_flight = items_named(h, "a/1", "a/2")
    h.end(first)
    h.sched.server_quota(first.host, remaining=3, reset=1.0, limit=4)
    in_flight += items_named(h, "a/3", "a/4", "a/5", "a/6", "a/7")[:2]
    assert h.names() == ["a/1", "a/2", "a/3", "a/4"]
    h.advance(1.0)
    assert h.names()[4:] == ["a/5"]
    for item in in_flight:
        h.end(item)
    h.advance(0.999)
    assert h.names()[5:] == []
    h.advance(0.001)
    assert h.names()[5:] == ["a/6", "a/7"]


def test_without_a_limit_the_quota_stops_holding_the_host_at_the_reset() -> None:
    h = Harness(Limits(concurrency=10, per_host=10))
    first = h.add("a/1")
    h.end(first)
    h.sched.server_quota(first.host, remaining=0, reset=1.0, limit=None)
    items_named(h, "a/2", "a/3", "a/4")
    h.advance(1.0)
    assert h.names() == ["a/1", "a/2", "a/3", "a/4"]
    assert first.host.hint is None


def test_a_quota_with_none_left_outlives_its_idle_host_until_the_reset() -> None:
    h = Harness()
    item = h.add("a/1")
    h.end(item)
    h.sched.server_quota(item.host, remaining=0, reset=30.0, limit=5)
    h.sched.retire(item)
    assert h.sched.hosts_held() == 0  # kept in the bounded memory, not held
    second = h.add("a/2")
    assert second.host.hint is not None
    assert h.names() == ["a/1"]
    h.advance(30.0)
    assert h.started[-1] == ("a/2", 130.0)
    h.finish(second)
    assert h.sched.hosts_held() == 0
    h.advance(29.9)  # a new window began at 130, as long as the last
    assert h.add("a/3").host.hint is not None


def test_a_dropped_hosts_row_shows_its_kept_quota_and_cool_down() -> None:
    """Its state dropped, its quota kept: the host's row still says what holds
    it (the quota's pace, the wait for its reset)."""
    h = Harness()
    item = h.add("a/1")
    h.end(item)
    h.sched.server_quota(item.host, remaining=0, reset=30.0, limit=5)
    h.sched.retire(item)
    assert h.sched.hosts_held() == 0
    [row] = h.sched.snapshot(1, 0.0)
    assert (row["rate_limit"], row["rate_source"]) == (round(5 / 30.0, 3), "server")
    assert row["cool_down_s"] == 30.0


def test_an_idle_host_keeps_its_quota_until_the_window_ends() -> None:
    """Its state dropped, the host's next request would start unpaced, over
    what is left of the window, and an ETA would not see its rate."""
    h = Harness(Limits(concurrency=10, per_host=10))
    item = h.add("a/1")
    h.end(item)
    h.sched.server_quota(item.host, remaining=1, reset=2.0, limit=2)
    h.sched.retire(item)
    h.advance(1.0)
    assert h.sched.hosts_held() == 0  # kept in the bounded memory, not held
    items_named(h, "a/2", "a/3", "a/4")
    assert h.names() == ["a/1", "a/2"]  # one left in this window
    assert h.sched.least_time_left() == 1.0  # a/3 and a/4 at the reset
    h.now += 1.0  # the reset, its wake-up not yet delivered
    assert h.sched.least_time_left() == 2.0  # a/2 in flight counts in the new window
    h.now -= 1.0
    h.advance(1.0)
    assert h.names() == ["a/1", "a/2", "a/3"]


# ------------------------------------------------------------- time left


def held(h: Harness, name: str, rate: float) -> Host[Item]:
    """Host ``name``, held to ``rate`` (as its robots.txt would) before its first request."""
    host = h.sched.host(key(name))
    h.sched.limit_rate(host, rate)
    return host


def test_the_time_left_is_until_the_last_request_may_start() -> None:
    """a at 1 per second: a/1 starts at once, a/2 at 101, a/3 at 102; b, not
    held, is not counted. A cool-down of 3 s puts them off. With a quota
    stricter than that (2 per 4 s, none left, a/1 in flight): a/2 at the
    reset, a/3 a window later."""
    h = Harness(Limits(concurrency=10, per_host=10))
    a = held(h, "a", 1.0)
    items_named(h, "a/1", "b/1", "a/2", "a/3")
    assert h.sched.least_time_left() == 2.0
    h.advance(0.5)
    assert h.sched.least_time_left() == 1.5
    h.sched.cool_down(a, 3.0)  # a/2 at 103.5, a/3 at 104.5
    assert h.sched.least_time_left() == 4.0
    h.sched.server_quota(a, remaining=0, reset=4.0, limit=2)
    assert h.sched.least_time_left() == 8.0


def test_a_cool_down_counts_only_when_a_request_waits_for_it() -> None:
    """a/1 in flight, nothing else of a's to start: a's cool-down (a 429 with
    Retry-After answering another request, or a spent quota) holds nothing
    back, and the time left is 0, not the cool-down."""
    h = Harness(Limits(concurrency=10, per_host=10))
    a = held(h, "a", 1.0)
    items_named(h, "a/1")
    h.sched.cool_down(a, 100.0)
    assert h.sched.least_time_left() == 0.0
    assert h.sched.least_time_left(remaining=1) == 0.0
    h.sched.server_quota(a, remaining=0, reset=50.0, limit=2)
    assert h.sched.least_time_left() == 0.0
    h.add("a/2")  # this one waits
    assert h.sched.least_time_left() == 100.0


def test_the_time_left_counts_the_requests_not_yet_read_at_each_hosts_share() -> None:
    """a at 1 per second has 2 of the 4 requests read, a/1 in flight: a/2
    starts in 1 s. Of 6 more not yet read, 3 are expected at a: 4 s. With a
    quota of 2 per 4 s, none left: 1 at the reset, in 4 s (a/1 is in flight),
    then 2 per window: 12 s."""
    h = Harness(Limits(concurrency=10, per_host=10))
    a = held(h, "a", 1.0)
    items_named(h, "a/1", "b/1", "a/2", "b/2")
    assert h.sched.least_time_left() == 1.0
    assert h.sched.least_time_left(remaining=10) == 4.0
    assert h.sched.least_time_left(remaining=4) == 1.0  # all read
    h.advance(0.5)
    h.sched.server_quota(a, remaining=0, reset=4.0, limit=2)
    assert h.sched.least_time_left(remaining=10) == 12.0


def test_the_share_of_the_requests_not_yet_read_is_that_of_the_last_read() -> None:
    """a's requests came first, then RECENT_READS of b's: none of those not yet
    read are expected at a."""
    h = Harness(Limits(concurrency=10, per_host=10))
    held(h, "a", 1.0)
    items_named(h, "a/1", "a/2", *(f"b/{n}" for n in range(RECENT_READS)))
    remaining = RECENT_READS + 1000
    assert h.sched.least_time_left(remaining) == 1.0
    h.add("a/3")
    share = 1 / RECENT_READS
    assert h.sched.least_time_left(remaining) == pytest.approx(2 + 997 * share)


def test_a_block_that_reading_has_left_behind_is_not_expected_to_go_on() -> None:
    """a's 100 requests came first, then 300 of b's: a has a quarter of the
    requests read but none of the last 256, so none of those not yet read
    are expected at a."""
    h = Harness(Limits(concurrency=10, per_host=10))
    held(h, "a", 1.0)
    items_named(h, *(f"a/{n}" for n in range(100)), *(f"b/{n}" for n in range(300)))
    assert h.sched.least_time_left(remaining=10_000) == 99.0
    h.add("a/100")  # a again: 1 in 256
    assert h.sched.least_time_left(remaining=10_000) > 101.0


# ------------------------------------------------------------- dead hosts


def test_a_host_is_down_after_host_errors_failures_in_a_row() -> None:
    h = Harness(Limits(concurrency=10), host_errors=3)
    host = h.sched.host(key("a"))
    assert not h.sched.host_failed(host, "cannot connect to a:80: refused")
    assert not h.sched.host_failed(host, "cannot connect to a:80: refused")
    assert h.sched.host_failed(host, "cannot connect to a:80: refused")
    assert not h.sched.host_failed(host, "cannot connect to a:80: refused")  # already down
    items_named(h, "a/1", "b/1")
    assert h.names() == ["b/1"]
    assert [name for name, _ in h.skipped] == ["a/1"]
    reason = h.skipped[0][1]
    assert "consecutive connection failures to a:80" in reason
    assert reason.endswith("(the last: refused)")


def test_a_host_reached_starts_its_count_again() -> None:
    h = Harness(host_errors=2)
    host = h.sched.host(key("a"))
    h.sched.host_failed(host, "x")
    h.sched.host_reached(host)
    assert not h.sched.host_failed(host, "x")
    assert h.sched.host_failed(host, "x")


def test_a_down_mark_expires() -> None:
    h = Harness(host_errors=1, down_for=60.0)
    host = h.sched.host(key("a"))
    h.sched.host_failed(host, "x")
    h.advance(59.0)
    h.add("a/1")
    assert h.names() == []
    assert len(h.skipped) == 1
    h.advance(1.0)
    again = h.add("a/2")
    assert h.names() == ["a/2"]
    assert again.host.failures == 0  # counted anew


def test_a_down_mark_outlives_its_host_state_until_it_expires() -> None:
    h = Harness(host_errors=2, down_for=60.0)
    item = h.add("a/1")
    h.sched.host_failed(item.host, "x")
    h.sched.host_failed(item.host, "x")
    h.end(item)
    h.sched.retire(item)
    assert h.sched.hosts_held() == 0
    h.add("a/2")
    assert [name for name, _ in h.skipped] == ["a/2"]
    h.advance(60.0)
    again = h.add("a/3")
    assert h.names() == ["a/1", "a/3"]
    assert again.host.failures == 0  # past its mark, a host gets host_errors tries again


def test_a_failure_count_outlives_its_host_state() -> None:
    h = Harness(host_errors=2, down_for=60.0)
    item = h.add("a/1")
    h.sched.host_failed(item.host, "x")
    h.finish(item)
    assert h.sched.hosts_held() == 0
    second = h.add("a/2")
    assert second.host.failures == 1
    assert h.sched.host_failed(second.host, "x")  # the second in a row: down


def test_host_errors_zero_never_marks_down() -> None:
    h = Harness(host_errors=0)
    host = h.sched.host(key("a"))
    for _ in range(20):
        assert not h.sched.host_failed(host, "x")
    h.add("a/1")
    assert h.names() == ["a/1"]


# --------------------------------------------------------------- eviction


def test_an_idle_host_is_dropped_at_once_without_a_rate() -> None:
    h = Harness()
    item = h.add("a/1")
    assert h.sched.hosts_held() == 1
    h.finish(item)
    assert h.sched.hosts_held() == 0


def test_an_idle_host_is_kept_until_its_bucket_is_full() -> None:
    """Dropping it sooner would forget the tokens it spent: a request that came
    back for it would start at once, over its rate."""
    h = Harness(Limits(per_host_rate=1.0, burst=1))
    item = h.add("a/1")
    h.finish(item)
    assert h.sched.hosts_held() == 1
    h.advance(0.5)
    second = h.add("a/2")  # the same host state: it waits for its token
    assert second.host is item.host
    assert h.names() == ["a/1"]
    h.advance(0.5)
    assert h.names() == ["a/1", "a/2"]
    h.finish(second)
    h.advance(0.75)
    assert h.sched.hosts_held() == 1
    h.advance(0.25)
    assert h.sched.hosts_held() == 0


# ---------------------------------------------------------------- parking


def test_requests_that_must_wait_are_parked_within_the_budget() -> None:
    h = Harness(Limits(concurrency=10, per_host=1, parked=2))
    items = items_named(h, "a/1", "a/2", "a/3", "a/4")
    assert [item.parked for item in items] == [False, True, True, False]
    assert h.sched.parked == 2
    assert h.finish(items[0]) is items[1]
    assert h.unparked == ["a/2"]
    assert h.sched.parked == 1
    assert not items[1].parked


def test_a_request_that_can_start_is_not_parked() -> None:
    h = Harness(Limits(concurrency=10, per_host=2))
    items = items_named(h, "a/1", "a/2", "b/1")
    assert not any(item.parked for item in items)
    assert h.sched.parked == 0


def test_an_ordered_run_never_parks() -> None:
    h = Harness(Limits(concurrency=10, per_host=1))
    ordered = Run(ordered=True)
    h.add("a/1", ordered)
    assert not h.add("a/2", ordered).parked
    assert h.add("a/3").parked


def test_an_unparked_request_gives_its_place_in_the_budget_back() -> None:
    h = Harness(Limits(concurrency=10, per_host=1, parked=1))
    _, waiting = items_named(h, "a/1", "a/2")
    assert h.sched.parked == 1
    h.sched.unpark(waiting)  # as when its run closes
    assert h.sched.parked == 0
    assert not waiting.parked
    assert h.add("a/3").parked


def test_a_retry_is_parked_and_comes_back_first_at_its_host() -> None:
    h = Harness(Limits(concurrency=10, per_host=1))
    first, second = items_named(h, "a/1", "a/2")
    h.end(first)
    assert h.sched.retry_later(first, 2.0)
    assert h.sched.waiting == 1
    assert h.take() is second
    h.finish(second)
    h.advance(2.0)
    assert h.sched.waiting == 0
    assert h.names() == ["a/1", "a/2", "a/1"]
    assert h.unparked == ["a/2", "a/1"]


def test_a_host_held_back_waits_until_resumed() -> None:
    h = Harness(Limits(concurrency=10, per_host=1))
    first, second = items_named(h, "a/1", "a/2")
    assert second.parked
    h.hold = True
    assert h.finish(first) is None
    assert h.held == [first.host]
    h.sched.pump()
    assert h.names() == ["a/1"]  # held: not in the round-robin queue
    h.hold = False
    h.sched.resume(h.held)
    h.sched.pump()
    assert h.names() == ["a/1", "a/2"]


# ------------------------------------------------------------- closed runs


def test_a_closed_runs_requests_are_dropped_not_started() -> None:
    h = Harness(Limits(concurrency=1))
    busy = h.add("c/1")
    closing = Run()
    h.add("b/1", closing)
    items_named(h, "a/1")
    closing.closed = True
    assert h.finish(busy) is not None
    assert h.names() == ["c/1", "a/1"]
    assert h.dropped == ["b/1"]


def test_a_retry_of_a_closed_run_is_dropped_when_due() -> None:
    h = Harness()
    run = Run()
    item = h.add("a/1", run)
    h.end(item)
    h.sched.retry_later(item, 1.0)
    h.take()  # arms the wake-up
    run.closed = True
    h.advance(1.0)
    assert h.dropped == ["a/1"]
    assert h.sched.hosts_held() == 0


def test_a_closed_scheduler_starts_nothing() -> None:
    h = Harness(Limits(concurrency=10, rate=4.0))
    items_named(h, "a/1", "b/1")
    h.sched.close()
    h.advance(1.0)
    assert h.names() == ["a/1"]


def test_a_redirect_moves_to_the_front_of_its_new_host() -> None:
    h = Harness(Limits(concurrency=10, per_host=1))
    busy, queued = items_named(h, "b/1", "b/2")
    hop = h.add("a/1")
    h.end(hop)
    h.sched.move(hop, key("b"))
    assert hop.host is busy.host
    assert h.sched.hosts_held() == 1  # a, idle, is dropped
    assert h.finish(busy) is hop
    assert h.finish(hop) is queued


def test_a_held_hosts_down_mark_expires() -> None:
    h = Harness(host_errors=1, down_for=60.0)
    busy = h.add("a/1")  # in flight: the host's state is held throughout
    h.sched.host_failed(busy.host, "x")
    h.add("a/2")
    h.advance(60.0)
    again = h.add("a/3")
    assert [name for name, _ in h.skipped] == ["a/2"]
    assert h.names() == ["a/1", "a/3"]
    assert again.host is busy.host
    assert busy.host.down is None


def test_failure_counts_do_not_push_cool_downs_out_of_the_memory() -> None:
    h = Harness(memory=HostMemory(capacity=1), counts=HostMemory(capacity=1))
    cooled = h.add("a/1")
    h.sched.cool_down(cooled.host, 30.0)
    h.finish(cooled)
    failed = h.add("b/1")
    h.sched.host_failed(failed.host, "x")
    h.finish(failed)
    h.add("a/2")
    assert h.names() == ["a/1", "b/1"]  # a still cools down


def test_a_host_busy_again_is_kept_when_its_bucket_is_full() -> None:
    h = Harness(Limits(per_host_rate=1.0, burst=1))
    first = h.add("a/1")
    h.finish(first)
    h.advance(1.0)  # its bucket is full, its expiry due
    h.sched.cool_down(first.host, 5.0)
    waiting = h.add("a/2")
    assert h.sched.hosts_held() == 1
    h.advance(5.0)
    assert h.names() == ["a/1", "a/2"]
    assert waiting.host is first.host


def test_a_retry_goes_before_its_hosts_newer_requests() -> None:
    h = Harness(Limits(concurrency=10))
    first = h.add("a/1")
    h.end(first)
    h.sched.cool_down(first.host, 1.0)  # a 503 with Retry-After: 1
    h.sched.retry_later(first, 1.0)
    h.take()
    h.add("a/2")
    h.advance(1.0)
    assert h.names() == ["a/1", "a/1", "a/2"]


def test_a_parked_request_dropped_with_its_run_leaves_the_budget() -> None:
    h = Harness(Limits(concurrency=10, per_host=1))
    closing = Run()
    busy = h.add("a/1")
    waiting = h.add("a/2", closing)
    assert h.sched.parked == 1
    closing.closed = True
    assert h.finish(busy) is None
    assert h.dropped == ["a/2"]
    assert h.sched.parked == 0
    assert not waiting.parked
