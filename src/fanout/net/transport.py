"""One attempt of one request on the shared aiohttp session.

This is the only module that knows aiohttp's exceptions: :func:`classify`
turns each into an :class:`ErrorKind`, most specific first.
"""

from __future__ import annotations

import hashlib
import io
import socket
from collections.abc import Callable, Mapping, Sequence
from ssl import SSLContext
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp.abc import AbstractCookieJar, AbstractResolver, ResolveResult
from aiohttp.http_exceptions import ContentEncodingError
from multidict import CIMultiDict, istr
from yarl import URL

from fanout.models import ErrorKind, Failure, Request, Result
from fanout.net.aiohttp_internals import (
    log_fallbacks,
    no_hidden_retry,
    send_once,
    use_lazy_read_deadline,
    while_connecting,
)
from fanout.net.pool import make_connector
from fanout.policy import Caps, Timeouts
from fanout.safetext import shown

if TYPE_CHECKING:
    from fanout.net.proxy import Proxy

__all__ = [
    "CREDENTIAL_HEADERS",
    "REDIRECT_STATUSES",
    "REQUEST_OPTIONS",
    "AddressDenied",
    "AiohttpTransport",
    "DNSError",
    "ForeignSession",
    "Hop",
    "classify",
    "exchange",
    "make_session",
    "session_problem",
]


# RFC 9110 §15.4: the redirections with a Location to follow (300 and 305 are not followed).
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Sent only to the origin they were given for (curl drops the same three on a
# redirect to another host, scheme or port).
CREDENTIAL_HEADERS: Final = ("Authorization", "Cookie", "Proxy-Authorization")
# A redirect's own body is read (so its connection can be reused) up to this size.
_REDIRECT_BODY_KEPT: Final = 64 * 1024


class _TooLargeError(Exception):
    pass


class AddressDenied(OSError):
    """A resolver refused every address of a host (see :mod:`fanout.net.guard`)."""


class DNSError(OSError):
    """A name could not be resolved (see :mod:`fanout.net.dns`); the message says why.
    ``negative`` when the name has no address (NXDOMAIN, NODATA)."""

    def __init__(self, message: str, *, negative: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.negative = negative

    def __str__(self) -> str:
        return self.message


class Hop:
    """What a redirect hop sends instead of the request's own method, headers and
    body; ``skip`` names the fetcher's default headers left out (its credentials
    on a hop to another origin, the headers that describe a body on a hop
    without it), and ``headers`` then holds every default header the hop keeps."""

    __slots__ = ("body", "headers", "method", "skip")

    def __init__(
        self,
        method: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        skip: tuple[str, ...],
    ) -> None:
        self.method = method
        self.headers = headers
        self.body = body
        self.skip = skip


def make_session(
    *,
    concurrency: int,
    timeouts: Timeouts,
    headers: Mapping[str, str],
    wrap_resolver: Callable[[AbstractResolver], AbstractResolver] | None = None,
    nameservers: Sequence[str] | None = None,
    ssl: SSLContext | None = None,
    cookies: bool = False,
) -> tuple[aiohttp.ClientSession, AbstractResolver]:
    """The one session of a run: a pool sized to the concurrency, async DNS with a
    cache, ``headers`` sent with every request (where its own do not set them),
    the connect deadline and a lazy read deadline, and aiohttp's hidden resend off
    (see :mod:`fanout.net.aiohttp_internals`).
    The total deadline of an attempt is not the session's but the engine's.
    ``wrap_resolver`` wraps the resolver (the address guard); ``nameservers``
    ("IP" or "IP:PORT") replace the system's DNS servers; ``ssl`` is the TLS
    context (:func:`fanout.net.tls.tls_context`; None for aiohttp's). No cookie is kept
    (a Set-Cookie of one response is never sent with another request) unless
    ``cookies``: then each origin's are kept for it (:mod:`fanout.net.cookies`).

    The resolver comes back with the session: close it after the session
    (aiohttp closes only a resolver it made itself)."""
    resolver: AbstractResolver = _LazyResolver(
        None if nameservers is None else list(nameservers),
        dns_deadline(timeouts),
        # A slot for each request that may be looking up a name: one that waited
        # for a slot behind names whose server is silent would fail its connect
        # deadline, counted against its own, healthy, host.
        max(_DNS_IN_FLIGHT, concurrency),
    )
    if wrap_resolver is not None:
        resolver = wrap_resolver(resolver)
    # At most ``concurrency`` sockets in use and pool.idle_cap idle, over all hosts.
    connector = make_connector(concurrency=concurrency, resolver=resolver, ssl=ssl)
    use_lazy_read_deadline(connector)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=_session_timeout(timeouts),
        request_class=_request_class(headers),
        cookie_jar=_cookie_jar(cookies),
        raise_for_status=False,
        auto_decompress=True,
        trust_env=False,
    )
    no_hidden_retry(session)
    log_fallbacks()
    return session, resolver


def _cookie_jar(cookies: bool) -> AbstractCookieJar:
    if not cookies:
        return aiohttp.DummyCookieJar()
    from fanout.net.cookies import OriginCookieJar

    return OriginCookieJar()


def _session_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    # No total: the total deadline of an attempt is the engine's (see
    # engine._AttemptDeadline); aiohttp's would arm a timer and enter a timer
    # context for every request.
    return aiohttp.ClientTimeout(
        total=None,
        connect=timeouts.connect,
        sock_connect=timeouts.connect,
        sock_read=timeouts.read,
    )


class ForeignSession:
    """What each request carries itself on a session the user gave
    (``Fetcher(session=...)``), where fanout's own session has it built in: the
    connect and read deadlines, statuses and Content-Encoding left to fanout
    (no ``raise_for_status``, bodies decoded, so ``max_bytes`` counts decoded
    bytes), and the fetcher's default headers (User-Agent, ``headers``), which
    fanout's session sends through its request class.

    The session's hidden retry is turned off, as on fanout's own (see
    :func:`fanout.net.aiohttp_internals.no_hidden_retry`). A session whose own
    defaults carry credentials (``auth``, an Authorization, Cookie or
    Proxy-Authorization header) would send
    them to every origin a redirect leads to, so it is refused
    (:func:`session_problem`)."""

    __slots__ = ("defaults", "options")

    def __init__(
        self, session: aiohttp.ClientSession, timeouts: Timeouts, defaults: Mapping[str, str]
    ) -> None:
        no_hidden_retry(session)
        self.defaults = defaults
        self.options: Mapping[str, Any] = MappingProxyType(
            {
                **REQUEST_OPTIONS,
                "timeout": _session_timeout(timeouts),
                "raise_for_status": False,
                "auto_decompress": True,
            }
        )

    def headers(self, given: Mapping[str, str] | None, skip: tuple[str, ...]) -> dict[str, str]:
        """``given``, and the default headers it does not set and ``skip`` does not name."""
        headers = dict(given or {})
        named = {name.lower() for name in (*headers, *skip)}
        for name, value in self.defaults.items():
            if name.lower() not in named:
                headers[name] = value
        return headers


def session_problem(session: aiohttp.ClientSession) -> str | None:
    """Why fanout cannot send requests through ``session``, or None."""
    if session.closed:
        return "session= is closed"
    credentials = [name for name in CREDENTIAL_HEADERS if name in session.headers]
    if session.auth is not None:
        credentials.insert(0, "auth")
    if credentials:
        return (
            f"session= has default credentials ({', '.join(credentials)}), which would reach"
            " every origin a redirect leads to: give them as Fetcher(headers=...), sent to"
            " each request's own origin only"
        )
    return None


def dns_deadline(timeouts: Timeouts) -> float | None:
    """The deadline of one DNS lookup: ``timeouts.dns``, at most the connect
    deadline and the total one (each counts the lookup too, and would otherwise
    end it first with a less precise reason; a lookup whose attempt has ended
    keeps running for the requests that share it, and must not hold a slot of
    the resolver longer than an attempt lives)."""
    bounds = [t for t in (timeouts.dns, timeouts.connect, timeouts.total) if t is not None]
    return min(bounds) if bounds else None


def resolver_stats(resolver: AbstractResolver) -> dict[str, int] | None:
    """The counters of the :class:`fanout.net.dns.Resolver` inside ``resolver`` (a
    session's, maybe wrapped by the guard), or None when it has made none."""
    inner: Any = resolver
    while inner is not None and not isinstance(inner, _LazyResolver):
        inner = getattr(inner, "inner", None)
    stats = getattr(inner and inner.inner, "stats", None)
    if stats is None:
        return None
    return {name: getattr(stats, name) for name in stats.__slots__}


# Lookups in flight at once, at least: more when the concurrency is higher.
_DNS_IN_FLIGHT: Final = 32


class _LazyResolver(AbstractResolver):
    """fanout's resolver (:class:`fanout.net.dns.Resolver`, c-ares with a TTL cache),
    made on the first name to resolve: a run of addresses only (aiohttp resolves
    no IP literal) never imports pycares. Falls back to the threaded
    getaddrinfo resolver where pycares cannot be used."""

    def __init__(
        self, nameservers: list[str] | None, deadline: float | None, max_in_flight: int
    ) -> None:
        self._nameservers = nameservers
        self._deadline = deadline
        self._max_in_flight = max_in_flight
        self._inner: AbstractResolver | None = None

    @property
    def inner(self) -> AbstractResolver | None:
        """The resolver in use, once a name has been resolved."""
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            try:
                from fanout.net.dns import Resolver
            except ImportError:  # pycares missing or unusable
                self._inner = aiohttp.ThreadedResolver()
            else:
                self._inner = Resolver(
                    self._nameservers, timeout=self._deadline, max_in_flight=self._max_in_flight
                )
        return await self._inner.resolve(host, port, family)

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _request_class(headers: Mapping[str, str]) -> type[aiohttp.ClientRequest]:
    """aiohttp's request class with ``headers`` among its defaults, which a request
    sets only where its own headers do not. Session default headers would do the
    same, but aiohttp copies and merges them into a new mapping for every request."""
    merged = CIMultiDict(aiohttp.ClientRequest.DEFAULT_HEADERS)
    merged.update((istr(name), value) for name, value in headers.items())
    defaults = {istr(name): value for name, value in merged.items()}

    class _Request(aiohttp.ClientRequest):
        DEFAULT_HEADERS = defaults

    return _Request


# The keyword arguments of every aiohttp request. aiohttp never follows a
# redirect: the engine does, one hop at a time, so that each hop gets its
# host's limits, credentials stay with their origin and a sent request is never
# replayed (see ``Fetcher._next_hop``). Only keywords that differ from aiohttp's
# defaults are passed: each costs about 1 % of a small request's instructions.
REQUEST_OPTIONS: Final[Mapping[str, Any]] = MappingProxyType({"allow_redirects": False})


def followed(headers: Mapping[str, str], caps: Caps) -> bool:
    """Whether a response whose status is one of :data:`REDIRECT_STATUSES` is
    followed by the engine: it has a Location, and redirects are followed."""
    return caps.max_redirects > 0 and "Location" in headers


async def exchange(
    transport: AiohttpTransport,
    request: Request,
    url: URL,
    caps: Caps,
    keep_body: bool,
    hop: Hop | None,
    proxy: Proxy | None = None,
) -> Result:
    """Make one HTTP exchange for ``request`` (to ``url``, as ``hop`` says when it
    is a redirect hop) on ``transport``'s session: its :class:`Result`, whose
    ``attempts`` and times the engine fills in. A redirect to follow (see
    :func:`followed`) comes back with its status and headers and no body.
    Exceptions are the caller's to :func:`classify` (kept out of here to spare a
    coroutine layer per request). ``proxy``, the proxy to go through.
    :meth:`AiohttpTransport.exchange` is this function."""
    session = transport.session
    foreign = transport.foreign
    if foreign is None:
        options = REQUEST_OPTIONS
        hop_headers = None if hop is None else hop.headers
        given = request.headers
    else:
        options = foreign.options
        hop_headers = None if hop is None else foreign.headers(hop.headers, hop.skip)
        given = foreign.headers(request.headers, ())
    if hop is not None:
        method = hop.method
        options = {**options, "headers": _headers_for(url, hop_headers), "data": hop.body}
        if hop.skip:
            options["skip_auto_headers"] = hop.skip
    else:
        method = request.method
        if given or request.body is not None:
            headers = _headers_for(url, given)
            options = {**options, "headers": headers, "data": request.body}
    if send_once is not None:  # aiohttp's hidden resend could not be turned off
        options = {**options, **send_once(None if foreign is None else session)}
    if proxy is not None:
        options = proxy.apply(options, url)
    # Awaited, not entered: ``async with`` would put aiohttp's __aenter__ coroutine
    # between this one and the request's, a layer that each resumption passes
    # through, and call two more coroutines at the end (its __aexit__ does what
    # the finally below does): about 1.5 % of a small request's instructions.
    response = await session.request(method, url, **options)
    try:
        status = response.status
        if status in REDIRECT_STATUSES and followed(response.headers, caps):
            length = response.content_length
            if length is not None and length <= _REDIRECT_BODY_KEPT:
                await response.read()  # else release() closes the connection
            return Result(request, status, str(url), response.headers)
        max_bytes = caps.max_bytes
        length = response.content_length
        if method == "HEAD" or status in (204, 304):
            length = 0  # the Content-Length of a body not sent: aiohttp reads none
        identity = "Content-Encoding" not in response.headers
        if identity and length is not None and (max_bytes is None or length <= max_bytes):
            # Fast path: the length is known and within the cap, and aiohttp stops
            # at Content-Length (a shorter body is a ClientPayloadError).
            body = await response.read()
            size = len(body)
            # A kept body is hashed only if Result.sha256 is asked for.
            sha256 = None if keep_body else hashlib.sha256(body).hexdigest()
        else:
            if max_bytes is not None and identity and length is not None:
                raise _TooLargeError(f"Content-Length {length} exceeds max_bytes {max_bytes}")
            body, size, sha256 = await _read_capped(response.content, max_bytes, keep_body)
        error = None
        if status >= 400:
            reason = response.reason or ""
            error = Failure(ErrorKind.HTTP_STATUS, shown(f"HTTP {status} {reason}".rstrip()))
            if status == 407 and proxy is not None and url.scheme == "http":
                # the proxy's own answer to a request in absolute form
                message = f"the proxy {proxy.shown} refused the request: HTTP 407 {reason}"
                error = Failure(ErrorKind.PROXY, shown(message.rstrip()))
        # Positional: passing these by keyword costs about 0.5 µs more on CPython 3.11.
        return Result(
            request,
            status,
            request.url if hop is None else str(url),
            response.headers,
            body if keep_body else None,
            size,
            sha256,
            0,
            0.0,
            0.0,
            error,
        )
    finally:
        response.release()
        await response.wait_for_close()


def _headers_for(url: URL, headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The headers of a request to ``url``, None when there are none. A URL's
    own credentials are its Authorization, over one among ``headers`` (as over
    the fetcher's): aiohttp refuses to be given both, and the URL may be a
    same-origin redirect's Location, which a server writes."""
    if not headers:
        return None
    if url.raw_user is not None or url.raw_password is not None:
        headers = {name: v for name, v in headers.items() if name.lower() != "authorization"}
    return headers or None


async def _read_capped(
    content: aiohttp.StreamReader, max_bytes: int | None, keep_body: bool
) -> tuple[bytes, int, str | None]:
    """Read a body of unknown decoded size as a stream, stopping past ``max_bytes``;
    hash it as it comes when it is not kept.

    A kept body grows in one buffer that is handed over whole at the end (on
    CPython ``BytesIO.getvalue`` gives its bytes without a copy): a list of
    chunks joined at the end would hold the body twice, and more than twice
    when chunks are small."""
    digest = None if keep_body else hashlib.sha256()
    kept = io.BytesIO() if keep_body else None
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise _TooLargeError(f"body exceeds max_bytes {max_bytes} (decoded)")
        if kept is not None:
            kept.write(chunk)
        elif digest is not None:
            digest.update(chunk)
    body = b"" if kept is None else kept.getvalue()
    return body, size, None if digest is None else digest.hexdigest()


def classify(
    exc: BaseException, *, timeouts: Timeouts, proxy: Proxy | None = None
) -> tuple[Failure, bool]:
    """Translate an exception from one attempt into a :class:`Failure`, and whether
    the request may have reached the server (False only when it surely did not,
    so it is safe to retry whatever the method). Messages are escaped and bounded
    (:func:`fanout.safetext.shown`): servers and resolvers choose some of their words.
    The failure's ``cause`` is the exception's type name, except for fanout's
    own refusals (a body over ``max_bytes``, a denied address). ``proxy``: the
    proxy the attempt went through, whose failures are ``proxy`` ones."""
    kind: ErrorKind
    sent = True
    if isinstance(exc, _TooLargeError):
        kind, message = ErrorKind.TOO_LARGE, str(exc)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind, message, sent = ErrorKind.TIMEOUT, f"connect deadline of {timeouts.connect:g}s", False
    elif isinstance(exc, aiohttp.SocketTimeoutError):
        kind, message = ErrorKind.TIMEOUT, f"read deadline: no data for {timeouts.read:g}s"
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        kind, message = ErrorKind.TIMEOUT, str(exc) or "timeout"
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        where = "" if proxy is None else f" {proxy.shown}"
        kind, sent = ErrorKind.PROXY, False
        message = f"the proxy{where} refused the tunnel: HTTP {exc.status} {exc.message}".rstrip()
    elif (
        proxy is not None
        and isinstance(exc, aiohttp.ClientResponseError)
        and exc.request_info.method == "CONNECT"
    ):  # the proxy's answer to CONNECT is not HTTP: nothing reached the target
        kind, sent = ErrorKind.PROXY, False
        message = f"the proxy {proxy.shown} sent a malformed answer to CONNECT: {exc.message}"
    elif proxy is not None and _to_proxy(exc, proxy):
        assert isinstance(exc, aiohttp.ClientConnectorError)
        if isinstance(exc, aiohttp.ClientSSLError):
            why = _describe(exc)
        else:
            why = str(exc.os_error) if isinstance(exc.os_error, DNSError) else _reason(exc)
        kind, sent = ErrorKind.PROXY, False
        message = f"cannot connect to the proxy {proxy.shown}: {why}"
    elif isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, AddressDenied):
        kind, message, sent = ErrorKind.DENIED, str(exc.os_error), False
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        reason = exc.os_error if isinstance(exc.os_error, DNSError) else _describe(exc)
        kind, message, sent = ErrorKind.DNS, str(reason), False
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        kind, message, sent = ErrorKind.TLS, _describe(exc), False
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = _reason(exc)
        kind, sent = ErrorKind.CONNECT, False
        message = f"cannot connect to {exc.host}:{exc.port}: {reason}"
    elif isinstance(exc, aiohttp.InvalidURL):
        kind, message = ErrorKind.INVALID_URL, f"invalid URL: {exc}"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = ErrorKind.PROTOCOL
        if isinstance(exc.__cause__, ContentEncodingError):
            message = _undecodable(exc.__cause__)
        else:
            message = f"incomplete or malformed body: {_describe(exc)}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind, message = ErrorKind.PROTOCOL, "server disconnected before a complete response"
    elif isinstance(exc, aiohttp.ClientResponseError):
        kind, message = ErrorKind.PROTOCOL, f"malformed response: {exc.message or exc}"
    elif isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        kind, message = ErrorKind.PROTOCOL, f"connection lost: {_describe(exc)}"
    elif isinstance(exc, aiohttp.ClientError):
        kind, message = ErrorKind.PROTOCOL, _describe(exc)
    elif isinstance(exc, TimeoutError):  # the engine's total deadline passed
        kind, message = ErrorKind.TIMEOUT, f"total deadline of {timeouts.total:g}s for one attempt"
    else:
        kind, message = ErrorKind.INTERNAL, f"unexpected error: {exc!r}"
    own = kind is ErrorKind.TOO_LARGE or kind is ErrorKind.DENIED
    return Failure(kind, shown(message), None if own else type(exc).__name__), sent


def _to_proxy(exc: BaseException, proxy: Proxy) -> bool:
    """Whether ``exc`` is a failure to connect to ``proxy`` itself (a failure
    of the TLS handshake with the host, through the tunnel, is the host's)."""
    return (
        isinstance(exc, aiohttp.ClientConnectorError)
        and exc.host == proxy.host
        and exc.port == proxy.port
    )


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    return exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__


# aiohttp's message for a body its decoder refuses, the encoding after it
_UNDECODABLE: Final = "Can not decode content-encoding: "


def _undecodable(exc: ContentEncodingError) -> str:
    """The message of a body that does not decode as its Content-Encoding says."""
    text = str(exc.message)
    encoding = text.removeprefix(_UNDECODABLE)
    if encoding.isalnum():  # "deflate" alone for a deflate stream that ends early
        return f"corrupt body: not valid {encoding} data (Content-Encoding: {encoding})"
    return f"undecodable body: {text}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AiohttpTransport:
    """The aiohttp transport (:class:`fanout.net.transports.Transport`): attempts on
    one aiohttp session, fanout's own (:func:`make_session`, closed with the
    transport) or the user's (``foreign``, which fanout does not close)."""

    __slots__ = ("foreign", "resolver", "session")

    name: Final = "aiohttp"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        resolver: AbstractResolver | None = None,
        foreign: ForeignSession | None = None,
    ) -> None:
        self.session = session
        self.resolver = resolver
        self.foreign = foreign

    # The module's function itself, bound: no coroutine layer between the engine and it.
    exchange = exchange

    def classify(
        self, exc: BaseException, timeouts: Timeouts, proxy: Proxy | None = None
    ) -> tuple[Failure, bool]:
        """See :func:`classify`."""
        return classify(exc, timeouts=timeouts, proxy=proxy)

    def unsent(self, cancelled: BaseException) -> bool:
        """Whether the deadline's ``cancelled`` ended the attempt while connecting."""
        return while_connecting(cancelled)

    def dns_stats(self) -> dict[str, int] | None:
        """The resolver's counters (:func:`resolver_stats`), None if none."""
        return None if self.resolver is None else resolver_stats(self.resolver)

    async def close(self) -> None:
        """Close fanout's own session and its resolver (a session given is its owner's)."""
        try:
            if self.foreign is None:
                await self.session.close()
        finally:
            if self.resolver is not None:
                await self.resolver.close()
