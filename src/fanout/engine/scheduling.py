"""The Fetcher's scheduling: which queued request starts next, and when.

:class:`Scheduler` holds the state of every host (its ready queue, slots in
use, rate bucket, cool-down, connection failures, down mark), the requests
waiting for a retry, the round-robin queue of hosts that may start one, the
global rate bucket and the parking budget. It knows nothing of HTTP, sessions,
tasks or results: it reads the time from an injected ``clock`` and asks for a
wake-up through an injected ``arm(when)``; what it decides it hands back
through the other callables it was given (start this request, drop that one,
fail those of a host that is down). So it runs, and is tested, without an
event loop: ``tests/test_scheduling.py`` drives it with a clock it advances.

There is no scheduler task: :meth:`Scheduler.pump` runs whenever something
changes (a request is added, an attempt ends, the armed wake-up comes) and
starts every request whose host slot, global slot, rate tokens and not-before
time all allow it. A request waiting for a retry, a host's cool-down or a rate
token sits in a heap or a queue and holds no slot. See ``docs/many-hosts.md``
for host eviction, the memory that outlives it, dead hosts and parking.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, Protocol, TypeVar

from fanout.engine.adapt import BURST_SPAN, DRY_ROUNDS, KEEP, WINDOW, Adaptive
from fanout.engine.hoststate import DOWN_FOR, HostMemory, Remembered, shown_host
from fanout.engine.hoststats import HostCounters, HostSnapshot, HostTable, quantile
from fanout.engine.ratelimit import TokenBucket
from fanout.policy import Limits
from fanout.safetext import shown
from fanout.urls import HostKey

__all__ = ["MIN_TIMER", "Host", "Job", "Scheduler"]

# The shortest wake-up the scheduler arms: on uvloop, a timer of a few
# microseconds fires at once and the dispatcher spins until the moment comes.
MIN_TIMER: Final = 0.001

# The requests not yet read are assumed, for an ETA, to come from each host in
# the smaller of its shares of the last RECENT_READS and the last
# RECENT_READS // 4 requests read: recent rather than all, and the smaller, so
# that a host whose requests came in a block that reading has left behind is
# not expected to have more; the longer window keeps the share of a host spread
# through the input from jumping with the few of its requests in the shorter.
RECENT_READS: Final = 1024


class _RunLike(Protocol):
    @property
    def closed(self) -> bool: ...

    @property
    def ordered(self) -> bool: ...


class Job(Protocol):
    """What the scheduler reads and sets of a request it schedules: its host,
    whether it is parked, and its run (closed: drop it; ordered: never park)."""

    host: Host[Any]
    parked: bool

    @property
    def run(self) -> _RunLike: ...


T = TypeVar("T", bound=Job)


class _Quota:
    """A host's quota as its server advertised it: ``budget`` requests may
    still start before ``reset`` (on the scheduler's clock); then the budget
    is ``limit`` again, until ``span`` seconds later (the last delay the
    server gave), or, the limit unknown, the quota stops holding the host."""

    __slots__ = ("budget", "limit", "reset", "span")

    def __init__(self, budget: int, reset: float, span: float, limit: int | None) -> None:
        self.budget = budget
        self.reset = reset
        self.span = span
        self.limit = limit


class Host(Generic[T]):
    """Per-host state: its ready queue, slots in use and how many it may use
    (``slots``), rate bucket, cool-down, consecutive connection failures (the
    last one's message), when down the reason its requests are skipped, until
    ``down_until``, and its adapted limits (``adaptive``) once congested."""

    __slots__ = (
        "active",
        "adaptive",
        "bucket",
        "cool_until",
        "counters",
        "down",
        "down_until",
        "expiring",
        "failure",
        "failures",
        "hint",
        "key",
        "pending",
        "rate_from",
        "ready",
        "route",
        "runnable",
        "sleeping",
        "slots",
    )

    def __init__(
        self, key: HostKey, rate: float | None, burst: int, slots: float = math.inf
    ) -> None:
        self.key = key
        self.ready: deque[T] = deque()
        self.active = 0
        self.slots = slots  # requests it may have in flight: per_host, or fewer when adapted
        self.pending = 0  # requests of this host not yet retired
        self.bucket = TokenBucket(rate, burst) if rate is not None else None
        self.cool_until = -math.inf
        self.runnable = False  # in the dispatcher's round-robin queue
        self.sleeping = False  # in the wake-up heap (or held back)
        self.expiring = False  # idle, in the heap of hosts dropped once their bucket is full
        self.failures = 0
        self.failure = ""
        self.down: str | None = None
        self.down_until = -math.inf
        self.route: Any = None  # the owner's, from ``route(key)``: the proxy its requests take
        self.hint: _Quota | None = None  # the quota the server advertised, when it did
        self.rate_from = "user" if rate is not None else None  # where the bucket's rate came from
        self.counters = HostCounters()  # the scheduler gives it the one its table keeps
        self.adaptive: Adaptive | None = None  # made at its first congestion signal, when adapting

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the host's cool-down and rate allow a start."""
        wait = self.cool_until - now
        if self.bucket is not None:
            wait = max(wait, self.bucket.wait(now))
        return max(wait, 0.0)


class Scheduler(Generic[T]):
    """Host slots, rate gates, cool-downs, retry timers, dead hosts and the
    parking budget of one Fetcher, on an injected clock.

    ``clock()`` gives the time in seconds (a public attribute: the Fetcher sets
    its event loop's clock once it runs). ``arm(when)`` asks for one call of
    :meth:`wake` at ``when`` on that clock; it replaces any wake-up armed
    before (the scheduler asks again only for an earlier one). ``down_for``
    is how long a host stays marked down (and a failure count is kept);
    ``memory`` and ``counts`` keep what outlives a dropped host (cool-downs
    and down marks; failure counts alone). The other callables are the
    owner's side of a decision:

    - ``start(item)``: send it (a slot is taken for it: :attr:`active` and its
      host's ``active``; the owner gives both back when the attempt ends);
    - ``drop(item)``: its run is closed; forget it (and call :meth:`retire`);
    - ``hold(item, host)``: ``item``, parked, is next at ``host``; return True
      to hold the host back (the owner later calls :meth:`resume` with it);
    - ``unparked(item)``: a parked item is being started;
    - ``skip(item, reason)``: its host is down; fail it (and call :meth:`retire`);
    - ``route(key)``, when given: what a new host's ``route`` holds (for the
      Fetcher, the proxy its requests go through), asked once per host made.
    """

    __slots__ = (
        "_arm_at",
        "_armed",
        "_bucket",
        "_burst",
        "_counts",
        "_down_for",
        "_drop",
        "_expiring",
        "_global_wake",
        "_hold",
        "_host_errors",
        "_memory",
        "_per_host",
        "_per_host_rate",
        "_route",
        "_runnable",
        "_seq",
        "_skip",
        "_start",
        "_timers",
        "_unparked",
        "_wakes",
        "active",
        "clock",
        "closed",
        "concurrency",
        "counters",
        "hosts",
        "park_budget",
        "parked",
        "reads",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        host_errors: int,
        clock: Callable[[], float],
        arm: Callable[[float], None],
        start: Callable[[T], None],
        drop: Callable[[T], None],
        hold: Callable[[T, Host[T]], bool],
        unparked: Callable[[T], None],
        skip: Callable[[T, str], None],
        down_for: float = DOWN_FOR,
        memory: HostMemory | None = None,
        counts: HostMemory | None = None,
        route: Callable[[HostKey], Any] | None = None,
    ) -> None:
        self.clock = clock
        self._route = route
        self._arm_at = arm
        self._start = start
        self._drop = drop
        self._hold = hold
        self._unparked = unparked
        self._skip = skip
        self._host_errors = host_errors
        self.concurrency = limits.concurrency  # the owner may lower it before the first start
        self._per_host: float = limits.per_host or math.inf
        self._per_host_rate = limits.per_host_rate
        self._burst = limits.burst
        self._bucket = TokenBucket(limits.rate, limits.burst) if limits.rate else None
        self.hosts: dict[HostKey, Host[T]] = {}
        # idle hosts, by when their bucket is full again
        self._expiring: list[tuple[float, int, Host[T]]] = []
        self._down_for = down_for
        # What outlives a dropped host: cool-down, down mark.
        self._memory = HostMemory() if memory is None else memory
        # Failure counts alone, apart: a run over many dead hosts makes many, and
        # they must not push the cool-downs out of the memory's bound.
        self._counts = HostMemory() if counts is None else counts
        self._runnable: deque[Host[T]] = deque()
        self._timers: list[tuple[float, int, T]] = []
        self._wakes: list[tuple[float, int, Host[T]]] = []
        self._seq = itertools.count()
        self._global_wake: float | None = None
        self._armed = math.inf
        self.active = 0  # requests started and not yet given back
        self.parked = 0
        self.park_budget = limits.effective_parked
        self.closed = False
        # Figures for a live view, per host key, outliving the host's state.
        self.counters = HostTable()
        # The hosts of the requests read last, in the input's order (before any
        # wait for a robots.txt): the owner appends each request's host key as
        # it reads it. Their mix is what least_time_left expects of the requests
        # not yet read.
        self.reads: deque[HostKey] = deque(maxlen=RECENT_READS)

    # ----------------------------------------------------------------- hosts

    @property
    def waiting(self) -> int:
        """Requests waiting for a retry."""
        return len(self._timers)

    def hosts_held(self) -> int:
        """Hosts whose state is held now, once those that may go have gone."""
        self._sweep(self.clock())
        return len(self.hosts)

    def host(self, key: HostKey) -> Host[T]:
        """The state of the host ``key``, made (with what the memory kept of it)
        when it is not held."""
        host = self.hosts.get(key)
        if host is None:
            host = self._new_host(key)
        return host

    def _new_host(self, key: HostKey) -> Host[T]:
        """The state of a host not held: made anew with what the memory kept of
        it. Idle hosts whose bucket is full again are dropped first, so the
        hosts held stay those that carry information."""
        now = self.clock()
        self._sweep(now)
        host = self.hosts[key] = Host(key, self._per_host_rate, self._burst, self._per_host)
        host.counters = self.counters.get(key)
        if self._route is not None:
            host.route = self._route(key)
        kept = self._memory.take(key, now)
        counted = self._counts.take(key, now)
        kept = kept or counted
        if kept is not None:
            host.cool_until = kept.cool_until
            host.failures, host.failure = kept.failures, kept.failure
            if kept.down_until > now:
                host.down, host.down_until = kept.down, kept.down_until
            elif self._host_errors and host.failures >= self._host_errors:
                host.failures = 0  # its down mark expired: counted anew, as for a held host
            host.hint = kept.hint
            if kept.adaptive is not None:
                host.adaptive = kept.adaptive
                _apply(host)
        return host

    def _sweep(self, now: float) -> None:
        """Drop the idle hosts whose bucket is full by ``now`` and that are still
        idle (one that is busy again goes back in the heap when it is idle)."""
        expiring = self._expiring
        while expiring and expiring[0][0] <= now:
            host = heapq.heappop(expiring)[2]
            host.expiring = False
            if host.pending == 0 and host.active == 0:
                self._evict(host, now)

    def _evict(self, host: Host[T], now: float) -> None:
        """Drop an idle host's state, keeping in the memory what must outlive it
        (the quota its server advertised among it, while its window is open:
        else the host's next request would start unpaced); or, while its rate
        bucket is not full again, keep it in a heap until it is."""
        if self.hosts.get(host.key) is not host:
            return
        bucket = host.bucket
        if bucket is not None and not bucket.idle(now):
            if not host.expiring:
                host.expiring = True
                heapq.heappush(self._expiring, (bucket.full_at, next(self._seq), host))
            return
        del self.hosts[host.key]
        down = host.down is not None and host.down_until > now
        adaptive = host.adaptive
        hint = host.hint if host.hint is not None and host.hint.reset > now else None
        if host.cool_until > now or host.failures or down or adaptive is not None or hint:
            counted = now + self._down_for if host.failures else now
            expires = max(host.cool_until, host.down_until, counted)
            if adaptive is not None:
                expires = max(expires, now + KEEP)
            if hint is not None:
                expires = max(expires, hint.reset)
            kept = Remembered(
                cool_until=host.cool_until,
                failures=host.failures,
                failure=host.failure,
                down=host.down if down else None,
                down_until=host.down_until if down else -math.inf,
                adaptive=adaptive,
                hint=hint,
                expires=expires,
            )
            lasting = host.cool_until > now or down or adaptive is not None or hint is not None
            memory = self._memory if lasting else self._counts
            memory.put(host.key, kept, now)

    def _forget_if_idle(self, host: Host[T]) -> None:
        if host.pending == 0 and host.active == 0:
            self._evict(host, self.clock())

    # ------------------------------------------------------------- requests

    def add(self, item: T) -> bool:
        """Queue a new request at its host (``item.host``, from :meth:`host`) and
        start what may start; True when it was parked."""
        host = item.host
        parked = self.park_budget > 0 and self._host_waits(host) and self.park(item)
        host.pending += 1
        host.ready.append(item)
        self.make_runnable(host)
        # Else a finishing attempt dispatches it; a parked one waits for its host's
        # wake-up or a slot of its own.
        if self.active < self.concurrency and not (
            parked and (host.sleeping or self._host_full(host))
        ):
            self.pump()
        return parked

    def retire(self, item: T) -> None:
        """``item`` is done (or dropped): drop its host's state once nothing
        refers to it."""
        host = item.host
        host.pending -= 1
        if item.parked:
            self.unpark(item)
        if host.pending == 0 and host.active == 0:
            self._evict(host, self.clock())

    def retry_later(self, item: T, delay: float) -> bool:
        """Queue ``item`` again at its host in ``delay`` seconds; True when it
        was parked (the caller frees its place)."""
        heapq.heappush(self._timers, (self.clock() + delay, next(self._seq), item))
        return self.park(item)

    def move(self, item: T, key: HostKey) -> None:
        """Send ``item`` next to the host ``key`` (a redirect): it takes that
        host's slot, tokens and cool-down like any request, ahead of the host's
        new ones."""
        old = item.host
        old.pending -= 1
        self._forget_if_idle(old)
        new = self.host(key)
        new.pending += 1
        item.host = new
        new.ready.appendleft(item)
        self.make_runnable(new)

    def cool_down(self, host: Host[T], seconds: float) -> None:
        """The server asked ``host`` to slow down: start none of its requests for
        ``seconds`` (a later, longer cool-down wins)."""
        host.cool_until = max(host.cool_until, self.clock() + seconds)

    @staticmethod
    def limit_rate(host: Host[T], rate: float) -> None:
        """Hold ``host`` to ``rate`` requests per second (its robots.txt's pace),
        unless its own rate is already as strict (an adapted rate is held
        below it from now on)."""
        adaptive = host.adaptive
        if adaptive is not None:
            if rate < adaptive.max_rate:
                adaptive.max_rate, adaptive.source, adaptive.burst = rate, "robots", 1
                adaptive.rate = min(adaptive.rate, rate)
                host.bucket = TokenBucket(adaptive.rate, 1)
                _apply(host)
            return
        bucket = host.bucket
        if bucket is None or bucket.rate > rate:
            host.bucket = TokenBucket(rate, 1)
            host.rate_from = "robots"

    # ------------------------------------------------------------ adaptation

    def congested(self, host: Host[T], now: float, started: float, reason: str = "") -> bool:
        """A congestion signal from ``host`` (a 429 or 503 without Retry-After, a
        timeout; ``reason`` its message) at ``now``, for an attempt that
        ``started`` then, both on the clock of its :class:`HostCounters`: its
        rate and slots are cut (see :mod:`fanout.engine.adapt`), unless the
        attempt was in flight at the last cut. True when they were. At
        :data:`DRY_ROUNDS` times ``host_errors`` cuts with no success between
        them, the host is marked down (never when ``host_errors`` is 0)."""
        adaptive = host.adaptive
        if adaptive is None:
            bucket = host.bucket
            adaptive = host.adaptive = Adaptive(
                max_rate=math.inf if bucket is None else bucket.rate,
                max_slots=int(min(self._per_host, self.concurrency)),
                source=host.rate_from,
                burst=1 if bucket is None else bucket.burst,
            )
        counters = host.counters
        # A host younger than the window has no rate to cut from yet (a cut from
        # its first few answers held the demo's host to 5 req/s): its slots only.
        observed = counters.rate(now, WINDOW) if now - counters.first >= WINDOW else math.inf
        if not adaptive.congested(
            now=now,
            started=started,
            observed=observed,
            in_flight=host.active + 1,
            answers=counters.requests,
        ):
            return False
        _apply(host)
        errors = self._host_errors
        if errors and adaptive.dry >= DRY_ROUNDS * errors and host.down is None:
            where = shown_host(host.key)
            host.down = shown(
                f"skipped: {adaptive.dry} rounds in a row of 429s, 503s or timeouts"
                f" from {where} with no other answer (the last: {reason})"
            )
            host.down_until = self.clock() + self._down_for
        return True

    def relieved(self, host: Host[T], now: float) -> None:
        """An attempt to an adapted ``host`` succeeded at ``now`` (on the clock
        of its :class:`HostCounters`): its rate and slots rise; once they no
        longer hold it back, the host is as it was before it adapted."""
        adaptive = host.adaptive
        assert adaptive is not None
        if adaptive.succeeded(now) and adaptive.released(host.counters.rate(now, WINDOW)):
            host.adaptive = None
            host.slots = self._per_host
            if adaptive.max_rate == math.inf:
                host.bucket, host.rate_from = None, None
            else:
                assert host.bucket is not None
                host.bucket.set_rate(adaptive.max_rate, adaptive.burst)
                host.rate_from = adaptive.source
        else:
            _apply(host)

    def server_quota(self, host: Host[T], remaining: int, reset: float, limit: int | None) -> None:
        """The server of ``host`` says ``remaining`` requests are left until its
        quota resets in ``reset`` seconds, to ``limit`` (None: unknown). The
        host starts no more than that, less its requests in flight (which the
        server may not have counted yet); once none are left it waits for the
        reset, holding no slot, as in a cool-down (kept like one when the
        host's state is dropped)."""
        now = self.clock()
        budget = remaining - host.active
        host.hint = _Quota(budget, now + reset, reset, limit or None)
        if budget <= 0:
            host.cool_until = max(host.cool_until, now + reset)

    @staticmethod
    def _quota_wait(host: Host[T], now: float) -> float:
        """Seconds ``host`` waits for its advertised quota; 0 when it may start
        one. Past the reset, the budget is the limit again."""
        quota = host.hint
        assert quota is not None
        if now >= quota.reset:
            if quota.limit is None:
                host.hint = None
                return 0.0
            quota.budget = quota.limit - host.active  # those may count in the new window
            quota.reset = now + quota.span
        if quota.budget <= 0:
            return quota.reset - now
        return 0.0

    def snapshot(self, top: int, now: float) -> list[HostSnapshot]:
        """The figures of the ``top`` busiest hosts counted (in flight, then
        recent rate, then requests done, most first); ``now`` is on the clock
        of :class:`HostCounters` (``time.perf_counter``), cool-downs on
        :attr:`clock`."""
        if top <= 0:
            return []
        clock = self.clock()
        rows: list[tuple[int, float, int, HostKey, HostCounters]] = []
        for key, counters in self.counters.entries.items():
            host = self.hosts.get(key)
            active = 0 if host is None else host.active
            rows.append((active, counters.rate(now), counters.requests, key, counters))
        rows.sort(key=lambda row: row[:3], reverse=True)
        shots: list[HostSnapshot] = []
        for active, rate, requests, key, counters in rows[:top]:
            host = self.hosts.get(key)
            limit, source, cool = self._limit(key, host, clock)
            if host is not None:
                slots = host.slots
            else:  # dropped: the slots it will be given back
                kept = self._memory.peek(key, clock)
                adaptive = None if kept is None else kept.adaptive
                slots = self._per_host if adaptive is None else adaptive.slots
            latencies = sorted(counters.latencies)
            p50, p95 = quantile(latencies, 0.5), quantile(latencies, 0.95)
            shots.append(
                {
                    "host": shown_host(key),
                    "in_flight": active,
                    "slots": None if slots == math.inf else int(slots),
                    "requests": requests,
                    "requests_per_s": round(rate, 2),
                    "rate_limit": limit,
                    "rate_source": source,
                    "cool_down_s": round(cool, 3),
                    "throttled": counters.throttled,
                    "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                    "p95_ms": None if p95 is None else round(p95 * 1000, 1),
                }
            )
        return shots

    def least_time_left(self, remaining: int = 0) -> float:
        """Seconds the hosts held to a rate need at least for their requests:
        the largest, over those hosts, of the time until the last of its
        requests not yet started may start, by its rate (or the windows of
        its advertised quota) and its cool-down; 0.0 when no host is held.
        ``remaining``, when given, is the number of requests not yet done in
        all, read or not: those not yet read are counted too, at each host in
        its share of the requests read lately (the smaller of its shares of
        the last :data:`RECENT_READS` and the last quarter of those): an
        estimate, no longer a bound."""
        now = self.clock()
        hosts = self.hosts.values()
        unread = remaining - sum(host.pending for host in hosts) if remaining > 0 else 0
        recent = list(self.reads) if unread > 0 else []
        latest = recent[-(RECENT_READS // 4) :]
        counts, latest_counts = Counter(recent), Counter(latest)
        least = 0.0
        for host in hosts:
            if host.pending and (host.bucket is not None or host.hint is not None):
                rate, source, _ = self._limit(host.key, host, now)
                if not rate:
                    continue
                count: float = host.pending - host.active
                if recent:
                    key = host.key
                    share = min(counts[key] / len(recent), latest_counts[key] / len(latest))
                    count += unread * share
                if count <= 0:
                    continue  # all in flight: its cool-down holds nothing back
                start = max(now, host.cool_until)
                quota = host.hint
                if source == "server" and quota is not None:
                    left = self._quota_time(quota, count, host.active, start)
                elif host.bucket is not None:
                    left = host.bucket.time_for(count, start)
                else:
                    left = count / rate
                least = max(least, start - now + left)
        return least

    @staticmethod
    def _quota_time(quota: _Quota, count: float, active: int, now: float) -> float:
        """Seconds from ``now`` until the last of ``count`` requests may start
        under ``quota`` (its limit known): those the window has budget for at
        once, the rest a window's limit at each reset."""
        assert quota.limit is not None
        budget, reset = quota.budget, quota.reset
        if now >= reset:
            budget, reset = quota.limit - active, now + quota.span
        if count <= budget:
            return 0.0
        return reset - now + (math.ceil((count - budget) / quota.limit) - 1) * quota.span

    def _limit(
        self, key: HostKey, host: Host[T] | None, now: float
    ) -> tuple[float | None, str | None, float]:
        """The rate the host ``key`` is held to (requests per second) and where
        it came from, and the seconds until its cool-down (or quota wait) ends.
        A host whose state (``host``) was dropped is held to nothing but what
        outlives it (the user's rate, an adapted one, its cool-down, its
        server's quota)."""
        rate: float | None
        if host is None:
            rate, source = self._per_host_rate, "user" if self._per_host_rate else None
            cool_until, quota = -math.inf, None
            kept = self._memory.peek(key, now)
            if kept is not None:
                cool_until, quota = kept.cool_until, kept.hint
                adaptive = kept.adaptive
                if adaptive is not None and adaptive.rate < adaptive.max_rate:
                    rate, source = adaptive.rate, "adapted"
                elif adaptive is not None and adaptive.max_rate != math.inf:
                    rate, source = adaptive.max_rate, adaptive.source
        else:
            bucket = host.bucket
            rate, source = (None, None) if bucket is None else (bucket.rate, host.rate_from)
            cool_until, quota = host.cool_until, host.hint
        cool = max(cool_until - now, 0.0)
        if quota is not None:
            if quota.budget <= 0:
                cool = max(cool, quota.reset - now)
            if quota.limit is not None and quota.span > 0:
                advertised = quota.limit / quota.span
                if rate is None or advertised < rate:
                    return round(advertised, 3), "server", cool
        return (None if rate is None else round(rate, 3)), source, cool

    def host_failed(self, host: Host[T], message: str) -> bool:
        """A connection failure to ``host``; at ``host_errors`` in a row (never
        when it is 0) it is marked down for ``down_for`` seconds. True when
        this failure marked it down."""
        host.failures += 1
        host.failure = message
        errors = self._host_errors
        if errors and host.failures >= errors and host.down is None:
            where = shown_host(host.key)
            reason = message.removeprefix(f"cannot connect to {where}: ")
            host.down = shown(
                f"skipped: {host.failures} consecutive connection failures to {where}"
                f" (the last: {reason})"
            )
            host.down_until = self.clock() + self._down_for
            return True
        return False

    @staticmethod
    def host_reached(host: Host[T]) -> None:
        """An attempt reached ``host``: its failure count starts again."""
        host.failures = 0
        host.down = None

    def make_runnable(self, host: Host[T]) -> None:
        """``host`` has requests ready: put it in the round-robin queue (unless
        it sleeps); when it is down, its requests are skipped instead."""
        if host.down is not None and self._skip_down(host):
            return
        if not host.runnable and not host.sleeping:
            host.runnable = True
            self._runnable.append(host)

    def _skip_down(self, host: Host[T]) -> bool:
        """The requests queued for a host that is down fail at once, nothing sent;
        True. False when its down mark has expired (it is cleared)."""
        if host.down_until <= self.clock():
            host.down, host.failures = None, 0
            return False
        reason = host.down or ""
        ready = host.ready
        skip = self._skip
        while ready:
            skip(ready.popleft(), reason)
        return True

    # -------------------------------------------------------------- parking

    def _host_waits(self, host: Host[T]) -> bool:
        """True when a request added now to ``host`` would wait: for its
        cool-down or a rate token, for one of the host's own slots (all in use
        while there are others: a slow host), or behind requests that do."""
        if host.sleeping or self._host_full(host):
            return True
        bucket = host.bucket
        if bucket is None and host.cool_until == -math.inf:
            return False
        if host.ready:
            return True
        now = self.clock()
        return host.cool_until > now or (bucket is not None and bucket.wait(now) > 0.0)

    def _host_full(self, host: Host[T]) -> bool:
        """Every slot of ``host`` is in use, and its limit is below the global
        one (else its requests wait for any slot, as every host's do)."""
        return host.active >= host.slots and host.slots < self.concurrency

    def park(self, item: T) -> bool:
        """Park a request that must wait, within the budget; True when parked.
        Not with ordered output, whose buffered results the window bounds."""
        if item.parked or item.run.ordered or self.parked >= self.park_budget:
            return False
        item.parked = True
        self.parked += 1
        return True

    def unpark(self, item: T) -> None:
        """The parked ``item`` is no longer (started, retired or its run closed)."""
        item.parked = False
        self.parked -= 1

    def resume(self, hosts: Iterable[Host[T]]) -> None:
        """Hosts held back (see ``hold``) go on; call :meth:`pump` after."""
        for host in hosts:
            host.sleeping = False
            if host.ready:
                self.make_runnable(host)

    # -------------------------------------------------------------- dispatch

    def close(self) -> None:
        """Start nothing more."""
        self.closed = True

    def wake(self) -> None:
        """The wake-up armed through ``arm`` has come."""
        self._armed = math.inf
        self.pump()

    def pump(self, take: bool = False) -> T | None:
        """Promote what is due, start what may start, and arm the next wake-up.
        With ``take``, the first item started is returned to the caller (one
        that just finished an attempt) instead of being handed to ``start``."""
        if self.closed:
            return None
        now = self.clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            item = heapq.heappop(timers)[2]
            if item.run.closed:
                self._drop(item)
                continue
            item.host.ready.appendleft(item)
            self.make_runnable(item.host)
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            host = heapq.heappop(wakes)[2]
            host.sleeping = False
            if host.ready:
                self.make_runnable(host)
        mine = self._dispatch(now, take)
        if timers or wakes or self._global_wake is not None:
            self._arm(now)
        return mine

    def _dispatch(self, now: float, take: bool) -> T | None:
        runnable = self._runnable
        concurrency = self.concurrency
        bucket = self._bucket
        self._global_wake = None
        mine = None
        while runnable and self.active < concurrency:
            host = runnable[0]
            ready = host.ready
            while ready and ready[0].run.closed:
                self._drop(ready.popleft())
            if not ready or host.active >= host.slots:
                runnable.popleft()
                host.runnable = False
                continue
            if ready[0].parked and self._hold(ready[0], host):
                runnable.popleft()
                host.runnable = False
                host.sleeping = True  # in neither the round-robin queue nor the wake-up heap
                continue
            wait = 0.0
            if host.cool_until > now or host.bucket is not None:
                wait = host.wait(now)
            if wait <= 0.0 and host.hint is not None:  # its quota, once the rest allow a start
                wait = self._quota_wait(host, now)
            if wait > 0.0:
                runnable.popleft()
                host.runnable = False
                host.sleeping = True
                heapq.heappush(self._wakes, (now + wait, next(self._seq), host))
                continue
            if bucket is not None:
                global_wait = bucket.wait(now)
                if global_wait > 0.0:
                    self._global_wake = now + global_wait
                    break
                bucket.take(now)
            if host.bucket is not None:
                host.bucket.take(now)
            if host.hint is not None:
                host.hint.budget -= 1
            item = ready.popleft()
            if item.parked:
                item.parked = False
                self.parked -= 1
                self._unparked(item)
            host.active += 1
            self.active += 1
            runnable.popleft()
            if ready and host.active < host.slots:
                runnable.append(host)  # round-robin between hosts
            else:
                host.runnable = False
            if take:
                mine, take = item, False
            else:
                self._start(item)
        return mine

    def _arm(self, now: float) -> None:
        when = math.inf
        if self._timers:
            when = self._timers[0][0]
        if self._wakes:
            when = min(when, self._wakes[0][0])
        if self._global_wake is not None:
            when = min(when, self._global_wake)
        if when == math.inf:
            return
        when = max(when, now + MIN_TIMER)
        if self._armed <= when:
            return  # an earlier wake-up is armed; it will re-arm
        self._armed = when
        self._arm_at(when)


def _apply(host: Host[Any]) -> None:
    """Hold ``host`` to its adapted rate and slots: its bucket's rate is the
    adapted one (source ``adapted``) while that is below the ceiling, else
    the ceiling's."""
    adaptive = host.adaptive
    assert adaptive is not None
    host.slots = adaptive.slots
    rate = adaptive.rate
    bucket = host.bucket
    if rate < adaptive.max_rate:
        burst = max(1, int(rate * BURST_SPAN))
        if bucket is None:
            host.bucket = TokenBucket(rate, burst)
        else:
            bucket.set_rate(rate, burst)
        host.rate_from = "adapted"
    elif adaptive.max_rate != math.inf and host.rate_from != adaptive.source:
        # Back at the ceiling; or made anew from the memory, with the user's
        # bucket or none, where the ceiling is its robots.txt pace.
        if bucket is None:
            host.bucket = TokenBucket(adaptive.max_rate, adaptive.burst)
        else:
            bucket.set_rate(adaptive.max_rate, adaptive.burst)
        host.rate_from = adaptive.source
