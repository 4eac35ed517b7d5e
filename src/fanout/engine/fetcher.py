"""The engine: requests in, exactly one result out for each.

Data flow, all on one event loop::

    source ─► read-ahead ─► per-host ready queues ─► dispatch ─► attempt tasks ─► results
              (window)            ▲                  (slots, tokens,               │
                                  └── retry timers ◄── cool-downs)  ◄──────────────┘

The read-ahead of a sync source is done by the consumer itself, one request
for each result it takes, so a request is made as a result is dropped (see
``Fetcher._refill``). An async source is read by a feeder task in batches.

The scheduling (host slots, rate gates, cool-downs, retry timers, dead hosts,
the parking budget) is :class:`fanout.engine.scheduling.Scheduler`'s, which knows
nothing of HTTP; the Fetcher does the I/O. There is no scheduler task:
dispatch runs whenever something changes (a request is admitted, an attempt
ends, a timer fires) and starts every request whose host slot, global slot,
rate tokens and not-before time all allow it. A request waiting for a retry,
a host's cool-down or a rate token sits in a heap or a queue and holds no
slot. It is also parked: it gives its place in
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
import logging
import random
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import TYPE_CHECKING, Final, NoReturn

import aiohttp
from yarl import URL

from fanout.config import DEFAULT_USER_AGENT, FetcherConfig, FetcherOptions, resolve_config
from fanout.engine.hoststate import DOWN_FOR, HostMemory, shown_host
from fanout.engine.hoststats import HostSnapshot
from fanout.engine.ratelimit_headers import TRIGGERS, parse_rate_limit
from fanout.engine.retry_after import parse_retry_after
from fanout.engine.robots import (
    DEADLINE,
    MAX_BYTES,
    Get,
    RobotsCache,
    Rules,
    fetch_rules,
    product_token,
    session_get,
)
from fanout.engine.scheduling import Host, Scheduler
from fanout.errors import ConfigError, SourceError
from fanout.models import IDEMPOTENT_METHODS, ErrorKind, Failure, Request, Result
from fanout.net.fdlimit import fit_concurrency
from fanout.net.guard import GuardedResolver, HostGuard
from fanout.net.proxy import proxies_for
from fanout.net.tls import tls_context
from fanout.net.transport import (
    CREDENTIAL_HEADERS,
    REDIRECT_STATUSES,
    AiohttpTransport,
    ForeignSession,
    Hop,
    followed,
    make_session,
    session_problem,
)
from fanout.net.transports import Transport
from fanout.runtime import _collector_tuned, loop_clock
from fanout.safetext import shown
from fanout.urls import HostKey, host_key, parse_request_url, parse_url, redact_text, redact_url

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.12

__all__ = ["DEFAULT_USER_AGENT", "Fetcher", "RequestLike", "Source"]

logger = logging.getLogger("fanout")

RequestLike = str | Request
Source = Iterable[RequestLike] | AsyncIterable[RequestLike]

_RETRYABLE_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.PROTOCOL})
_COOL_DOWN_STATUSES = frozenset({429, 503})
_RATELIMIT, _REMAINING, _X_REMAINING = TRIGGERS
# Failures that say the host cannot be reached (with a connect deadline, which
# is a TIMEOUT not sent): host_errors of them in a row mark it down.
_DOWN_KINDS = frozenset({ErrorKind.CONNECT, ErrorKind.DNS, ErrorKind.TLS})
_CREDENTIALS = frozenset(name.lower() for name in CREDENTIAL_HEADERS)
# The causes of a proxy failure where the proxy answered (a 407, a refused
# CONNECT, a malformed answer to it): not retried, as the proxy would answer the
# same. A proxy that could not be reached is tried again, as a connection failure is.
_PROXY_ANSWERS = frozenset({None, "ClientHttpProxyError", "ClientResponseError"})
# A hop that drops the body drops the headers that describe it.
_BODY_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding"}
)
_END: Final = object()


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

    def __init__(
        self, run: _Run, index: int, request: Request, url: URL, host: Host[_Item]
    ) -> None:
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
    of ``aiohttp_internals._LazyReadDeadline``, not shared with it: there the deadline
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


class _Robots:
    """robots.txt for a Fetcher with ``robots=True``: the rules of the hosts
    (bounded), the requests waiting for a host's robots.txt (each with True
    when it is a redirect hop to that host, not yet moved there) and the
    fetches under way, at most ``concurrency`` at once."""

    __slots__ = ("cache", "fetches", "get", "headers", "skip", "slots", "token", "waiting")

    def __init__(self, token: str, headers: dict[str, str], concurrency: int) -> None:
        self.token = token
        self.cache = RobotsCache()
        self.waiting: dict[HostKey, list[tuple[_Item, bool]]] = {}
        self.fetches: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(concurrency)
        # robots.txt is public: it is asked for without credentials
        self.headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
        self.skip = tuple(k for k in headers if k.lower() in _CREDENTIALS)
        self.get: Get | None = None  # made on the transport, on first use


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
        self.blocked: list[Host[_Item]] = []  # hosts whose next request is parked, held back
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
    if config.transport == "curl":
        raise ConfigError("session= (an aiohttp session) cannot be combined with transport 'curl'")
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

        The guard for services (:mod:`fanout.net.guard`): ``deny_private=True`` refuses
        loopback, private, link-local and multicast addresses, checked on the
        addresses connected to, after DNS; ``allow_hosts`` (only these) and
        ``deny_hosts`` (never these) take host name globs and networks. A refused
        request is a ``denied`` result and nothing is sent. ``nameservers``
        ("IP" or "IP:PORT") replace the system's DNS servers (see
        :mod:`fanout.net.dns` for the resolver and its cache, ``Timeouts.dns`` for
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
        ``https_proxy`` and ``no_proxy`` are read here (:mod:`fanout.net.proxy`).
        A proxy that cannot be reached or refuses is a ``proxy`` result.
        ``cookies=True`` keeps cookies, each for its own origin
        (:mod:`fanout.net.cookies`).

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
        self._server_hints = config.server_hints
        self._adapt = config.adapt
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
        self._internal_logged: set[type[BaseException]] = set()
        given = dict(config.headers or {})
        if not any(name.lower() == "user-agent" for name in given):  # a given one wins
            given = {"User-Agent": config.user_agent, **given}
        self._headers = given
        self._robots: _Robots | None = None
        if config.robots:
            agent = next(v for k, v in given.items() if k.lower() == "user-agent")
            self._robots = _Robots(product_token(agent), given, config.limits.concurrency)
        self._keep_body = config.keep_body
        self._tune_collector = config.tune_collector
        self._collector = contextlib.ExitStack()
        self._rng = random.Random(config.seed)
        self._transport: Transport | None = None
        self._group: asyncio.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic  # the loop's, once entered
        self._closing = False
        # Host slots, rate gates, cool-downs, retry timers, parking: see fanout.engine.scheduling.
        self._sched: Scheduler[_Item] = Scheduler(
            self.limits,
            host_errors=config.host_errors,
            clock=self._clock,
            arm=self._arm,
            start=self._start,
            drop=self._retire,
            hold=self._hold_back,
            unparked=self._take_place,
            skip=self._skip,
            down_for=DOWN_FOR,
            memory=HostMemory(),
            counts=HostMemory(),
            route=None if self._proxies is None else self._proxies.for_target,
        )
        self._read = self._sched.reads.append  # bound once: it runs for every request
        self._timer: asyncio.TimerHandle | None = None
        self._runs: set[_Run] = set()
        self._idle: list[asyncio.Future[_Item | None]] = []
        self._debug = logger.isEnabledFor(logging.DEBUG)  # --debug: a line per retry and result
        self._concurrency = self.limits.concurrency

    async def __aenter__(self) -> Fetcher:
        if self._group is not None:
            raise RuntimeError("a Fetcher can be entered only once")
        self._loop = asyncio.get_running_loop()
        self._clock = self._sched.clock = loop_clock(self._loop)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        guard = self._guard
        self._fit_concurrency()
        if not self.config.verify:
            logger.warning(
                "TLS certificates are not checked (verify=False, --insecure): anyone on"
                " the network path can read and change the traffic"
            )
        if self.config.transport == "curl":
            from fanout.net.curl import CurlTransport

            self._transport = CurlTransport(
                concurrency=self._concurrency,
                timeouts=self.timeouts,
                headers=self._headers,
                cacert=self.config.cacert,
                verify=self.config.verify,
                client_cert=self.config.client_cert,
                http2=self.config.http2,
                cookies=self.config.cookies,
                # Its name patterns are checked per hop here; its address checks
                # where libcurl connects (never beside a proxy: proxies_for refuses).
                guard=guard if guard is not None and guard.address_checks else None,
                proxies=self._proxies is not None,
                nameservers=self._nameservers,
            )
        elif self._given_session is not None:
            foreign = ForeignSession(self._given_session, self.timeouts, self._headers)
            self._transport = AiohttpTransport(self._given_session, None, foreign)
        else:
            # Through a proxy only name patterns are left (proxies_for refuses
            # the others), checked on names: the resolver then resolves the proxy.
            if self._proxies is not None:
                guard = None
            wrap = None if guard is None else lambda inner: GuardedResolver(inner, guard)
            session, resolver = make_session(
                concurrency=self._concurrency,
                timeouts=self.timeouts,
                headers=self._headers,
                wrap_resolver=wrap,
                nameservers=self._nameservers,
                ssl=self._ssl,
                cookies=self.config.cookies,
            )
            self._transport = AiohttpTransport(session, resolver)
        if self._tune_collector:  # last: nothing after it can fail and skip __aexit__
            self._collector.enter_context(_collector_tuned())
        return self

    def _fit_concurrency(self) -> None:
        """Lower the concurrency to what the process's file descriptor limit allows
        (see :mod:`fanout.net.fdlimit`), with a warning: a library does not change
        the limits of the process it runs in."""
        concurrency, lowered = fit_concurrency(self._concurrency)
        if lowered is not None:
            logger.warning("%s (raise it, or pass a lower Limits.concurrency)", lowered)
            self._concurrency = self._sched.concurrency = concurrency

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._group is not None
        assert self._transport is not None
        try:
            for run in list(self._runs):
                self._cancel_outstanding(run)
            self._closing = True
            self._sched.close()
            if self._robots is not None:
                for fetch in list(self._robots.fetches):
                    fetch.cancel()
            if self._timer is not None:
                self._timer.cancel()
            for run in list(self._runs):
                await self._close_run(run)
            for idle in self._idle:
                if not idle.done():
                    idle.set_result(None)  # idle workers end
            self._idle.clear()
        finally:
            try:
                await self._transport.close()
            finally:
                self._collector.close()
        # Every task is done by now. The body's own exception is not handed to the
        # group, which would wrap it in an ExceptionGroup; it propagates as it is.
        await self._group.__aexit__(None, None, None)
        return None

    # ------------------------------------------------------------------ API

    @property
    def in_flight(self) -> int:
        """Requests being sent or received right now."""
        return self._sched.active

    @property
    def dns_stats(self) -> dict[str, int] | None:
        """What the resolver did so far (lookups, cache hits, coalesced,
        queries, failures; see :class:`fanout.net.dns.DNSStats`), or None when no
        name was resolved."""
        return None if self._transport is None else self._transport.dns_stats()

    @property
    def waiting(self) -> int:
        """Requests waiting for a retry (backoff, Retry-After)."""
        return self._sched.waiting

    @property
    def hosts_held(self) -> int:
        """Hosts whose state the fetcher holds now: those with requests queued or
        in flight, and idle ones until their rate bucket is full again. What
        must outlive them (a cool-down, failure counts) is kept apart, for at
        most 10,000 hosts (and 10,000 more with only a failure count)."""
        return self._sched.hosts_held()

    def host_stats(self, top: int = 10) -> list[HostSnapshot]:
        """A snapshot of the ``top`` busiest hosts (requests in flight, then
        recent requests per second, then requests done), one dict each:

        - ``host``: ``host:port``; ``in_flight``: attempts being made now;
        - ``slots``: the attempts it may have in flight (``limits.per_host``, or
          fewer once adapted; None: no limit but the fetcher's);
        - ``requests``: attempts ended (retries and redirect hops included);
        - ``requests_per_s``: attempts ended per second over the last 10 s;
        - ``rate_limit``, ``rate_source``: the requests per second the host is
          held to now (None: not held), and where that comes from: ``"user"``
          (``limits.per_host_rate``), ``"robots"`` (its Crawl-delay or
          Request-rate), ``"server"`` (the quota its responses advertise) or
          ``"adapted"`` (cut on its 429s, 503s and timeouts: ``adapt=True``);
        - ``cool_down_s``: seconds until its cool-down (or spent quota) ends;
        - ``throttled``: 429 responses; ``p50_ms``, ``p95_ms``: attempt
          latency over its last 128 attempts.

        Figures are kept for the 1,024 hosts most recently started, so memory
        stays flat however many hosts a run has."""
        return self._sched.snapshot(top, time.perf_counter())

    @property
    def least_time_left(self) -> float:
        """Seconds the requests read so far need at least, by their hosts' rate
        limits: for each host held to a rate (its own, its robots.txt's or
        its advertised quota), the time until the last of its requests not
        yet started may start, after any cool-down; the largest (0.0 when no
        host is held to a rate). Requests not yet read from the source are
        not counted (see :meth:`time_left`)."""
        return self._sched.least_time_left()

    def time_left(self, remaining: int) -> float:
        """Seconds the hosts held to a rate are expected to need, given that
        ``remaining`` requests are not yet done in all (read or not): as
        :attr:`least_time_left`, with the requests not yet read counted at
        each host in its share of the requests read lately (the smaller of its
        shares of the last 1,024 and the last 256 read). An estimate, for an
        ETA when the number of requests is known."""
        return self._sched.least_time_left(remaining)

    @property
    def parked(self) -> int:
        """Requests waiting (for a retry, a host's cool-down or a rate token)
        without a place in the read-ahead window: at most ``limits.parked``."""
        return self._sched.parked

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
        :class:`fanout.inputs.blocking_input.ThreadedReader`); an async one is read
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
        if isinstance(requests, AsyncIterable):
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
        the CPU of benchmarks/latency.py on uvloop). This way is kept whatever
        the collector's threshold (see docs/performance.md)."""
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

    async def _feed(self, run: _Run, requests: AsyncIterable[RequestLike]) -> None:
        """Read an async source in a task of its own, never more than the run's
        window ahead of the results taken; woken once a quarter of it is free."""
        window = run.window
        iterator: AsyncIterator[RequestLike] | None = None
        try:
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
        sched = self._sched
        self._read(key)
        host = sched.hosts.get(key) or sched.host(key)
        item = _Item(run, index, request, parsed, host)
        if not request.send_credentials:  # sent as a hop that leaves them out
            item.hop = self._hop(request, request.method, request.body, _CREDENTIALS)
        run.outstanding[index] = item
        if self._robots is not None and not self._robots_allow(item, key, False):
            return False
        return sched.add(item)

    # -------------------------------------------------------------- dispatch

    def _start(self, item: _Item) -> None:
        """The scheduler started ``item``: an idle worker sends it, or a new one."""
        if self._idle:
            self._idle.pop().set_result(item)
        else:
            assert self._group is not None
            self._group.create_task(self._worker(item), name="fanout-worker")

    def _arm(self, when: float) -> None:
        """The scheduler's next wake-up, at ``when`` on the loop's clock."""
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._sched.wake()

    # -------------------------------------------------------------- attempts

    async def _worker(self, item: _Item | None) -> None:
        """Run items until told to stop (None). After each item the worker starts
        the next startable one itself, with no task switch; when there is none it
        waits, idle, on a future of its own. It stays in its run's task set (so
        closing the run cancels it) while it works on that run's items. The
        attempt is made here, not in a helper coroutine: a coroutine layer costs
        every request at each of its resumptions."""
        loop = self._loop
        transport = self._transport
        assert loop is not None
        assert transport is not None
        exchange = transport.exchange  # bound once per worker: no lookup per request
        caps, keep_body = self.caps, self._keep_body
        me = asyncio.current_task()
        assert me is not None
        total = self.timeouts.total
        deadline = None if total is None else _AttemptDeadline(loop, me, total)
        sched = self._sched
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
                    sched.active -= 1
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
                            item.request, item.url, caps, keep_body, item.hop, host.route
                        )
                    except asyncio.CancelledError as cancelled:
                        if deadline is None or not deadline.stop():  # not the deadline's alone
                            if run.closed:
                                self._retire(item)
                            raise
                        failure, sent = transport.classify(TimeoutError(), self.timeouts)
                        if transport.unsent(cancelled):  # nothing was sent: a connect failure
                            sent = False
                        result = Result(item.request, error=failure)
                    except Exception as exc:  # unexpected: INTERNAL, logged, never a dead run
                        failure, sent = transport.classify(exc, self.timeouts, host.route)
                        if failure.kind is ErrorKind.INTERNAL:
                            self._log_internal(exc)
                        result = Result(item.request, error=failure)
                    finally:
                        if deadline is not None:
                            deadline.stop()
                        host.active -= 1
                        sched.active -= 1
                    try:
                        self._attempt_done(item, result, sent, start)
                    except Exception as exc:  # the last-resort guard: one result, the run goes on
                        self._log_internal(exc)
                        self._internal_result(item, exc)
                if self._closing:
                    return  # the fetcher has already released its idle workers
                item = sched.pump(True)
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
        counters = host.counters
        counters.requests += 1
        if counters.requests == 1:
            counters.first = start
        if result.status == 429:
            counters.throttled += 1
        counters.ends.append(end)
        counters.latencies.append(end - start)
        if self._host_errors and (result.error is not None or host.failures):
            self._note_health(host, result, sent)
        if host.adaptive is not None or (self._adapt and result.error is not None):
            self._note_congestion(host, result, start, end)
        if self._server_hints:
            headers = result.headers  # inlined has_rate_limit_headers: this runs per response
            if _RATELIMIT in headers or _REMAINING in headers or _X_REMAINING in headers:
                self._note_quota(host, headers)
        delay: float | None = None
        hop: tuple[URL, HostKey, Hop] | None = None
        try:
            if result.error is not None:
                retry = self._retry_delay(item, result, sent)
                if isinstance(retry, Failure):  # asked to wait past retry_after_max
                    result.error = retry
                else:
                    delay = retry
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
            if self._sched.retry_later(item, delay):
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
            self._sched.make_runnable(host)

    def _note_congestion(self, host: Host[_Item], result: Result, start: float, end: float) -> None:
        """With ``adapt``: a 429 or 503 without Retry-After, or a timeout, cuts
        the host's rate and slots; any other response, to a host that adapted,
        raises them (see :mod:`fanout.engine.adapt`). A 429 or 503 with a
        Retry-After does neither: its cool-down is the server's answer (unless
        ``retry.respect_retry_after`` is off: then it is a bare one)."""
        error = result.error
        if error is None or (
            error.kind is ErrorKind.HTTP_STATUS and result.status not in _COOL_DOWN_STATUSES
        ):
            if host.adaptive is not None:
                self._sched.relieved(host, end)  # an answer, whatever its status
            return
        if error.kind is not ErrorKind.TIMEOUT and (
            result.status not in _COOL_DOWN_STATUSES
            or (
                self.retry.respect_retry_after
                and parse_retry_after(result.headers.get("Retry-After"), time.time()) is not None
            )
        ):
            return  # another failure, or a cool-down the server asked for (and was granted)
        if self._sched.congested(host, end, start, error.message) and self._debug:
            adaptive = host.adaptive
            assert adaptive is not None
            logger.debug(
                "host %s:%s adapts to %.2f req/s, %d in flight (%s)",
                *host.key[1:],
                adaptive.rate,
                adaptive.slots,
                result.status or error.kind,
            )

    def _note_quota(self, host: Host[_Item], headers: Mapping[str, str]) -> None:
        """The quota a response advertises paces its host (see
        :meth:`Scheduler.server_quota`), its reset capped at ``retry_after_max``.
        Without a reset there is no telling when to go on: ignored."""
        hint = parse_rate_limit(headers, time.time())
        if hint is None or hint.reset is None:
            return
        reset = min(hint.reset, self.retry.retry_after_max)
        self._sched.server_quota(host, hint.remaining, reset, hint.limit)
        if self._debug and hint.remaining <= host.active:
            logger.debug(
                "host %s:%s: the server says %d left, resets in %.2f s",
                *host.key[1:],
                hint.remaining,
                reset,
            )

    def _retry_delay(self, item: _Item, result: Result, sent: bool) -> float | Failure | None:
        """Seconds until the next try of a failed attempt, or None when it is final.
        ``sent`` is False when the request surely never reached the server. A
        redirect hop is tried again by itself (the hops before it are not sent
        again), and only when its own method allows. A retryable status whose
        Retry-After asks for more than ``retry_after_max`` is final at once:
        the failure returned names the header (retrying early would only be
        refused again)."""
        error = result.error
        assert error is not None
        policy = self.retry
        status = result.status
        retry_after = None
        too_long = False
        if status in _COOL_DOWN_STATUSES:
            retry_after = parse_retry_after(result.headers.get("Retry-After"), time.time())
            if retry_after is not None and policy.respect_retry_after:
                too_long = retry_after > policy.retry_after_max
                # The server asked the whole host to slow down (RFC 9110 §10.2.3,
                # RFC 6585 §4): hold every request to it, not just this one.
                cool = min(retry_after, policy.retry_after_max)
                self._sched.cool_down(item.host, cool)
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
            if retryable and too_long:
                return _too_long_to_wait(error, result.headers, policy.retry_after_max)
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

    def _take_place(self, item: _Item) -> None:
        """The parked ``item`` is sent: it takes a place in its run's window back,
        even past the window's size, which then reads less ahead until it is
        given back."""
        run = item.run
        if run.feeder is None:
            run.debt += 1
        else:
            run.window.free -= 1

    def _unpark_all(self, run: _Run) -> None:
        for item in run.outstanding.values():
            if item.parked:
                self._sched.unpark(item)
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

    def _hold_back(self, item: _Item, host: Host[_Item]) -> bool:
        """The parked ``item`` is next at ``host``: hold the host back while its
        run is overdrawn, so that results waiting for a slow caller stay bounded.
        True when held."""
        run = item.run
        if not self._overdrawn(run):
            return False
        run.blocked.append(host)
        return True

    def _unblock(self, run: _Run, force: bool = False) -> None:
        """The caller took results (or the run ends): hosts held back go on."""
        if not force and self._overdrawn(run):
            return
        blocked, run.blocked = run.blocked, []
        self._sched.resume(blocked)
        if blocked and not force:
            self._sched.pump()

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
        item.url, item.hop = url, hop
        total = self.timeouts.total
        item.left = 0.0 if total is None else max(item.due - self._clock(), 0.0)
        item.hops += 1
        if self._robots is not None and not self._robots_allow(item, key, True):
            return
        self._sched.move(item, key)

    # ----------------------------------------------------------- robots.txt

    def _robots_allow(self, item: _Item, key: HostKey, moving: bool) -> bool:
        """With ``robots=True``: True when ``item`` may go to the host ``key`` now
        (its robots.txt's pace applied to it; a redirect hop with a pace to
        apply is moved there here, and False returned). Else it is refused with a
        ``robots`` result, or waits, holding no slot, for the host's robots.txt,
        fetched once however many wait for it. ``moving``: ``item`` is a redirect
        hop to ``key``, still counted at its previous host; a new request is
        counted at its host while it waits."""
        robots = self._robots
        assert robots is not None
        rules = robots.cache.get(key, self._clock())
        if rules is None:
            if not moving:
                item.host.pending += 1
            waiting = robots.waiting.get(key)
            if waiting is not None:
                waiting.append((item, moving))
                return False
            robots.waiting[key] = [(item, moving)]
            assert self._group is not None
            fetch = self._group.create_task(self._fetch_robots(key), name="fanout-robots")
            robots.fetches.add(fetch)
            fetch.add_done_callback(robots.fetches.discard)
            return False
        refusal = rules.refusal(str(item.url))
        if refusal is not None:
            if not moving:
                item.host.pending += 1
            self._fail_unsent(item, ErrorKind.ROBOTS, refusal)
            return False
        if rules.rate is not None:
            if moving:
                self._sched.move(item, key)
                self._sched.limit_rate(item.host, rules.rate)
                return False  # moved here
            self._sched.limit_rate(item.host, rules.rate)
        return True

    async def _fetch_robots(self, key: HostKey) -> None:
        """Fetch the robots.txt of ``key``, then send or refuse what waited for it."""
        robots = self._robots
        assert robots is not None
        get = robots.get
        if get is None:
            get = robots.get = self._robots_get(robots)
        total = self.timeouts.total
        guard = self._guard
        async with robots.slots:
            rules = await fetch_rules(
                get,
                key,
                robots.token,
                self._clock,
                deadline=DEADLINE if total is None else min(DEADLINE, total),
                check_host=None if guard is None else guard.check_host,
            )
        robots.cache.put(key, rules)
        if self._debug:
            logger.debug("%s fetched (rate %s)", rules.source, rules.rate)
        for item, moving in robots.waiting.pop(key, []):
            try:
                self._robots_ready(item, key, moving, rules)
            except Exception as exc:  # the last-resort guard: one result, the run goes on
                self._log_internal(exc)
                self._internal_result(item, exc)
        self._sched.pump()

    def _robots_get(self, robots: _Robots) -> Get:
        """How robots.txt is fetched: on the transport's own session or multi."""
        transport = self._transport
        if isinstance(transport, AiohttpTransport):
            return session_get(
                transport.session,
                headers=robots.headers,
                skip_headers=robots.skip,
                proxy_for=None if self._proxies is None else self._proxies.for_target,
            )
        from fanout.net.curl import CurlTransport

        assert isinstance(transport, CurlTransport)
        headers, skip, get_prefix = robots.headers, robots.skip, transport.get_prefix
        proxy_for = None if self._proxies is None else self._proxies.for_target

        def get(url: URL) -> Awaitable[tuple[int, str | None, bytes]]:
            key = (url.scheme, url.raw_host or "", url.port or 0)
            proxy = None if proxy_for is None else proxy_for(key)
            return get_prefix(url, headers, skip, MAX_BYTES, proxy)

        return get

    def _robots_ready(self, item: _Item, key: HostKey, moving: bool, rules: Rules) -> None:
        """The robots.txt ``item`` waited for is in: refuse it or send it."""
        run = item.run
        if run.closed:
            self._retire(item)
            return
        refusal = rules.refusal(str(item.url))
        if refusal is not None:
            self._fail_unsent(item, ErrorKind.ROBOTS, refusal)
            return
        if moving:
            self._sched.move(item, key)
        else:
            item.host.pending -= 1
        if rules.rate is not None:
            self._sched.limit_rate(item.host, rules.rate)
        if not moving and self._sched.add(item):
            self._release(run)

    def _fail_unsent(self, item: _Item, kind: ErrorKind, reason: str) -> None:
        """``item`` fails at once with ``kind``, nothing (more) sent: robots.txt
        disallows it, or its host is down."""
        result = Result(item.request, error=Failure(kind, reason))
        result.attempts = item.attempts
        if item.attempts:
            result.elapsed = time.perf_counter() - item.first_start
        self._retire(item)
        self._deliver(item.run, item.index, result)

    # -------------------------------------------------------------- results

    def _retire(self, item: _Item) -> None:
        """Forget an item; drop its host's state once nothing refers to it."""
        item.run.outstanding.pop(item.index, None)
        self._sched.retire(item)

    # ------------------------------------------------------------ dead hosts

    def _note_health(self, host: Host[_Item], result: Result, sent: bool) -> None:
        """Count an attempt's connection failure against its host, and mark the
        host down at ``host_errors`` in a row; an attempt that reached the host
        starts the count again."""
        error = result.error
        if error is not None and (
            error.kind in _DOWN_KINDS or (error.kind is ErrorKind.TIMEOUT and not sent)
        ):
            if self._sched.host_failed(host, error.message) and self._debug:
                logger.debug("host %s is down: its requests are skipped", shown_host(host.key))
        elif sent and not (
            self._adapt
            and (
                result.status in _COOL_DOWN_STATUSES
                or (error is not None and error.kind is ErrorKind.TIMEOUT)
            )
        ):
            # with adapt, a 429, 503 or timeout is no sign of health: it must not
            # lift a down mark that rounds of them made (see Scheduler.congested)
            self._sched.host_reached(host)

    def _skip(self, item: _Item, reason: str) -> None:
        """``item``'s host is down (the scheduler's call)."""
        self._fail_unsent(item, ErrorKind.HOST_DOWN, reason)

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
        self._sched.pump()


def _too_long_to_wait(error: Failure, headers: Mapping[str, str], limit: float) -> Failure:
    """The failure of a response whose Retry-After asks for more than ``limit``
    seconds: its own kind and message, and the header's value (cut short)."""
    value = shown(headers.get("Retry-After", "").strip(), 40)
    return Failure(
        error.kind,
        f"{error.message}; Retry-After: {value} exceeds retry_after_max ({limit:g} s)",
        error.cause,
    )


def _log_attempt(
    item: _Item, result: Result, seconds: float, delay: float | None, hopped: bool
) -> None:
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
