"""The engine: requests in, exactly one result out for each.

Data flow, all on one event loop::

    source ─► read-ahead ─► per-host ready queues ─► dispatch ─► attempt tasks ─► results
              (window)            ▲                  (slots, tokens,               │
                                  └── retry timers ◄── cool-downs)  ◄──────────────┘

The read-ahead of a sync source is done by the consumer itself, one request
for each result it takes, so a request is made as a result is dropped (see
``Fetcher._refill``), unless the collector's threshold is raised. An async
source, or any source then, is read by a feeder task in batches.

There is no scheduler task: dispatch runs whenever something changes (a
request is admitted, an attempt ends, a timer fires) and starts every request
whose host slot, global slot, rate tokens and not-before time all allow it.
A request waiting for a retry, a host's cool-down or a rate token sits in a
heap or a queue and holds no slot. It is also parked: it gives its place in
the read-ahead window back, so the window does not fill with waiters while
other hosts' requests could run, up to ``Limits.parked`` requests (never with
ordered output). Sent, it takes a place back, past the window's size if
need be, and the run reads that much less ahead until the caller takes a
result; a run overdrawn by ``concurrency`` places sends no parked request,
so what was sent and not yet taken stays within window + concurrency.
Every task lives in the Fetcher's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import TYPE_CHECKING, Final, NoReturn

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from fanout.config import DEFAULT_USER_AGENT, FetcherConfig, FetcherOptions, resolve_config
from fanout.errors import ConfigError, SourceError
from fanout.fdlimit import fit_concurrency
from fanout.guard import GuardedResolver, HostGuard
from fanout.hoststate import DOWN_FOR, HostMemory, Remembered, shown_host
from fanout.models import IDEMPOTENT_METHODS, ErrorKind, Failure, Request, Result
from fanout.proxy import Proxy, proxies_for
from fanout.ratelimit import TokenBucket
from fanout.retry_after import parse_retry_after
from fanout.runtime import _collector_tuned, collector_raised, loop_clock
from fanout.safetext import shown
from fanout.tls import tls_context
from fanout.transport import (
    CREDENTIAL_HEADERS,
    REDIRECT_STATUSES,
    ForeignSession,
    Hop,
    classify,
    exchange,
    followed,
    make_session,
    resolver_stats,
    session_problem,
    while_connecting,
)
from fanout.urls import HostKey, host_key, parse_request_url, parse_url

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.12

__all__ = ["DEFAULT_USER_AGENT", "Fetcher", "RequestLike", "Source"]

logger = logging.getLogger("fanout")

RequestLike = str | Request
Source = Iterable[RequestLike] | AsyncIterable[RequestLike]

_RETRYABLE_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.PROTOCOL})
_COOL_DOWN_STATUSES = frozenset({429, 503})
# Failures that say the host cannot be reached (with a connect deadline, which
# is a TIMEOUT not sent): host_errors of them in a row mark it down.
_DOWN_KINDS = frozenset({ErrorKind.CONNECT, ErrorKind.DNS, ErrorKind.TLS})
_CREDENTIALS = frozenset(name.lower() for name in CREDENTIAL_HEADERS)
# The causes of a proxy failure where the proxy answered (a 407, a refused
# CONNECT): not retried, as the proxy would answer the same. A proxy that could
# not be reached is tried again, as a connection failure is.
_PROXY_ANSWERS = frozenset({None, "ClientHttpProxyError"})
# A hop that drops the body drops the headers that describe it.
_BODY_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding"}
)
_END: Final = object()
# The shortest wake-up the dispatcher arms: on uvloop, a timer of a few
# microseconds fires at once and the dispatcher spins until the moment comes.
_MIN_TIMER: Final = 0.001


class _Host:
    """Per-host state: its ready queue, slots in use, rate bucket, cool-down,
    consecutive connection failures (the last one's message) and, when down,
    the reason its requests are skipped, until ``down_until``."""

    __slots__ = (
        "active",
        "bucket",
        "cool_until",
        "down",
        "down_until",
        "expiring",
        "failure",
        "failures",
        "key",
        "pending",
        "proxy",
        "ready",
        "runnable",
        "sleeping",
    )

    def __init__(self, key: HostKey, rate: float | None, burst: int) -> None:
        self.key = key
        self.ready: deque[_Item] = deque()
        self.active = 0
        self.pending = 0  # items of this host not yet retired
        self.bucket = TokenBucket(rate, burst) if rate is not None else None
        self.cool_until = -math.inf
        self.runnable = False  # in the dispatcher's round-robin queue
        self.sleeping = False  # in the wake-up heap
        self.expiring = False  # idle, in the heap of hosts dropped once their bucket is full
        self.failures = 0
        self.failure = ""
        self.down: str | None = None
        self.down_until = -math.inf
        self.proxy: Proxy | None = None  # the proxy its requests go through

    def wait(self, now: float) -> float:
        wait = self.cool_until - now
        if self.bucket is not None:
            wait = max(wait, self.bucket.wait(now))
        return max(wait, 0.0)


class _Item:
    """One admitted request on its way through the engine. ``url`` and ``host``
    are those of the hop to send next; ``hop`` says what that hop sends when it
    is a redirect (None for the request itself), ``hops`` counts the redirects
    followed; ``left``, set while a hop of the current try waits to be sent, is
    what the try has left of its total deadline."""

    __slots__ = (
        "attempts",
        "due",
        "first_start",
        "hop",
        "hops",
        "host",
        "index",
        "left",
        "parked",
        "request",
        "run",
        "try_start",
        "url",
    )

    def __init__(self, run: _Run, index: int, request: Request, url: URL, host: _Host) -> None:
        self.run = run
        self.index = index
        self.request = request
        self.url = url
        self.host = host
        self.attempts = 0
        self.first_start = 0.0
        self.try_start = 0.0
        self.due = 0.0  # the loop clock's deadline of the current exchange
        self.left: float | None = None  # of the try's total deadline, for its next hop
        self.hop: Hop | None = None
        self.hops = 0
        self.parked = False  # waiting without a place in its run's window


class _AttemptDeadline:
    """The total deadline of a worker's attempts, on one lazy timer per worker.

    aiohttp's own total deadline arms a timer and enters a timer context for
    every request: 4 % of a small request's instructions on uvloop, 7 % on
    asyncio's own loop (benchmarks/instructions.py). Here an attempt
    only notes when it is due; the worker's one timer, when it fires early,
    re-arms itself for the deadline then in force, and finding none it stops.
    A new try's deadline never moves earlier (every try has the same
    ``seconds``); a redirect hop has what its try left of them, which may end
    before the timer armed, and then re-arms it. So the timer is never late. When an
    attempt's deadline passes, the worker task is cancelled, as aiohttp's
    timer would; :meth:`stop` tells the worker whether that cancellation was
    the deadline's alone. The timer is the one
    of ``transport._LazyReadDeadline``, not shared with it: there the deadline
    moves at every chunk, and a call into a shared class cost 1.4 % of a
    request's instructions (uvloop)."""

    __slots__ = ("_clock", "_handle", "_loop", "_seconds", "_task", "due", "expired")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], seconds: float
    ) -> None:
        self._loop = loop
        self._clock = loop_clock(loop)
        self._task = task
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self.due: float | None = None
        self.expired = False

    def start(self, left: float | None = None) -> float:
        """An exchange begins, due ``seconds`` from now, or ``left`` seconds from
        now when it is a redirect hop: the try's exchanges share one budget
        (the time a hop waits for its host between them is not counted).
        Returns the deadline."""
        if left is None:
            due = self._clock() + self._seconds
        else:
            due = self._clock() + left
            if self._handle is not None and due < self._handle.when():  # it moves earlier
                self._handle.cancel()
                self._handle = None
        self.due = due
        if self._handle is None:
            self._handle = self._loop.call_at(due, self._check)
        return due

    def stop(self) -> bool:
        """The attempt ended. True when its deadline passed and cancelled the task
        and no other cancellation is pending (the attempt timed out); False
        otherwise, also when called again."""
        self.due = None
        if not self.expired:
            return False
        self.expired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        """The worker ends: no timer is left behind."""
        self.due = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        due = self.due
        if due is None:
            return
        if self._clock() >= due:
            self.due = None
            self.expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)


class _Window:
    """How many more requests a run may read ahead: a counting semaphore whose
    waiter (the feeder) is woken only once a quarter of the window is free, so
    the feeder runs once per batch instead of once per result. The feeder takes
    a place with ``free -= 1`` after ``await wait()`` when ``free`` is 0: no
    coroutine per request."""

    __slots__ = ("_loop", "_resume", "_waiter", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._resume = max(1, size // 4)
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

    async def wait(self) -> None:
        """Until a place is free."""
        while self.free <= 0:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def release(self) -> None:
        self.free += 1
        waiter = self._waiter
        if waiter is not None and self.free >= self._resume and not waiter.done():
            waiter.set_result(None)


class _Channel:
    """Results on their way to the consumer: a deque and one waiter (cheaper than
    asyncio.Queue, and a run has exactly one consumer). None marks the end. The
    consumer pops ``items`` itself and awaits ``wait()`` only when it is empty."""

    __slots__ = ("_loop", "_waiter", "items")

    def __init__(self) -> None:
        self.items: deque[tuple[int, Result] | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

    def put_nowait(self, entry: tuple[int, Result] | None) -> None:
        self.items.append(entry)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until an entry is there."""
        while not self.items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Run:
    """The state of one ``stream`` call: its read-ahead window and its results."""

    __slots__ = (
        "blocked",
        "closed",
        "debt",
        "error",
        "fed",
        "feeder",
        "next_index",
        "ordered",
        "outstanding",
        "results",
        "source",
        "tasks",
        "window",
    )

    def __init__(self, window: int, ordered: bool = False) -> None:
        self.window = _Window(window)
        self.ordered = ordered
        self.debt = 0  # places taken back by parked requests sent (a sync source's reads to skip)
        self.blocked: list[_Host] = []  # hosts whose next request is parked, held back
        self.results = _Channel()
        self.outstanding: dict[int, _Item] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.feeder: asyncio.Task[None] | None = None
        self.next_index = 0
        self.fed = False
        self.closed = False
        self.error: BaseException | None = None
        self.source: Iterator[RequestLike] | None = None  # a sync source not yet at its end


# The options that act through fanout's own connector: its resolver (the guard,
# the DNS servers) and its TLS context. Each, with its value when not in use.
_CONNECTOR_OPTIONS: Final = {
    "deny_private": False,
    "allow_hosts": None,
    "deny_hosts": (),
    "nameservers": None,
    "cacert": None,
    "verify": True,
    "client_cert": None,
    # the session's own proxies and cookie jar are used
    "proxy": None,
    "cookies": False,
}


def _check_session(session: aiohttp.ClientSession, config: FetcherConfig) -> None:
    """ConfigError when ``session`` cannot be used, or ``config`` asks for what a
    session given does not get: fanout's own connector."""
    if not isinstance(session, aiohttp.ClientSession):
        raise TypeError(f"session must be an aiohttp.ClientSession, got {type(session).__name__}")
    used = [name for name, off in _CONNECTOR_OPTIONS.items() if getattr(config, name) != off]
    if used:
        raise ConfigError(
            f"session= cannot be combined with {', '.join(used)}: they act through fanout's"
            " own connector or cookie jar, which a session given does not use (set them"
            " on your session, or leave out session=)"
        )
    problem = session_problem(session)
    if problem is not None:
        raise ConfigError(problem)


class Fetcher:
    """Fetches any number of requests concurrently, politely, in bounded memory.

    An async context manager that owns one aiohttp session and one task group.
    Several ``stream``/``gather`` calls may run at once on one Fetcher; they
    share its limits.

    >>> async def main(urls: list[str]) -> None:  # doctest: +SKIP
    ...     async with Fetcher(limits=Limits(concurrency=100, per_host=8)) as fetcher:
    ...         async for result in fetcher.stream(urls):
    ...             print(result.url, result.status, result.error)
    """

    def __init__(
        self,
        config: FetcherConfig | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        **options: Unpack[FetcherOptions],
    ) -> None:
        """``config`` holds the options (:class:`~fanout.config.FetcherConfig`, whose
        fields they are); keyword ``options`` override its fields, or make one
        (``Fetcher(limits=...)``). A bad value raises :class:`~fanout.ConfigError`
        here, an unknown option TypeError. The config in force is :attr:`config`.

        ``headers`` are sent with every request (Authorization, Proxy-Authorization
        and Cookie only to the request's own origin: see ``docs/security.md``); a
        User-Agent among them, in any case, is sent instead of ``user_agent``;
        ``keep_body=False`` drops bodies after hashing them (``Result.body`` is then
        None); ``seed`` fixes the jitter.
        ``tune_collector=True`` raises the garbage collector's first threshold while
        the fetcher is open, as :func:`fanout.runtime.run` does for its run (see
        :func:`fanout.runtime.tune_collector`); by default a Fetcher in your own
        loop leaves the process's collector alone.

        The guard for services (:mod:`fanout.guard`): ``deny_private=True`` refuses
        loopback, private, link-local and multicast addresses, checked on the
        addresses connected to, after DNS; ``allow_hosts`` (only these) and
        ``deny_hosts`` (never these) take host name globs and networks. A refused
        request is a ``denied`` result and nothing is sent. ``nameservers``
        ("IP" or "IP:PORT") replace the system's DNS servers (see
        :mod:`fanout.dns` for the resolver and its cache, ``Timeouts.dns`` for
        its deadline).

        ``host_errors``: after that many consecutive connection failures to one
        host (``connect``, ``dns``, ``tls``, or a connect deadline), its other
        requests, and those that come for the next 5 minutes, fail at once as
        ``host_down`` and nothing is sent to it; a request that reaches the
        host starts the count again. ``0`` turns this off.

        A header name that is not an HTTP token, or a value with a control
        character (other than tab), raises :class:`~fanout.ConfigError` here.

        TLS: ``cacert``, ``verify`` and ``client_cert`` (see
        :class:`~fanout.config.FetcherConfig`) make one SSL context, here.

        ``proxy``: every request goes through this HTTP proxy; else, with
        ``env_proxy`` (the default), the environment's ``http_proxy``,
        ``https_proxy`` and ``no_proxy`` are read here (:mod:`fanout.proxy`).
        A proxy that cannot be reached or refuses is a ``proxy`` result.
        ``cookies=True`` keeps cookies, each for its own origin
        (:mod:`fanout.cookies`).

        ``session``: an aiohttp session of yours to send the requests through,
        on the loop the Fetcher runs in; fanout does not close it. Its connector
        (pool limits, DNS, TLS, proxies) and cookie jar are yours, so the options
        that need fanout's own connector (the guard, ``nameservers``, the TLS
        options, ``proxy``, ``cookies``) raise :class:`~fanout.ConfigError`
        with it (and the environment's proxies are not read), as does a session
        with default credentials (``auth``, an Authorization, Cookie or
        Proxy-Authorization header). fanout's deadlines, caps, redirects,
        retries and headers still apply, per request."""
        config = resolve_config(config, options, "Fetcher")
        if session is not None:
            _check_session(session, config)
        self._given_session = session
        self.config: Final = config
        """The options in force (read-only)."""
        self._host_errors = config.host_errors
        self.limits = config.limits
        self.retry = config.retry
        self.timeouts = config.timeouts
        self.caps = config.caps
        guard = HostGuard(
            deny_private=config.deny_private,
            allow_hosts=config.allow_hosts,
            deny_hosts=config.deny_hosts,
        )
        self._guard = guard if guard.active else None
        self._nameservers = None if config.nameservers is None else list(config.nameservers)
        # The environment's proxies are read now; a session given uses its own.
        self._proxies = None if session is not None else proxies_for(config)
        self._ssl = tls_context(
            cacert=config.cacert, verify=config.verify, client_cert=config.client_cert
        )
        self._foreign: ForeignSession | None = None
        self._internal_logged: set[type[BaseException]] = set()
        given = dict(config.headers or {})
        if not any(name.lower() == "user-agent" for name in given):  # a given one wins
            given = {"User-Agent": config.user_agent, **given}
        self._headers = given
        self._keep_body = config.keep_body
        self._tune_collector = config.tune_collector
        self._collector = contextlib.ExitStack()
        self._rng = random.Random(config.seed)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: AbstractResolver | None = None
        self._group: asyncio.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic  # the loop's, once entered
        self._closing = False
        self._hosts: dict[HostKey, _Host] = {}
        # idle hosts, by when their bucket is full again
        self._expiring: list[tuple[float, int, _Host]] = []
        self._memory = HostMemory()  # what outlives a dropped host: cool-down, down mark
        # Failure counts alone, apart: a run over many dead hosts makes many, and
        # they must not push the cool-downs out of the memory's bound.
        self._counts = HostMemory()
        self._runnable: deque[_Host] = deque()
        self._timers: list[tuple[float, int, _Item]] = []
        self._wakes: list[tuple[float, int, _Host]] = []
        self._seq = itertools.count()
        self._active = 0
        self._bucket = (
            TokenBucket(self.limits.rate, self.limits.burst) if self.limits.rate else None
        )
        self._global_wake: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._runs: set[_Run] = set()
        self._idle: list[asyncio.Future[_Item | None]] = []
        self._debug = logger.isEnabledFor(logging.DEBUG)  # --debug: a line per retry and result
        self._concurrency = self.limits.concurrency
        self._per_host: float = self.limits.per_host or math.inf
        self._parked = 0
        self._park_budget = self.limits.effective_parked

    async def __aenter__(self) -> Fetcher:
        if self._group is not None:
            raise RuntimeError("a Fetcher can be entered only once")
        self._loop = asyncio.get_running_loop()
        self._clock = loop_clock(self._loop)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        guard = self._guard
        self._fit_concurrency()
        if not self.config.verify:
            logger.warning(
                "TLS certificates are not checked (verify=False, --insecure): anyone on"
                " the network path can read and change the traffic"
            )
        if self._given_session is not None:
            self._session = self._given_session
            self._foreign = ForeignSession(self._session, self.timeouts, self._headers)
        else:
            # Through a proxy only name patterns are left (proxies_for refuses
            # the others), checked on names: the resolver then resolves the proxy.
            if self._proxies is not None:
                guard = None
            wrap = None if guard is None else lambda inner: GuardedResolver(inner, guard)
            self._session, self._resolver = make_session(
                concurrency=self._concurrency,
                timeouts=self.timeouts,
                headers=self._headers,
                wrap_resolver=wrap,
                nameservers=self._nameservers,
                ssl=self._ssl,
                cookies=self.config.cookies,
            )
        if self._tune_collector:  # last: nothing after it can fail and skip __aexit__
            self._collector.enter_context(_collector_tuned())
        return self

    def _fit_concurrency(self) -> None:
        """Lower the concurrency to what the process's file descriptor limit allows
        (see :mod:`fanout.fdlimit`), with a warning: a library does not change
        the limits of the process it runs in."""
        concurrency, lowered = fit_concurrency(self._concurrency)
        if lowered is not None:
            logger.warning("%s (raise it, or pass a lower Limits.concurrency)", lowered)
            self._concurrency = concurrency

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._group is not None
        assert self._session is not None
        try:
            for run in list(self._runs):
                self._cancel_outstanding(run)
            self._closing = True
            if self._timer is not None:
                self._timer.cancel()
            for run in list(self._runs):
                await self._close_run(run)
            for idle in self._idle:
                if not idle.done():
                    idle.set_result(None)  # idle workers end
            self._idle.clear()
        finally:
            if self._given_session is None:  # a session given is its owner's to close
                await self._session.close()
            if self._resolver is not None:
                await self._resolver.close()
            self._collector.close()
        # Every task is done by now. The body's own exception is not handed to the
        # group, which would wrap it in an ExceptionGroup; it propagates as it is.
        await self._group.__aexit__(None, None, None)
        return None

    # ------------------------------------------------------------------ API

    @property
    def in_flight(self) -> int:
        """Requests being sent or received right now."""
        return self._active

    @property
    def dns_stats(self) -> dict[str, int] | None:
        """What the resolver did so far (lookups, cache hits, coalesced,
        queries, failures; see :class:`fanout.dns.DNSStats`), or None when no
        name was resolved."""
        return None if self._resolver is None else resolver_stats(self._resolver)

    @property
    def waiting(self) -> int:
        """Requests waiting for a retry (backoff, Retry-After)."""
        return len(self._timers)

    @property
    def hosts_held(self) -> int:
        """Hosts whose state the fetcher holds now: those with requests queued or
        in flight, and idle ones until their rate bucket is full again. What
        must outlive them (a cool-down, failure counts) is kept apart, for at
        most 10,000 hosts (and 10,000 more with only a failure count)."""
        self._sweep(self._clock())
        return len(self._hosts)

    @property
    def parked(self) -> int:
        """Requests waiting (for a retry, a host's cool-down or a rate token)
        without a place in the read-ahead window: at most ``limits.parked``."""
        return self._parked

    async def stream(
        self, requests: Source, *, ordered: bool = False
    ) -> AsyncGenerator[Result, None]:
        """Yield one :class:`Result` per request, as they complete (or in input
        order with ``ordered=True``).

        ``requests`` may be any sync or async iterable of URL strings and
        :class:`Request` objects, of any length: it is read lazily, never more
        than ``limits.effective_window`` requests ahead of the results taken,
        plus at most ``limits.effective_parked`` parked ones (see
        :class:`~fanout.policy.Limits`).
        A sync iterable is read on the event loop, one request as each result
        is taken, so its ``next()`` must not block (wrap a blocking one in
        :class:`fanout.blocking_input.ThreadedReader`); an async one is read
        by a task of its own.
        Failures are results, not exceptions. An exception raised by the
        ``requests`` iterable itself (its ``__iter__`` or ``next()``, such as
        a generator that raises) stops the reading; once the results of the
        requests read before it are yielded, it is raised as
        :class:`fanout.SourceError` naming it, the original as its
        ``__cause__`` (a SourceError, as fanout's own readers raise, as it
        is). A single URL given as a str (or bytes) raises TypeError at once:
        wrap it in a list.
        """
        run = self._start_run(requests, ordered)
        refill = self._refill
        items, wait = run.results.items, run.results.wait
        buffer: dict[int, Result] = {}  # ordered: results waiting for earlier ones
        expected = 0
        try:
            while True:
                if not items:
                    await wait()
                if (entry := items.popleft()) is None:
                    break
                if not ordered:
                    refill(run)
                    yield entry[1]
                    continue
                buffer[entry[0]] = entry[1]
                while expected in buffer:
                    refill(run)
                    yield buffer.pop(expected)
                    expected += 1
            if run.error is not None:
                _raise_source_error(run.error)
        finally:
            await self._close_run(run)

    async def gather(self, requests: Source) -> list[Result]:
        """All results, in input order. Failures are results, never raised;
        an exception of the ``requests`` iterable raises
        :class:`fanout.SourceError` (see :meth:`stream`).

        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with Fetcher() as fetcher:
        ...         results = await fetcher.gather(["http://127.0.0.1:8080/a"])
        """
        return [result async for result in self.stream(requests, ordered=True)]

    # ------------------------------------------------------------- admission

    def _start_run(self, requests: Source, ordered: bool = False) -> _Run:
        if self._group is None or self._closing:
            raise RuntimeError("use the Fetcher inside 'async with Fetcher(...) as fetcher:'")
        if isinstance(requests, str | bytes | bytearray):  # iterable, but one URL is meant
            raise TypeError(
                f"expected an iterable of URLs or Requests, got a {type(requests).__name__};"
                " wrap a single URL in a list"
            )
        run = _Run(self.limits.effective_window, ordered)
        self._runs.add(run)
        if isinstance(requests, AsyncIterable) or collector_raised():
            run.feeder = self._group.create_task(self._feed(run, requests), name="fanout-feeder")
            return run
        try:
            run.source = iter(requests)
        except Exception as exc:  # not iterable, or its __iter__ broke: reported at the end
            run.error = exc
            self._source_ended(run)
            return run
        for _ in range(run.window.free):
            if run.source is None:
                break
            self._refill(run)
        return run

    def _refill(self, run: _Run) -> None:
        """A place in the run's window is free (a result was taken): read one more
        request from a sync source, or let the feeder read on.

        Reading here, one request per result taken, makes a request's objects
        as the previous result's are dropped. In batches, hundreds of results
        were freed and then hundreds of requests made: CPython counts
        allocations net of frees toward its next collection but forgets the
        frees that come just after one, so each batch started extra
        collections, each scanning a wave of requests in flight (about 5 % of
        the CPU of benchmarks/latency.py on uvloop). With the collector's threshold
        raised that cost is gone, and the feeder's batches measured cheaper
        on uvloop, so runs with it raised (fanout's own) keep the feeder."""
        if run.debt:  # a parked request took this place back when it was sent
            run.debt -= 1
            if run.blocked:
                self._unblock(run)
            return
        source = run.source
        if source is None:
            run.window.release()
            if run.blocked:
                self._unblock(run)
            return
        while True:
            try:
                raw = next(source, _END)
            except Exception as exc:  # the caller's iterable broke: stop reading, report it
                run.error = exc
                raw = _END
            if raw is _END:
                self._source_ended(run)
                return
            if not self._admit(run, raw) or run.source is None:
                return  # else it was parked: its place is free, read on

    async def _feed(self, run: _Run, requests: Source) -> None:
        """Read a source in a task of its own, never more than the run's window
        ahead of the results taken; woken once a quarter of it is free."""
        window = run.window
        iterator: Iterator[RequestLike] | AsyncIterator[RequestLike] | None = None
        try:
            if isinstance(requests, AsyncIterable):
                iterator = aiter(requests)
                while True:
                    if window.free <= 0:
                        await window.wait()
                    window.free -= 1
                    try:
                        raw = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    if self._admit(run, raw):  # parked: its place is free again
                        window.free += 1
            else:
                iterator = iter(requests)
                while True:
                    if window.free <= 0:
                        await window.wait()
                    window.free -= 1
                    item = next(iterator, _END)
                    if item is _END:
                        break
                    if self._admit(run, item):
                        window.free += 1
        except asyncio.CancelledError:
            if iterator is not None:
                await _close_source(iterator)  # a generator's finally (open files) runs now
            raise
        except Exception as exc:  # the caller's iterable broke: stop reading, report it
            run.error = exc
        self._source_ended(run)

    def _source_ended(self, run: _Run) -> None:
        run.source = None
        run.fed = True
        if not run.outstanding:
            run.results.put_nowait(None)

    def _admit(self, run: _Run, raw: object) -> bool:
        """Admit a request; True when it was parked (its place in the window is free)."""
        index = run.next_index
        run.next_index += 1
        if isinstance(raw, str):
            request = Request(raw)
            parsed = parse_url(raw)  # a new Request has no parse to remember or reuse
        elif isinstance(raw, Request):
            request = raw
            parsed = parse_request_url(raw)
        else:
            request = Request(repr(raw))
            self._deliver(run, index, Result(request=request, error=_not_a_request(raw)))
            return False
        if isinstance(parsed, Failure):
            self._deliver(run, index, Result(request=request, error=parsed))
            return False
        key = host_key(parsed)
        if self._guard is not None:
            refused = self._guard.check_host(key[1])
            if refused is not None:
                self._deliver(run, index, Result(request, error=Failure(ErrorKind.DENIED, refused)))
                return False
        host = self._hosts.get(key) or self._host(key)
        item = _Item(run, index, request, parsed, host)
        if not request.send_credentials:  # sent as a hop that leaves them out
            item.hop = self._hop(request, request.method, request.body, _CREDENTIALS)
        parked = self._park_budget > 0 and self._host_waits(host) and self._park(item)
        run.outstanding[index] = item
        host.pending += 1
        host.ready.append(item)
        self._make_runnable(host)
        # Else a finishing worker dispatches it; a parked one waits for its host's
        # wake-up or a slot of its own.
        if self._active < self._concurrency and not (
            parked and (host.sleeping or self._host_full(host))
        ):
            self._pump()
        return parked

    def _host(self, key: HostKey) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._new_host(key)
        return host

    def _new_host(self, key: HostKey) -> _Host:
        """The state of a host not held: made anew with what the memory kept of
        it. Idle hosts whose bucket is full again are dropped first, so the
        hosts held stay those that carry information."""
        now = self._clock()
        self._sweep(now)
        host = self._hosts[key] = _Host(key, self.limits.per_host_rate, self.limits.burst)
        if self._proxies is not None:
            host.proxy = self._proxies.for_target(key)
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

    # -------------------------------------------------------------- dispatch

    def _make_runnable(self, host: _Host) -> None:
        if host.down is not None and self._skip_down(host):
            return
        if not host.runnable and not host.sleeping:
            host.runnable = True
            self._runnable.append(host)

    def _pump(self, take: bool = False) -> _Item | None:
        """Promote what is due, start what may start, and arm the next wake-up.
        With ``take``, the first item started is returned to the caller (a worker
        that just finished one) instead of being handed to another worker."""
        if self._closing:
            return None
        now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            item = heapq.heappop(timers)[2]
            if item.run.closed:
                self._retire(item)
                continue
            item.host.ready.appendleft(item)
            self._make_runnable(item.host)
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            host = heapq.heappop(wakes)[2]
            host.sleeping = False
            if host.ready:
                self._make_runnable(host)
        mine = self._dispatch(now, take)
        if timers or wakes or self._global_wake is not None:
            self._arm(now)
        return mine

    def _dispatch(self, now: float, take: bool) -> _Item | None:
        group = self._group
        assert group is not None
        runnable = self._runnable
        concurrency = self._concurrency
        per_host = self._per_host
        bucket = self._bucket
        self._global_wake = None
        mine = None
        while runnable and self._active < concurrency:
            host = runnable[0]
            ready = host.ready
            while ready and ready[0].run.closed:
                self._retire(ready.popleft())
            if not ready or host.active >= per_host:
                runnable.popleft()
                host.runnable = False
                continue
            if ready[0].parked and self._hold_back(host, ready[0].run):
                continue
            if host.cool_until > now or host.bucket is not None:
                wait = host.wait(now)
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
            item = ready.popleft()
            if item.parked:
                self._unpark(item, take_place=True)
            host.active += 1
            self._active += 1
            runnable.popleft()
            if ready and host.active < per_host:
                runnable.append(host)  # round-robin between hosts
            else:
                host.runnable = False
            if take:
                mine, take = item, False
            elif self._idle:
                self._idle.pop().set_result(item)
            else:
                group.create_task(self._worker(item), name="fanout-worker")
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
        when = max(when, now + _MIN_TIMER)
        if self._timer is not None:
            if self._timer_when <= when:
                return  # an earlier wake-up is armed; it will re-arm
            self._timer.cancel()
        assert self._loop is not None
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        self._pump()

    # -------------------------------------------------------------- attempts

    async def _worker(self, item: _Item | None) -> None:
        """Run items until told to stop (None). After each item the worker starts
        the next startable one itself, with no task switch; when there is none it
        waits, idle, on a future of its own. It stays in its run's task set (so
        closing the run cancels it) while it works on that run's items. The
        attempt is made here, not in a helper coroutine: a coroutine layer costs
        every request at each of its resumptions."""
        loop = self._loop
        session = self._session
        assert loop is not None
        assert session is not None
        caps, keep_body, foreign = self.caps, self._keep_body, self._foreign
        me = asyncio.current_task()
        assert me is not None
        total = self.timeouts.total
        deadline = None if total is None else _AttemptDeadline(loop, me, total)
        run: _Run | None = None
        try:
            while item is not None:
                if item.run is not run:
                    if run is not None:
                        run.tasks.discard(me)
                    run = item.run
                    run.tasks.add(me)
                host = item.host
                if run.closed:  # handed to this worker just before its run was closed
                    host.active -= 1
                    self._active -= 1
                    self._retire(item)
                else:
                    start = time.perf_counter()  # uvloop's loop.time() ticks in milliseconds
                    left = item.left
                    if left is not None:  # a redirect hop: the same try, and its deadline, go on
                        item.left = None
                    else:
                        if item.attempts == 0:
                            item.first_start = start
                        item.attempts += 1
                        item.try_start = start
                    sent = True
                    try:
                        if deadline is not None:
                            item.due = deadline.start(left)
                        # Positional: keyword arguments cost more per call on CPython 3.11.
                        result = await exchange(
                            session,
                            item.request,
                            item.url,
                            caps,
                            keep_body,
                            item.hop,
                            foreign,
                            host.proxy,
                        )
                    except asyncio.CancelledError as cancelled:
                        if deadline is None or not deadline.stop():  # not the deadline's alone
                            if run.closed:
                                self._retire(item)
                            raise
                        failure, sent = classify(TimeoutError(), timeouts=self.timeouts)
                        if while_connecting(cancelled):  # nothing was sent: a connect failure
                            sent = False
                        result = Result(item.request, error=failure)
                    except Exception as exc:  # unexpected: INTERNAL, logged, never a dead run
                        failure, sent = classify(exc, timeouts=self.timeouts, proxy=host.proxy)
                        if failure.kind is ErrorKind.INTERNAL:
                            self._log_internal(exc)
                        result = Result(item.request, error=failure)
                    finally:
                        if deadline is not None:
                            deadline.stop()
                        host.active -= 1
                        self._active -= 1
                    try:
                        self._attempt_done(item, result, sent, start)
                    except Exception as exc:  # the last-resort guard: one result, the run goes on
                        self._log_internal(exc)
                        self._internal_result(item, exc)
                if self._closing:
                    return  # the fetcher has already released its idle workers
                item = self._pump(take=True)
                if item is None:
                    run.tasks.discard(me)
                    run = None
                    idle: asyncio.Future[_Item | None] = loop.create_future()
                    self._idle.append(idle)
                    item = await idle
        finally:
            if deadline is not None:
                deadline.close()

    def _attempt_done(self, item: _Item, result: Result, sent: bool, start: float) -> None:
        """Deliver the result of an attempt, follow its redirect, or schedule the
        next try. Whatever goes wrong in deciding which becomes the request's
        ``internal`` result: no response can end a run."""
        end = time.perf_counter()
        host = item.host
        if self._host_errors and (result.error is not None or host.failures):
            self._note_health(host, result, sent)
        delay = None
        hop: tuple[URL, HostKey, Hop] | None = None
        try:
            if result.error is not None:
                delay = self._retry_delay(item, result, sent, self._clock())
            elif result.status in REDIRECT_STATUSES and followed(result.headers, self.caps):
                step = self._next_hop(item, result)
                if isinstance(step, Failure):
                    result = Result(
                        item.request, result.status, result.final_url, result.headers, error=step
                    )
                else:
                    hop = step
        except Exception as exc:
            self._log_internal(exc)
            result = Result(item.request, error=_internal_failure(exc))
            delay = hop = None
        if delay is not None:
            heapq.heappush(self._timers, (self._clock() + delay, next(self._seq), item))
            if self._park(item):
                self._release(item.run)
        elif hop is not None:
            self._move(item, *hop)
        else:
            result.attempts = item.attempts
            result.elapsed = end - item.first_start
            result.last_attempt = end - item.try_start
            self._retire(item)
            self._deliver(item.run, item.index, result)
        if self._debug:
            _log_attempt(item, result, end - start, delay, hop is not None)
        if host.ready:
            self._make_runnable(host)

    def _retry_delay(self, item: _Item, result: Result, sent: bool, now: float) -> float | None:
        """Seconds until the next try of a failed attempt, or None when it is final.
        ``sent`` is False when the request surely never reached the server. A
        redirect hop is tried again by itself (the hops before it are not sent
        again), and only when its own method allows."""
        error = result.error
        assert error is not None
        policy = self.retry
        status = result.status
        retry_after = None
        if status in _COOL_DOWN_STATUSES:
            retry_after = parse_retry_after(result.headers.get("Retry-After"), time.time())
            if retry_after is not None and policy.respect_retry_after:
                # The server asked the whole host to slow down (RFC 9110 §10.2.3,
                # RFC 6585 §4): hold every request to it, not just this one.
                cool = min(retry_after, policy.retry_after_max)
                item.host.cool_until = max(item.host.cool_until, now + cool)
                if self._debug:
                    logger.debug(
                        "host %s:%s cools down for %.2f s (%s)", *item.host.key[1:], cool, status
                    )
        if item.attempts >= policy.attempts or item.run.closed:
            return None
        request, hop = item.request, item.hop
        if hop is None or hop.method == request.method:
            retry_safe = request.retry_safe
        else:  # a redirect changed the method (to GET)
            retry_safe = hop.method in IDEMPOTENT_METHODS
        if error.kind is ErrorKind.HTTP_STATUS:
            retryable = status in policy.retry_statuses and retry_safe
        elif error.kind in _RETRYABLE_KINDS:
            retryable = not sent or retry_safe
        elif error.kind is ErrorKind.PROXY:
            retryable = error.cause not in _PROXY_ANSWERS
        else:
            retryable = False
        if not retryable:
            return None
        return policy.delay(item.attempts, retry_after, self._rng)

    # -------------------------------------------------------------- parking

    def _host_waits(self, host: _Host) -> bool:
        """True when a request admitted now to ``host`` would wait: for its
        cool-down or a rate token, for one of the host's own slots (all in use
        while the fetcher has others: a slow host), or behind requests that do."""
        if host.sleeping or self._host_full(host):
            return True
        bucket = host.bucket
        if bucket is None and host.cool_until == -math.inf:
            return False
        if host.ready:
            return True
        now = self._clock()
        return host.cool_until > now or (bucket is not None and bucket.wait(now) > 0.0)

    def _host_full(self, host: _Host) -> bool:
        """Every slot of ``host`` is in use, and its limit is below the fetcher's
        (else its requests wait for any slot, as every host's do)."""
        return host.active >= self._per_host and self._per_host < self._concurrency

    def _park(self, item: _Item) -> bool:
        """Park a request that must wait, within the fetcher's budget: it gives
        its place in the run's window back (the caller frees it), so reading
        ahead goes on and requests to other hosts are not starved by waiters.
        Not with ordered output, whose buffered results the window bounds."""
        if item.parked or item.run.ordered or self._parked >= self._park_budget:
            return False
        item.parked = True
        self._parked += 1
        return True

    def _unpark(self, item: _Item, take_place: bool = False) -> None:
        """The parked ``item`` is sent (``take_place``: it takes a place in its
        run's window back, even past the window's size, which then reads less
        ahead until it is given back) or it is retired."""
        item.parked = False
        self._parked -= 1
        if take_place:
            run = item.run
            if run.feeder is None:
                run.debt += 1
            else:
                run.window.free -= 1

    def _unpark_all(self, run: _Run) -> None:
        for item in run.outstanding.values():
            if item.parked:
                self._unpark(item)
        self._unblock(run, force=True)

    def _release(self, run: _Run) -> None:
        """A request of ``run`` was parked after it was admitted: read one more."""
        if run.feeder is None:
            self._refill(run)
        else:
            run.window.release()

    def _overdrawn(self, run: _Run) -> bool:
        """Parked requests sent took back ``concurrency`` places or more beyond
        the window: what was sent and not yet taken by the caller is then at its
        bound, window + concurrency."""
        if run.feeder is None:
            return run.debt >= self._concurrency
        return run.window.free <= -self._concurrency

    def _hold_back(self, host: _Host, run: _Run) -> bool:
        """A parked request is next at ``host``: hold the host back while its run
        is overdrawn, so that results waiting for a slow caller stay bounded.
        True when held."""
        if not self._overdrawn(run):
            return False
        self._runnable.popleft()
        host.runnable = False
        host.sleeping = True  # in neither the round-robin queue nor the wake-up heap
        run.blocked.append(host)
        return True

    def _unblock(self, run: _Run, force: bool = False) -> None:
        """The caller took results (or the run ends): hosts held back go on."""
        if not force and self._overdrawn(run):
            return
        blocked, run.blocked = run.blocked, []
        for host in blocked:
            host.sleeping = False
            if host.ready:
                self._make_runnable(host)
        if blocked and not force:
            self._pump()

    # -------------------------------------------------------------- redirects

    def _next_hop(self, item: _Item, response: Result) -> tuple[URL, HostKey, Hop] | Failure:
        """Where a redirect response sends the request next, and what the hop sends
        (RFC 9110 §15.4): a 303, and a 301 or 302 of a POST, become a GET without
        body; 307 and 308 keep the method and body. Authorization,
        Proxy-Authorization and Cookie go only to the request's own origin
        (scheme, host and port), as curl does, and nowhere for a request that
        says ``send_credentials=False``; a URL's own credentials go only to
        its origin."""
        caps = self.caps
        if item.hops >= caps.max_redirects:
            return Failure(
                ErrorKind.TOO_MANY_REDIRECTS, f"more than {caps.max_redirects} redirects"
            )
        target = _redirect_target(item.url, response.headers["Location"])
        if isinstance(target, Failure):
            return target
        key = host_key(target)
        if self._guard is not None:
            refused = self._guard.check_host(key[1])
            if refused is not None:
                return Failure(ErrorKind.DENIED, f"redirect to {key[1]} refused: {refused}")
        request = item.request
        origin = parse_request_url(request)  # the request's own URL, parsed when admitted
        assert not isinstance(origin, Failure)
        previous = item.hop
        method = request.method if previous is None else previous.method
        body = request.body if previous is None else previous.body
        status = response.status
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
        dropped = _BODY_HEADERS if body is None and request.body is not None else frozenset()
        same_origin = key == host_key(origin)
        if not (same_origin and request.send_credentials):
            dropped |= _CREDENTIALS
        if same_origin and origin.raw_user is not None and target.raw_user is None:
            target = target.with_user(origin.user).with_password(origin.password)
        return target, key, self._hop(request, method, body, dropped)

    def _hop(
        self, request: Request, method: str, body: bytes | None, dropped: frozenset[str]
    ) -> Hop:
        """A hop of ``request`` that sends ``method`` and ``body``, and leaves out
        the headers named in ``dropped`` (lower case), its own and the fetcher's."""
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in dropped
        }
        skip: tuple[str, ...] = ()
        if dropped:
            skip = self._without_defaults(headers, dropped)
        return Hop(method, headers, body, skip)

    def _without_defaults(
        self, headers: dict[str, str], dropped: frozenset[str]
    ) -> tuple[str, ...]:
        """Add the fetcher's headers not ``dropped`` to a hop's ``headers`` (where
        they do not set them); return the names of those to leave out. Given a
        list to leave out, aiohttp would also put its own User-Agent in place of
        the fetcher's: every header the hop keeps is given with it."""
        given = {name.lower() for name in headers}
        skip = []
        for name, value in self._headers.items():
            lower = name.lower()
            if lower in dropped:
                skip.append(name)
            elif lower not in given:
                headers[name] = value
                given.add(lower)
        return tuple(skip)

    def _move(self, item: _Item, url: URL, key: HostKey, hop: Hop) -> None:
        """Send the next hop of ``item`` to its host: it takes that host's slot,
        tokens and cool-down like any request, ahead of the host's new ones."""
        old = item.host
        old.pending -= 1
        self._forget_if_idle(old)
        new = self._host(key)
        new.pending += 1
        item.host, item.url, item.hop = new, url, hop
        total = self.timeouts.total
        item.left = 0.0 if total is None else max(item.due - self._clock(), 0.0)
        item.hops += 1
        new.ready.appendleft(item)
        self._make_runnable(new)

    # -------------------------------------------------------------- results

    def _retire(self, item: _Item) -> None:
        """Forget an item; drop its host's state once nothing refers to it."""
        host = item.host
        host.pending -= 1
        item.run.outstanding.pop(item.index, None)
        if item.parked:
            self._unpark(item)
        self._forget_if_idle(host)

    def _forget_if_idle(self, host: _Host) -> None:
        if host.pending == 0 and host.active == 0 and self._loop is not None:
            self._evict(host, self._clock())

    def _evict(self, host: _Host, now: float) -> None:
        """Drop an idle host's state, keeping in the memory what must outlive it;
        or, while its rate bucket is not full again, keep it in a heap until it is."""
        if self._hosts.get(host.key) is not host:
            return
        bucket = host.bucket
        if bucket is not None and not bucket.idle(now):
            if not host.expiring:
                host.expiring = True
                heapq.heappush(self._expiring, (bucket.full_at, next(self._seq), host))
            return
        del self._hosts[host.key]
        down = host.down is not None and host.down_until > now
        if host.cool_until > now or host.failures or down:
            counted = now + DOWN_FOR if host.failures else now
            expires = max(host.cool_until, host.down_until, counted)
            kept = Remembered(
                cool_until=host.cool_until,
                failures=host.failures,
                failure=host.failure,
                down=host.down if down else None,
                down_until=host.down_until if down else -math.inf,
                expires=expires,
            )
            memory = self._memory if host.cool_until > now or down else self._counts
            memory.put(host.key, kept, now)

    # ------------------------------------------------------------ dead hosts

    def _note_health(self, host: _Host, result: Result, sent: bool) -> None:
        """Count an attempt's connection failure against its host, and mark the
        host down at ``host_errors`` in a row; an attempt that reached the host
        starts the count again."""
        error = result.error
        if error is not None and (
            error.kind in _DOWN_KINDS or (error.kind is ErrorKind.TIMEOUT and not sent)
        ):
            host.failures += 1
            host.failure = error.message
            if host.failures >= self._host_errors and host.down is None:
                where = shown_host(host.key)
                reason = error.message.removeprefix(f"cannot connect to {where}: ")
                host.down = shown(
                    f"skipped: {host.failures} consecutive connection failures to {where}"
                    f" (the last: {reason})"
                )
                host.down_until = self._clock() + DOWN_FOR
                if self._debug:
                    logger.debug("host %s is down: its requests are skipped", where)
        elif sent:
            host.failures = 0
            host.down = None

    def _skip_down(self, host: _Host) -> bool:
        """The requests queued for a host that is down fail at once, nothing sent;
        True. False when its down mark has expired (it is cleared)."""
        if host.down_until <= self._clock():
            host.down, host.failures = None, 0
            return False
        failure = Failure(ErrorKind.HOST_DOWN, host.down or "")
        ready = host.ready
        while ready:
            item = ready.popleft()
            result = Result(item.request, error=failure)
            result.attempts = item.attempts
            if item.attempts:
                result.elapsed = time.perf_counter() - item.first_start
            self._retire(item)
            self._deliver(item.run, item.index, result)
        return True

    def _log_internal(self, exc: BaseException) -> None:
        """An unexpected exception (a bug): its traceback under --debug, once per
        type of exception, so a run of millions does not repeat it."""
        if type(exc) not in self._internal_logged:
            self._internal_logged.add(type(exc))
            logger.debug("unexpected error, made an 'internal' result", exc_info=exc)

    def _internal_result(self, item: _Item, exc: BaseException) -> None:
        """The last resort, when handling an attempt's end itself failed: the
        request, if it is still waiting for its result, gets an internal one."""
        if item.run.outstanding.get(item.index) is item:
            self._retire(item)
            self._deliver(item.run, item.index, Result(item.request, error=_internal_failure(exc)))

    def _deliver(self, run: _Run, index: int, result: Result) -> None:
        if run.closed:
            return
        run.results.put_nowait((index, result))
        if run.fed and not run.outstanding:
            run.results.put_nowait(None)

    # -------------------------------------------------------------- shutdown

    def _cancel_outstanding(self, run: _Run) -> None:
        """On close, give every request still in flight a CANCELLED result."""
        if run.closed:
            return
        self._unpark_all(run)
        failure = Failure(ErrorKind.CANCELLED, "the fetcher closed before the request finished")
        for index, item in sorted(run.outstanding.items()):
            run.results.put_nowait(
                (index, Result(request=item.request, attempts=item.attempts, error=failure))
            )
        run.outstanding.clear()
        run.results.put_nowait(None)

    async def _close_run(self, run: _Run) -> None:
        if run.closed:
            return
        run.closed = True
        self._runs.discard(run)
        self._unpark_all(run)
        source, run.source = run.source, None
        if source is not None:
            await _close_source(source)  # a generator's finally (open files) runs now
        tasks = [task for task in (run.feeder, *run.tasks) if task is not None and not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._pump()


def _log_attempt(
    item: _Item, result: Result, seconds: float, delay: float | None, hopped: bool
) -> None:
    from fanout.records import redact_url

    error = result.error
    what = str(result.status) if error is None else f"{error.kind}: {error.message}"
    if hopped:
        then = f"redirect {item.hops} to {shown(redact_url(str(item.url)))}"
    else:
        then = "final" if delay is None else f"retry in {delay:.2f} s"
    url = redact_url(item.request.url)
    logger.debug("%s attempt %d: %s in %.1f ms, %s", url, item.attempts, what, seconds * 1000, then)


def _raise_source_error(exc: BaseException) -> NoReturn:
    """Raise what a run raises for an exception of its requests iterable."""
    if isinstance(exc, SourceError):
        raise exc
    message = shown(f"reading the requests raised {type(exc).__name__}: {exc}")
    raise SourceError(message) from exc


def _internal_failure(exc: BaseException) -> Failure:
    return Failure(ErrorKind.INTERNAL, shown(f"unexpected error: {exc!r}"), type(exc).__name__)


def _redirect_target(base: URL, location: str) -> URL | Failure:
    """The URL a Location header points to, resolved against ``base`` and checked
    like any input URL (only http and https, a valid host and port). A message
    quoting it hides its credentials before it is cut: a cut before a long
    password's "@" would leave its start where redaction cannot see it."""
    from fanout.records import redact_text, redact_url

    try:
        target = URL(location)
        if not target.absolute:
            target = base.join(target)
        text = str(target.with_fragment(None))
    except (ValueError, TypeError) as exc:
        message = redact_text(f"redirect to an invalid URL: {exc}")
        return Failure(ErrorKind.INVALID_URL, shown(message))
    parsed = parse_url(text)
    if isinstance(parsed, Failure):
        message = f"redirect to {redact_url(text)!r}: {parsed.message}"
        return Failure(parsed.kind, shown(message))
    return parsed


async def _close_source(iterator: Iterator[RequestLike] | AsyncIterator[RequestLike]) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()
    aclose = getattr(iterator, "aclose", None)
    if callable(aclose):
        await aclose()


def _not_a_request(raw: object) -> Failure:
    kind = type(raw).__name__
    return Failure(ErrorKind.INVALID_URL, f"expected a URL string or a fanout.Request, got {kind}")
