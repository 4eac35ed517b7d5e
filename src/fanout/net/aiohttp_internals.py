"""Every use of aiohttp's (and pycares's) private internals, each with a fallback.

The rest of fanout imports only what this module exports. Each hook below
relies on names aiohttp (3.14) or pycares (5.2) do not promise to keep; each
checks for them once, at import (or on the first object it patches, where
the names live on instances), and where one is missing or changed uses its
fallback, which needs only public API and keeps fanout's guarantees, at
some cost:

=================  ============================  ==================================
hook               what it does                  fallback
=================  ============================  ==================================
``pool``           idle keep-alive connections   no keep-alive: every connection
                   capped over all hosts, those  closed after its request
                   being closed counted against  (``force_close=True``): the same
                   the limit                     socket bound, slower
``retry``          aiohttp's hidden resend of a  a per-request client middleware
                   request on a dropped          that lets a request through once
                   connection turned off         and raises the first failure again
``read_deadline``  one read-deadline timer per   aiohttp's own timer, re-armed at
                   connection, moved lazily      every chunk
``connect_frame``  a deadline during connecting  such a deadline counts as sent (only
                   counted as "not sent"         idempotent requests retried)
``dns_cache``      c-ares's own query cache off  c-ares's cache stays (it honours
                                                 TTLs too, capped at an hour)
=================  ============================  ==================================

Beside the hooks, :func:`cookie_header` builds the curl transport's Cookie
header with aiohttp's own (private) cookie helpers, so that both transports
send the same one; its fallback parses a request's own Cookie header with the
standard library (stricter on malformed pairs).

``FANOUT_AIOHTTP_INTERNALS=off`` in the environment (read at import) forces
every fallback; ``make test-fallback`` runs the tests that exercise them so.
:data:`IN_USE` says which hooks are in use; :func:`fallbacks` names the others
with the reason, and each new session logs it at debug level.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from http.cookies import BaseCookie, Morsel, SimpleCookie
from types import CodeType, MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler

from fanout.runtime import loop_clock

if TYPE_CHECKING:
    import pycares

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "FORCED_OFF",
    "HOOKS",
    "IN_USE",
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_METHODS",
    "cookie_header",
    "fallbacks",
    "log_fallbacks",
    "no_hidden_retry",
    "pooled_connector",
    "private_hooks_missing",
    "send_once",
    "use_lazy_read_deadline",
    "while_connecting",
    "without_query_cache",
]

logger = logging.getLogger("fanout")

ENVIRONMENT_VARIABLE: Final = "FANOUT_AIOHTTP_INTERNALS"
FORCED_OFF: Final = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in {
    "off",
    "0",
    "no",
    "false",
}
"""Whether the environment forces every fallback."""

HOOKS: Final = ("pool", "retry", "read_deadline", "connect_frame", "dns_cache")
"""The hooks, by name (see the table above)."""

_FORCED: Final = f"forced by {ENVIRONMENT_VARIABLE}=off"

# ------------------------------------------------------------------ pool

# aiohttp's private methods that _IdleCapped overrides or calls, with the
# parameters it relies on (written against aiohttp 3.14).
PRIVATE_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "_release": ("key", "protocol", "should_close"),
    "_available_connections": ("key",),
    "_release_waiter": (),
}
# Its private attributes, found on a connector once made: name, type. ``_conns``
# maps a connection key to a deque of (protocol, time released), oldest first.
PRIVATE_ATTRIBUTES: Final[dict[str, type]] = {"_conns": dict, "_acquired": set, "_closed": bool}


def private_hooks_missing(
    connector_class: type[aiohttp.TCPConnector] = aiohttp.TCPConnector,
) -> list[str]:
    """The private methods of ``connector_class`` that the idle-capped connector
    needs and does not find (or finds with other parameters); empty when all are there."""
    missing = []
    for name, parameters in PRIVATE_METHODS.items():
        method = getattr(connector_class, name, None)
        if not callable(method):
            missing.append(name)
            continue
        try:
            found = inspect.signature(method).parameters
        except (TypeError, ValueError):
            missing.append(name)
            continue
        if any(parameter not in found for parameter in parameters):
            missing.append(name)
    return missing


def _attributes_missing(connector: aiohttp.TCPConnector) -> list[str]:
    return [
        name
        for name, kind in PRIVATE_ATTRIBUTES.items()
        if not isinstance(getattr(connector, name, None), kind)
    ]


# aiohttp's own, called without super(): on CPython 3.11 super() makes an
# object at every call. None where missing (then _IdleCapped is not used).
_aiohttp_release: Any = getattr(aiohttp.TCPConnector, "_release", None)


def _released(item: tuple[Any, deque[tuple[ResponseHandler, float]]]) -> float:
    return item[1][0][1]  # when the oldest idle connection of a host was released


class _IdleCapped(aiohttp.TCPConnector):
    """aiohttp's connector with idle connections capped in total (least recently
    used closed first) and connections being closed counted against ``limit``.

    aiohttp keeps the idle connections of each host in a deque, oldest first,
    with the time each was released, and takes the oldest first: the least
    recently used connection of all is the first of one of the deques. There
    are at most ``idle_cap`` deques, so finding it costs little, and only a
    release past the cap looks for it: the hot path (a connection released
    to a host that has few) counts the deques and adds nothing else."""

    def __init__(self, *, idle_cap: int, **options: Any) -> None:
        super().__init__(**options)
        self._idle_cap = idle_cap
        self._closing: set[ResponseHandler] = set()

    @property
    def idle(self) -> int:
        """Idle keep-alive connections kept."""
        return sum(map(len, self._conns.values()))

    @property
    def closing(self) -> int:
        """Connections closed by this connector whose socket is not yet closed."""
        return len(self._closing)

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        transport = protocol.transport  # aiohttp forgets it when it closes the connection
        _aiohttp_release(self, key, protocol, should_close=should_close)
        pooled = self._conns
        kept = pooled.get(key)
        if kept and kept[-1][0] is protocol:
            cap = self._idle_cap
            if len(kept) > cap or (len(pooled) > 1 and sum(map(len, pooled.values())) > cap):
                self._evict()
        else:
            if transport is not None and (key.is_ssl or transport.get_write_buffer_size()):
                # Bytes of a request given up on that the peer has not read: the
                # socket would stay open, holding its slot, until it does (a peer
                # that never reads would hold it for good). They are dropped.
                # So is a TLS connection (see _evict).
                transport.abort()
            self._closed_by_us(protocol)

    def _available_connections(self, key: Any) -> int:
        available: int = super()._available_connections(key)
        return available - len(self._closing) if self._closing else available

    def _evict(self) -> None:
        """Close the least recently used idle connections past the cap."""
        pooled = self._conns
        excess = sum(map(len, pooled.values())) - self._idle_cap
        for _ in range(excess):
            key, kept = min(pooled.items(), key=_released)
            protocol, _ = kept.popleft()
            if not kept:
                del pooled[key]
            # A TLS connection closed gracefully waits for the peer's close_notify
            # (up to asyncio's 30 s), holding its slot: a silent peer would hold
            # one for each connection evicted. HTTP needs no close_notify.
            if key.is_ssl:
                protocol.abort()
            else:
                protocol.close()
            self._closed_by_us(protocol)

    def _closed_by_us(self, protocol: ResponseHandler) -> None:
        """Count ``protocol`` against the limit until its socket is closed."""
        closed = protocol.closed
        if closed is None or closed.done() or self._closed:
            return
        self._closing.add(protocol)
        closed.add_done_callback(lambda _: self._socket_closed(protocol))

    def _socket_closed(self, protocol: ResponseHandler) -> None:
        self._closing.discard(protocol)
        if not self._closed:
            self._release_waiter()  # a request may wait for the slot


def pooled_connector(
    idle_cap: int,
    options: Mapping[str, Any],
    *,
    hooks_missing: Callable[[], list[str]] = private_hooks_missing,
) -> aiohttp.TCPConnector:
    """A connector made with ``options`` that keeps at most ``idle_cap`` idle
    connections over all hosts and counts those it is closing against
    ``limit``; the fallback, where aiohttp's internals are not the ones this was
    written against: one that closes every connection after its request."""
    missing = [_FORCED] if FORCED_OFF else hooks_missing()
    if not missing:
        connector = _IdleCapped(idle_cap=idle_cap, **options)
        missing = _attributes_missing(connector)
        if not missing:
            return connector
    _fallen_back["pool"] = ", ".join(missing)
    return aiohttp.TCPConnector(force_close=True, **options)


# ------------------------------------------------------------------ retry

_RETRY_SWITCH: Final = "_retry_connection"  # aiohttp 3.10 to 3.14


def no_hidden_retry(session: aiohttp.ClientSession) -> None:
    """Stop aiohttp from sending a request again by itself. When a connection
    drops or is reset, aiohttp resends a GET, HEAD, OPTIONS, TRACE, PUT or DELETE
    once, at once and unseen. fanout's own retry decides instead: it counts the
    attempt, waits its backoff, and honours ``Request(idempotent=False)``, which
    aiohttp cannot know. Where the switch is missing, every request is sent with
    :func:`send_once` instead."""
    if IN_USE["retry"]:
        setattr(session, _RETRY_SWITCH, False)


def _send_once(session: aiohttp.ClientSession | None = None) -> Mapping[str, Any]:
    # A request's middlewares replace its session's: a session given keeps its own.
    kept = () if session is None else tuple(getattr(session, "_middlewares", None) or ())
    failure: list[BaseException] = []

    async def once(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if failure:  # aiohttp's hidden resend: refused, with the first failure
            raise failure[0]
        try:
            return await handler(request)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            failure.append(exc)
            raise

    return {"middlewares": (*kept, once)}


# ------------------------------------------------------------ read deadline


class _LazyReadDeadline(ResponseHandler):
    """aiohttp's connection protocol with a cheaper read deadline, same meaning.

    aiohttp cancels its read-deadline timer and schedules a new one at every
    chunk received, and cancels it again at the end of each response: about 2.5 %
    of a small request's cost. Here a chunk only moves the deadline forward; one
    timer per connection, when it fires early, re-arms itself for the deadline
    then in force, and finding none it stops. The two methods replaced are the
    only ones through which aiohttp starts and stops the deadline. A deadline
    never moves earlier, because every request of a fanout session has the
    same read timeout, so the timer armed is never late.
    """

    _read_deadline: float | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._clock = loop_clock(loop)

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._read_deadline = None
            return
        self._read_deadline = self._clock() + timeout
        if self._read_timeout_handle is None:
            self._read_timeout_handle = self._loop.call_at(self._read_deadline, self._check)

    def _drop_timeout(self) -> None:
        self._read_deadline = None  # the timer, if any, fires and finds nothing to do

    def _check(self) -> None:
        self._read_timeout_handle = None
        deadline = self._read_deadline
        if deadline is None:
            return
        if self._clock() >= deadline:
            self._read_deadline = None
            self._on_read_timeout()
        else:
            self._read_timeout_handle = self._loop.call_at(deadline, self._check)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._read_timeout_handle is not None:  # it would keep this protocol alive
            self._read_timeout_handle.cancel()
            self._read_timeout_handle = None
        super().connection_lost(exc)


# aiohttp's own methods that _LazyReadDeadline replaces or calls.
_REPLACED_AND_USED: Final = (
    "_reschedule_timeout",
    "_drop_timeout",
    "_on_read_timeout",
    "start_timeout",
)


def use_lazy_read_deadline(connector: aiohttp.TCPConnector) -> None:
    """Make ``connector`` build :class:`_LazyReadDeadline` protocols, when its
    protocol factory is the one this was written against (else aiohttp's own
    read deadline stays, correct and a little slower)."""
    if not IN_USE["read_deadline"]:
        return
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        build: Callable[..., ResponseHandler] = _LazyReadDeadline
        connector._factory = functools.partial(build, *factory.args, **factory.keywords)
    else:
        _fallen_back["read_deadline"] = "connector._factory changed"


# ---------------------------------------------------------- connect frame

# The frame every new connection is made under (DNS, TCP, TLS, the wait for a
# slot); None where aiohttp has changed it.
_CONNECT_CODE: Final[CodeType | None] = getattr(
    getattr(aiohttp.BaseConnector, "connect", None), "__code__", None
)


def while_connecting(exc: BaseException) -> bool:
    """Whether ``exc`` (the engine's deadline cancelling an attempt) ended it
    while aiohttp was still making its connection: the request was not sent.
    Looked for in its traceback, only when a deadline fires. The fallback says
    False: the request may have been sent."""
    tb = exc.__traceback__ if IN_USE["connect_frame"] else None
    while tb is not None:
        if tb.tb_frame.f_code is _CONNECT_CODE:
            return True
        tb = tb.tb_next
    return False


# --------------------------------------------------------------- pycares

# c-ares's ARES_OPT_QUERY_CACHE (ares.h), which pycares does not export.
_ARES_OPT_QUERY_CACHE: Final = 1 << 21


def without_query_cache(channel: pycares.Channel) -> bool:
    """Turn off c-ares's own query cache (c-ares 1.23 and later), so that only
    fanout's resolver cache, whose TTL rules are fanout's, answers from memory.

    pycares (5.2) takes no option for it, so this uses its private internals:
    a second c-ares channel is made with the first one's options plus
    ``qcache_max_ttl = 0`` and put in its place. Where the internals are not
    as expected, the channel is left as it is (its cache also honours TTLs,
    capped at an hour, and counts them down) and False is returned."""
    if not IN_USE["dns_cache"]:
        return False
    try:
        from pycares import _cares

        ffi, lib = _cares.ffi, _cares.lib
        holder: Any = channel._channel
        lock = channel._lock
        servers = channel.servers  # ares_save_options keeps no port nor IPv6 server
        options = ffi.new("struct ares_options *")
        mask = ffi.new("int *")
        if lib.ares_save_options(holder[0], options, mask) != lib.ARES_SUCCESS:
            return _dns_fallback("ares_save_options failed")
        try:
            options.qcache_max_ttl = 0
            fresh = ffi.new("ares_channel *")
            status = lib.ares_init_options(fresh, options, mask[0] | _ARES_OPT_QUERY_CACHE)
        finally:
            lib.ares_destroy_options(options)
    except Exception as exc:  # any change in the internals: keep the channel as it is
        return _dns_fallback(f"{type(exc).__name__}: {exc}")
    if status != lib.ARES_SUCCESS:
        return _dns_fallback("ares_init_options failed")
    with lock:
        channel._channel = fresh
    lib.ares_destroy(holder[0])  # no query was made on it
    channel.servers = servers
    return True


def _dns_fallback(reason: str) -> bool:
    _fallen_back["dns_cache"] = reason
    return False


# ---------------------------------------------------------------- cookies

# What aiohttp's ClientRequest.update_cookies builds a request's Cookie header
# with (aiohttp 3.12.14 and later); None where missing.
try:
    from aiohttp._cookie_helpers import parse_cookie_header as _parse_cookie_header
    from aiohttp._cookie_helpers import preserve_morsel_with_coded_value as _preserve_morsel
except ImportError:  # pragma: no cover - an aiohttp without them
    _parse_cookie_header = None  # type: ignore[assignment]
    _preserve_morsel = None  # type: ignore[assignment]


def cookie_header(given: str | None, cookies: BaseCookie[str]) -> str:
    """The Cookie header aiohttp sends with a request whose own Cookie header is
    ``given`` when its jar adds ``cookies`` (not empty): both merged, the jar's
    cookie winning over a given one of the same name, as
    ``ClientRequest.update_cookies`` does (for the curl transport's jar).
    Fallback, where aiohttp's helpers are missing: ``given`` parsed by the
    standard library (lenient parsing of malformed pairs lost)."""
    merged: SimpleCookie = SimpleCookie()
    if given:
        if _parse_cookie_header is not None and not FORCED_OFF:
            merged.update(_parse_cookie_header(given))
        else:
            merged.load(given)
    for name, value in cookies.items():
        if _preserve_morsel is not None and not FORCED_OFF:
            merged[name] = _preserve_morsel(value)
        else:
            kept: Morsel[str] = Morsel()
            kept.set(value.key, value.value, value.coded_value)
            merged[name] = kept
    return merged.output(header="", sep=";").strip()


# ---------------------------------------------------------------- status


def _checked() -> dict[str, str]:
    """Why each hook cannot be used, by hook, as found at import."""
    if FORCED_OFF:
        return dict.fromkeys(HOOKS, _FORCED)
    found: dict[str, str] = {}
    if missing := private_hooks_missing():
        found["pool"] = ", ".join(missing)
    if _RETRY_SWITCH not in getattr(aiohttp.ClientSession, "ATTRS", ()):
        found["retry"] = f"ClientSession.{_RETRY_SWITCH} missing"
    if missing := [n for n in _REPLACED_AND_USED if not hasattr(ResponseHandler, n)]:
        found["read_deadline"] = ", ".join(missing)
    if _CONNECT_CODE is None:
        found["connect_frame"] = "BaseConnector.connect changed"
    return found


_fallen_back: dict[str, str] = _checked()

IN_USE: Final[Mapping[str, bool]] = MappingProxyType(
    {hook: hook not in _fallen_back for hook in HOOKS}
)
"""Whether each hook is in use, as decided at import (a hook whose names live on
instances may still fall back on the first one: see :func:`fallbacks`)."""

send_once: Final[Callable[..., Mapping[str, Any]] | None] = None if IN_USE["retry"] else _send_once
"""Where :func:`no_hidden_retry` cannot turn the resend off: a function giving
the keyword arguments of a request (a client middleware of its own, after
those of the session given, if any) that let it through once; None where it can."""


def _tls_transport(response: aiohttp.ClientResponse) -> asyncio.BaseTransport | None:
    connection = response.connection
    transport = None if connection is None else connection.transport
    if transport is None or transport.get_extra_info("sslcontext") is None:
        return None
    return transport


tls_transport: Final[Callable[[aiohttp.ClientResponse], asyncio.BaseTransport | None] | None] = (
    None if IN_USE["pool"] else _tls_transport
)
"""Where the pool falls back to closing every connection after its request:
a function giving a response's TLS transport (None for plain TCP), for the
caller to abort once the response is released. aiohttp closes it gracefully,
waiting up to 30 s for the peer's close_notify: a silent peer would hold a
socket that long for each request, and a loop closed meanwhile fails to
close ("Device or resource busy" on uvloop). fanout's own pool aborts TLS
connections it closes (see :class:`_IdleCapped`). None where the pool is in use."""


def fallbacks() -> dict[str, str]:
    """The hooks whose fallback is in use, with why: as found at import, and
    by the objects patched since."""
    return dict(_fallen_back)


def log_fallbacks() -> None:
    """Say at debug level which fallbacks are in use (called for each session)."""
    if _fallen_back and logger.isEnabledFor(logging.DEBUG):
        shown = "; ".join(f"{hook} ({why})" for hook, why in sorted(_fallen_back.items()))
        logger.debug("aiohttp internals: fallbacks in use: %s", shown)
