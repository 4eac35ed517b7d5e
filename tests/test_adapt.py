"""The adaptive per-host rate and concurrency (AIMD): the arithmetic of
:class:`Adaptive` on times given by hand, then the scheduler applying it
(rate gate, slots, source ``adapted``, memory), on the hand-driven clock of
tests/test_scheduling.py. No network, no event loop, no sleeps."""

from __future__ import annotations

import math

import pytest

from fanout.engine.adapt import ALPHA, BETA, GAP, KEEP, LOSS, MIN_RATE, MIN_STEP, Adaptive
from fanout.engine.scheduling import Host, Scheduler
from fanout.policy import Limits
from tests.test_scheduling import Harness, Item, key


def cut(
    adaptive: Adaptive, *, now: float = 10.0, observed: float = 100.0, in_flight: int = 4
) -> bool:
    return adaptive.congested(now=now, started=now, observed=observed, in_flight=in_flight)


def test_a_signal_cuts_the_rate_from_the_observed_one_and_the_slots_from_in_flight() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    assert cut(adaptive, observed=100.0, in_flight=6)
    assert adaptive.rate == pytest.approx(BETA * 100.0)
    assert adaptive.slots == math.floor(BETA * 6)


def test_the_next_cut_starts_from_the_adapted_rate_when_it_is_lower() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    cut(adaptive, now=10.0, observed=100.0)
    cut(adaptive, now=11.0, observed=500.0, in_flight=8)  # the window still counts the burst
    assert adaptive.rate == pytest.approx(BETA * BETA * 100.0)
    assert adaptive.slots == math.floor(BETA * math.floor(BETA * 4))  # not from 8


def test_a_signal_from_an_attempt_in_flight_at_the_cut_does_not_cut_again() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    assert cut(adaptive, now=10.0)
    rate = adaptive.rate
    assert not adaptive.congested(now=10.2, started=9.99, observed=100.0, in_flight=3)
    assert adaptive.rate == rate
    assert adaptive.congested(now=10.3, started=10.01, observed=100.0, in_flight=3)
    assert adaptive.rate < rate


def test_slots_and_rate_have_a_floor() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    cut(adaptive, observed=0.01, in_flight=1)
    assert adaptive.slots == 1
    assert adaptive.rate == MIN_RATE
    assert adaptive.step == MIN_STEP


def test_successes_raise_the_rate_by_a_step_per_second_and_win_a_cut_back() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    cut(adaptive, now=10.0, observed=100.0)
    assert adaptive.step == pytest.approx(ALPHA * 100.0)
    for i in range(1, 31):  # 3 s of successes, every 0.1 s
        adaptive.succeeded(10.0 + i / 10)
    assert adaptive.rate == pytest.approx(100.0)  # (1 - BETA) / ALPHA = 3 s


def test_an_idle_gap_earns_at_most_gap_seconds_of_increase() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    cut(adaptive, now=10.0, observed=100.0)
    adaptive.succeeded(70.0)  # a minute later
    assert adaptive.rate == pytest.approx(70.0 + ALPHA * 100.0 * GAP)


def test_the_rate_never_rises_above_its_ceiling() -> None:
    adaptive = Adaptive(max_rate=80.0, max_slots=8)
    cut(adaptive, now=10.0, observed=100.0)  # from the observed 100: above the ceiling
    assert adaptive.rate == pytest.approx(BETA * 80.0)
    for i in range(1, 200):
        adaptive.succeeded(10.0 + i / 10)
    assert adaptive.rate == 80.0


def test_a_round_of_successes_adds_a_slot_up_to_the_ceiling() -> None:
    adaptive = Adaptive(max_rate=math.inf, max_slots=3)
    cut(adaptive, now=10.0, in_flight=1)
    assert adaptive.slots == 1
    assert adaptive.succeeded(10.1)  # a round of 1
    assert adaptive.slots == 2
    assert not adaptive.succeeded(10.2)
    assert adaptive.succeeded(10.3)  # a round of 2
    assert adaptive.slots == 3
    for i in range(10):
        adaptive.succeeded(10.4 + i / 10)
    assert adaptive.slots == 3


def test_released_once_neither_limit_holds_the_host_back() -> None:
    free = Adaptive(max_rate=math.inf, max_slots=1)
    cut(free, now=10.0, observed=100.0, in_flight=1)
    assert not free.released(observed=50.0)  # 70 req/s is not twice 50
    assert free.released(observed=30.0)
    capped = Adaptive(max_rate=80.0, max_slots=1)
    cut(capped, now=10.0, observed=100.0, in_flight=1)
    assert not capped.released(observed=1.0)
    capped.rate = 80.0
    assert capped.released(observed=80.0)
    slots = Adaptive(max_rate=math.inf, max_slots=4)
    cut(slots, now=10.0, observed=100.0, in_flight=1)
    assert not slots.released(observed=1.0)  # 1 slot of 4


# -------------------------------------------------------------- the scheduler


def ended(host: Host[Item], now: float, count: int, every: float) -> None:
    """``count`` attempts of ``host`` ended, ``every`` seconds apart, the last at
    ``now`` (as the Fetcher counts them)."""
    counters = host.counters
    for i in range(count):
        counters.requests += 1
        counters.ends.append(now - (count - 1 - i) * every)
    counters.first = min(counters.first, now - count * every)


def signalled(h: Harness, host: Host[Item], now: float, started: float) -> int:
    """Congestion signals from ``host`` until one cuts (at least :data:`LOSS` of
    its answers must be signals): how many it took."""
    for count in range(1, 100):
        if h.sched.congested(host, now, started):
            return count
    raise AssertionError("no cut")


def test_a_congested_host_is_held_to_its_adapted_rate_and_slots() -> None:
    h = Harness(Limits(concurrency=16, per_host=8))
    items = [h.add(f"a/{i}") for i in range(20)]
    assert len(h.started) == 8
    host = items[0].host
    ended(host, 1.0, 100, 0.01)  # 100 req/s observed
    h.end(items[0])
    assert signalled(h, host, 1.0, 0.99) == LOSS * 100  # 5 % of its 100 answers
    assert host.bucket is not None
    assert host.bucket.rate == pytest.approx(BETA * 100.0)
    assert host.slots == math.floor(BETA * 8)
    [row] = h.sched.snapshot(1, 1.0)
    assert row["rate_source"] == "adapted"
    assert row["rate_limit"] == pytest.approx(BETA * 100.0)
    assert row["slots"] == host.slots
    for item in items[1:8]:
        h.end(item)
    h.sched.pump()
    assert len(h.started) == 8 + 1  # one at once, then one per 1/70 s
    h.advance(1 / 70 + 0.001)
    assert len(h.started) == 8 + 2


def test_an_adapted_host_does_not_hold_another_back() -> None:
    h = Harness(Limits(concurrency=16, per_host=8))
    shedding = h.add("a/0")
    host = shedding.host
    ended(host, 1.0, 10, 0.1)  # 10 req/s
    h.end(shedding)
    h.sched.congested(host, 1.0, 0.99)
    for i in range(1, 6):
        h.add(f"a/{i}")
    for i in range(6):
        h.add(f"b/{i}")
    assert [name for name in h.names() if name.startswith("b/")] == [f"b/{i}" for i in range(6)]
    assert len([name for name in h.names() if name.startswith("a/")]) == 2


def test_the_users_rate_comes_back_when_the_adapted_one_is_released() -> None:
    h = Harness(Limits(concurrency=4, per_host=1, per_host_rate=50.0))
    item = h.add("a/0")
    host = item.host
    ended(host, 1.0, 50, 0.02)
    h.end(item)
    signalled(h, host, 1.0, 0.99)
    assert host.rate_from == "adapted"
    assert host.bucket is not None
    assert host.bucket.rate == pytest.approx(BETA * 50.0)
    now = 1.0
    while host.adaptive is not None:
        now += 0.05
        h.sched.relieved(host, now)
        assert host.bucket.rate <= 50.0
    assert now < 1.0 + 4.0  # 15 req/s back at 5 req/s per second
    assert host.rate_from == "user"
    assert host.bucket.rate == pytest.approx(50.0)
    assert host.slots == 1


def test_a_host_without_a_rate_is_released_once_well_above_what_it_does() -> None:
    h = Harness(Limits(concurrency=4, per_host=2))
    item = h.add("a/0")
    host = item.host
    ended(host, 1.0, 40, 0.025)  # 40 req/s
    h.end(item)
    h.sched.congested(host, 1.0, 0.99)
    now = 1.0
    while host.adaptive is not None and now < 100.0:
        now += 0.1  # 10 req/s observed from now on
        ended(host, now, 1, 0.1)
        h.sched.relieved(host, now)
    assert host.adaptive is None
    assert host.bucket is None
    assert host.rate_from is None
    assert host.slots == 2


def test_the_adapted_state_outlives_the_hosts_state_while_recent() -> None:
    h = Harness(Limits(concurrency=4, per_host=4))
    item = h.add("a/0")
    host = item.host
    ended(host, 1.0, 20, 0.05)  # 20 req/s
    h.end(item)
    h.sched.congested(host, 1.0, 0.99)
    h.sched.retire(item)
    h.advance(1.0)  # its bucket is full again: the state can go
    assert h.sched.hosts_held() == 0
    [row] = h.sched.snapshot(1, 2.0)
    assert row["rate_source"] == "adapted"
    assert row["rate_limit"] == pytest.approx(BETA * 20.0)
    next_one = h.add("a/1")  # its host made anew, from the memory
    again = next_one.host
    assert again is not host
    assert again.rate_from == "adapted"
    assert again.bucket is not None
    assert again.bucket.rate == pytest.approx(BETA * 20.0)
    assert again.slots == 1
    h.end(next_one)
    h.sched.retire(next_one)
    h.advance(1.0)
    assert h.sched.hosts_held() == 0  # dropped again, remembered again
    h.advance(KEEP + 1.0)
    assert h.sched.host(key("a")).adaptive is None  # forgotten KEEP seconds after


def test_robots_pace_lowers_an_adapted_hosts_ceiling() -> None:
    h = Harness(Limits(concurrency=4, per_host=4))
    item = h.add("a/0")
    host = item.host
    ended(host, 1.0, 100, 0.01)
    h.end(item)
    h.sched.congested(host, 1.0, 0.99)
    Scheduler.limit_rate(host, 10.0)
    assert host.adaptive is not None
    assert host.adaptive.max_rate == 10.0
    assert host.bucket is not None
    assert host.bucket.rate == 10.0
    assert host.rate_from == "robots"
    now = 1.0
    while host.adaptive is not None and now < 100.0:
        now += 0.1
        h.sched.relieved(host, now)  # its slots come back
    assert host.adaptive is None
    assert (host.rate_from, host.bucket.rate) == ("robots", 10.0)


def test_a_high_adapted_rate_holds_ten_ms_of_tokens() -> None:
    """At 700 req/s, 7 tokens: a wake-up a timer tick late loses none. The
    user's bucket, burst and all, comes back on release."""
    h = Harness(Limits(concurrency=64, per_host=1, per_host_rate=2000.0, burst=3))
    item = h.add("a/0")
    host = item.host
    ended(host, 1.0, 128, 0.001)  # 1,000 req/s
    host.counters.first = 0.0  # older than the rate's window
    h.end(item)
    signalled(h, host, 1.0, 0.99)
    assert host.bucket is not None
    assert host.bucket.rate == pytest.approx(700.0, rel=0.02)
    assert host.bucket.burst == 7
    host.adaptive.rate = 2000.0  # type: ignore[union-attr]
    h.sched.relieved(host, 1.1)  # a round of one: its slot back, its rate at the ceiling
    assert host.adaptive is None
    assert (host.rate_from, host.bucket.rate, host.bucket.burst) == ("user", 2000.0, 3)


@pytest.mark.parametrize("user_rate", [None, 1000.0])
def test_a_robots_pace_holds_a_host_made_anew_at_its_adapted_ceiling(
    user_rate: float | None,
) -> None:
    """Adapted below its robots.txt pace, then back at it while its slots are
    not yet: the host's state dropped and made anew (with no bucket, or the
    user's looser one) is still held to the pace, and released to it."""
    h = Harness(Limits(concurrency=8, per_host=8, per_host_rate=user_rate))
    item = h.add("a/0")
    host = item.host
    Scheduler.limit_rate(host, 2.0)  # its Crawl-delay, as the Fetcher sets it
    ended(host, 1.0, 2, 0.5)
    h.end(item)
    h.sched.congested(host, 1.0, 0.99)
    now = 1.0
    while host.adaptive is not None and host.adaptive.rate < 2.0:
        now += 0.5
        h.sched.relieved(host, now)
    assert host.adaptive is not None
    assert host.slots < 8  # its rate back, its slots not yet
    h.sched.retire(item)
    h.advance(now + 1.0 - h.now)  # its bucket full again: the state can go
    assert h.sched.hosts_held() == 0
    items = [h.add(f"a/{i}") for i in range(1, 4)]
    again = items[0].host
    Scheduler.limit_rate(again, 2.0)  # each request admitted sets it again
    assert (again.rate_from, again.bucket and again.bucket.rate) == ("robots", 2.0)
    assert h.sched.snapshot(1, now)[0]["rate_limit"] == 2.0
    while again.adaptive is not None and now < 100.0:
        now += 0.5
        h.sched.relieved(again, now)  # no assertion fails on its release
    assert (again.rate_from, again.bucket and again.bucket.rate) == ("robots", 2.0)


def test_a_dropped_adapted_hosts_row_shows_its_adapted_slots() -> None:
    """host_stats of a host whose state was dropped, its adapted limits kept:
    the slots it will be given back, as its rate is (not ``per_host``)."""
    h = Harness(Limits(concurrency=16, per_host=8))
    items = [h.add(f"a/{i}") for i in range(8)]
    host = items[0].host
    ended(host, 1.0, 20, 0.05)
    h.sched.congested(host, 1.0, 0.99)  # 8 in flight: 5 slots
    assert host.slots == 5
    for item in items:
        h.end(item)
    for item in items:
        h.sched.retire(item)
    h.advance(1.0)
    assert h.sched.hosts_held() == 0
    [row] = h.sched.snapshot(1, 2.0)
    assert row["rate_source"] == "adapted"
    assert row["slots"] == 5
    assert h.add("a/8").host.slots == 5


def test_a_collapse_without_answers_is_won_back_at_the_scale_it_came_from() -> None:
    """A stall: timeouts cut round after round with no answer between them,
    from 1,000 req/s to the floor. Once it answers again, the rate is back at
    what the first cut left within seconds of answers, then rises by that
    cut's step (at 0.5 req/s per second, 700 req/s took 23 minutes)."""
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    now = 10.0
    cut(adaptive, now=now, observed=1000.0)
    while adaptive.rate > MIN_RATE:
        now += 0.3
        cut(adaptive, now=now, observed=3.0, in_flight=1)
    assert adaptive.step == pytest.approx(ALPHA * 1000.0)
    start = now
    while adaptive.rate < BETA * 1000.0 and now < start + 60.0:
        now += 1.0 / adaptive.rate  # answers as fast as the rate lets them go
        adaptive.succeeded(now)
    assert adaptive.rate == pytest.approx(BETA * 1000.0)
    assert now - start < 15.0  # 10 s of it the wait at the floor


def test_a_cut_after_answers_is_reckoned_from_its_own_rate() -> None:
    """The server answered at the cut rate, then refused: that is its limit
    now, and the next increase is reckoned from it (no regaining the old one)."""
    adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    cut(adaptive, now=10.0, observed=1000.0)
    adaptive.succeeded(10.1)
    cut(adaptive, now=10.2, observed=50.0)
    assert adaptive.rate == pytest.approx(BETA * 50.0)
    assert adaptive.step == pytest.approx(ALPHA * 50.0)
    adaptive.succeeded(10.3)
    assert adaptive.rate == pytest.approx(BETA * 50.0 + ALPHA * 50.0 * 0.1)


def test_random_errors_of_a_healthy_host_cut_nothing() -> None:
    """One signal in 100 answers (a server's random 503s) is no congestion: no
    cut until LOSS of the answers since the last cut are signals (each cut on
    its own held the demo's host, 1 % of 503s, to 19 req/s)."""
    h = Harness(Limits(concurrency=16, per_host=8))
    item = h.add("a/0")
    host = item.host
    h.end(item)
    for round_ in range(10):
        ended(host, 1.0 + round_, 99, 0.01)
        assert not h.sched.congested(host, 1.0 + round_, 0.5 + round_)
    assert host.slots == 8
    assert host.adaptive is not None
    assert host.adaptive.rate == math.inf
