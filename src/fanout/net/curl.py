"""The libcurl transport (``transport="curl"``): attempts on one pycurl ``CurlMulti``.

libcurl is driven from the event loop by its socket interface: its socket
callback becomes the loop's ``add_reader``/``add_writer``, its timer callback a
loop timer, and each readiness event one ``socket_action``, after which the
finished transfers are collected (``info_read``). No thread, no polling; one
slow safety timer runs while transfers do, for a socket libcurl failed to
report. Easy handles come from a small pool and are reset between uses.

The engine keeps what it does on aiohttp: redirects (libcurl follows none),
the total deadline (it cancels :meth:`CurlTransport.exchange`, which removes
the transfer from the multi at once), retries and per-host limits. The
connect deadline is libcurl's (``CONNECTTIMEOUT_MS``, the DNS lookup
included); the read deadline (the longest gap between bytes) is one lazy loop
timer for all transfers, due at the earliest of their deadlines, which then
checks them all. ``max_bytes`` is counted on the decoded
body as it comes (gzip, deflate, br). The guard's address checks run in
libcurl's socket opener, on each address it is about to connect to; proxies
are set per transfer, and only when a Fetcher has some; with ``nameservers``
fanout's resolver looks names up and hands libcurl the addresses (none of
these costs the plain path more than an attribute check). The header lines libcurl hands over
are collected by ``list.append`` and read once, after the headers (a Python
call per line would cost more).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import ipaddress
import os
import socket
import ssl
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import pycurl
from multidict import CIMultiDict, CIMultiDictProxy

from fanout.models import IDEMPOTENT_METHODS, ErrorKind, Failure, Request, Result
from fanout.net.aiohttp_internals import cookie_header
from fanout.net.transport import (
    _DNS_IN_FLIGHT,
    REDIRECT_STATUSES,
    DNSError,
    Hop,
    _LazyResolver,
    dns_deadline,
    resolver_stats,
)
from fanout.policy import Caps
from fanout.safetext import shown

if TYPE_CHECKING:
    from yarl import URL

    from fanout.net.cookies import OriginCookieJar
    from fanout.net.guard import HostGuard
    from fanout.net.proxy import Proxy
    from fanout.net.tls import StrPath
    from fanout.policy import Timeouts

__all__ = ["CurlError", "CurlTransport"]

# A redirect's own body is read (so its connection can be reused) up to this size.
_REDIRECT_BODY_KEPT: Final = 64 * 1024
# aiohttp's limit on one header line (its parser's max_line_size and
# max_field_size): a longer one is a malformed response on both transports.
_MAX_HEADER_LINE: Final = 8190
# While transfers run, libcurl is also driven this often (seconds), in case
# it failed to report a socket.
_SAFETY_INTERVAL: Final = 1.0
_ACCEPT_ENCODING: Final = "gzip, deflate, br"
# CURLE_TOO_LARGE (libcurl 8.6): a response header past libcurl's own limits.
_E_TOO_LARGE: Final = 100
# CURLE_HTTP2_STREAM (libcurl 7.49; pycurl names only CURLE_HTTP2): a stream reset.
_E_HTTP2_STREAM: Final = 92
# libcurl's codes by name (an FTP alias only where there is no other name)
_NAMES: Final = {
    **{getattr(pycurl, name): f"CURL{name}" for name in dir(pycurl) if name.startswith("E_FTP")},
    **{
        getattr(pycurl, name): f"CURL{name}"
        for name in dir(pycurl)
        if name.startswith("E_")
        and not name.startswith(("E_FTP", "E_MULTI", "E_OPERATION_TIMEOUTED"))
        and name != "E_SSL_PEER_CERTIFICATE"  # an old alias of PEER_FAILED_VERIFICATION
    },
    8: "CURLE_WEIRD_SERVER_REPLY",
    _E_TOO_LARGE: "CURLE_TOO_LARGE",
    _E_HTTP2_STREAM: "CURLE_HTTP2_STREAM",
}
_TLS_CODES: Final = frozenset(
    getattr(pycurl, name, -1)
    for name in (
        "E_SSL_CONNECT_ERROR",
        "E_PEER_FAILED_VERIFICATION",
        "E_SSL_CERTPROBLEM",
        "E_SSL_CIPHER",
        "E_SSL_CACERT",
        "E_SSL_CACERT_BADFILE",
        "E_SSL_ISSUER_ERROR",
        "E_SSL_PINNEDPUBKEYNOTMATCH",
        "E_SSL_INVALIDCERTSTATUS",
        "E_SSL_CRL_BADFILE",
        "E_SSL_ENGINE_INITFAILED",
        "E_SSL_ENGINE_NOTFOUND",
        "E_SSL_ENGINE_SETFAILED",
        "E_SSL_PEER_CERTIFICATE",
        "E_USE_SSL_FAILED",
    )
)
_VERIFY_CODES: Final = frozenset(
    getattr(pycurl, name, -1) for name in ("E_PEER_FAILED_VERIFICATION", "E_SSL_PEER_CERTIFICATE")
)
# The options of TLS with an https:// proxy that match those with the target.
_PROXY_TLS: Final = {
    pycurl.SSL_VERIFYPEER: pycurl.PROXY_SSL_VERIFYPEER,
    pycurl.SSL_VERIFYHOST: pycurl.PROXY_SSL_VERIFYHOST,
    pycurl.CAINFO: pycurl.PROXY_CAINFO,
    pycurl.CAPATH: pycurl.PROXY_CAPATH,
    pycurl.SSLCERT: pycurl.PROXY_SSLCERT,
    pycurl.SSLKEY: pycurl.PROXY_SSLKEY,
}
_UNSENT_ATTRIBUTE: Final = "_fanout_unsent"
# struct tcp_info's tcpi_last_data_recv (milliseconds), at offset 52 on Linux
_TCPI_LAST_DATA_RECV: Final = struct.Struct("=I")


class CurlError(Exception):
    """One exchange ended without a response: its :class:`Failure`, and whether
    the request may have reached the server."""

    def __init__(self, failure: Failure, sent: bool) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.sent = sent


class _Transfer:
    """One easy handle and the state of the transfer it makes, reused."""

    __slots__ = (
        "abort",
        "clock",
        "configured",
        "curl",
        "digest",
        "done",
        "ended",
        "future",
        "header_lines",
        "headers",
        "host",
        "kept",
        "last",
        "lines",
        "max_bytes",
        "parsed",
        "passed",
        "plain",
        "proxy",
        "reason",
        "redirect",
        "redirects",
        "refused",
        "scheme",
        "size",
        "started",
        "status",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock  # the loop's
        self.curl = pycurl.Curl()
        self.future: asyncio.Future[tuple[int, str]] | None = None
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.lines: list[bytes] = []  # the header lines received, as libcurl gives them
        self.parsed = False  # status, reason and headers are read from them
        self.status = 0
        self.reason = ""
        self.done = False  # the headers of the final response are in
        self.redirect = False
        self.redirects = False  # redirects are followed (by the engine)
        self.max_bytes: int | None = None
        self.size = 0
        self.kept: io.BytesIO | None = None
        self.digest: Any = None
        self.abort: Failure | None = None  # why a callback stopped the transfer
        self.ended = False  # a redirect's body stopped early on purpose
        self.last = 0.0  # the loop's time of the last byte
        self.started = 0.0
        # The fixed options are set (once per handle, not per transfer) and the
        # last transfer set no per-request option beyond URL, headers, version.
        self.configured = False
        self.plain = False
        self.header_lines: list[bytes] | None = None  # the HTTPHEADER list set last
        self.scheme = ""  # the scheme whose HTTP_VERSION is set
        # With the guard's address checks (only then kept up to date): the
        # URL's host, why an address of it was refused, and whether one passed.
        self.host = ""
        self.refused: str | None = None
        self.passed = False
        self.proxy: Proxy | None = None  # the proxy of this transfer (with proxies only)

    def parse(self) -> None:
        """Read the status and headers of the last response from the lines
        libcurl handed over (once; after the headers or the transfer ended):
        one pass here costs less than a Python call per line from libcurl."""
        if self.parsed:
            return
        self.parsed = True
        lines = self.lines
        start = -1
        for index in range(len(lines) - 1, -1, -1):
            if lines[index].startswith(b"HTTP/"):  # after any 1xx: the last response's
                start = index
                break
        if start < 0:
            return
        parts = lines[start].decode("latin-1").rstrip("\r\n").split(" ", 2)
        # libcurl checked the status line: three digits (no getinfo in a callback)
        code = parts[1] if len(parts) > 1 else ""
        status = self.status = int(code) if code.isascii() and code.isdigit() else 0
        self.reason = parts[2] if len(parts) > 2 else ""
        pairs = []
        for line in lines[start + 1 :]:
            if len(line) > _MAX_HEADER_LINE + 2:
                self.abort = Failure(
                    ErrorKind.PROTOCOL,
                    f"malformed response: a header line over {_MAX_HEADER_LINE} bytes",
                    "CURLE_WRITE_ERROR",
                )
                return
            if line == b"\r\n" or line == b"\n":
                self.done = status >= 200
                break
            name, colon, value = line.decode("utf-8", "surrogateescape").partition(":")
            if colon:
                pairs.append((name.strip(), value.strip()))
        headers = self.headers = CIMultiDict(pairs)
        if not self.done:
            return
        if status in REDIRECT_STATUSES and self.redirects and "Location" in headers:
            self.redirect = True
            return
        max_bytes = self.max_bytes
        # a 204's or 304's Content-Length (a HEAD's: max_bytes is None) is no body
        if max_bytes is not None and status not in (204, 304) and "Content-Encoding" not in headers:
            length = headers.get("Content-Length", "")
            if length.isascii() and length.isdigit() and int(length) > max_bytes:
                self.abort = Failure(
                    ErrorKind.TOO_LARGE,
                    f"Content-Length {length} exceeds max_bytes {max_bytes}",
                )

    def on_body(self, chunk: bytes) -> int | None:
        self.last = self.clock()
        if not self.parsed:  # the first bytes of the body: the headers are whole
            self.parse()
            if self.abort is not None:
                return 0
        size = self.size = self.size + len(chunk)
        if self.redirect:
            if size > _REDIRECT_BODY_KEPT:
                self.ended = True
                return 0
            return None
        max_bytes = self.max_bytes
        if max_bytes is not None and size > max_bytes:
            self.abort = Failure(
                ErrorKind.TOO_LARGE, f"body exceeds max_bytes {max_bytes} (decoded)"
            )
            return 0
        if self.kept is not None:
            self.kept.write(chunk)
        elif self.digest is not None:
            self.digest.update(chunk)
        return None


class CurlTransport:
    """The curl transport (:class:`fanout.net.transports.Transport`). Made on the
    running loop; :meth:`close` ends every transfer and closes the multi."""

    name: Final = "curl"

    def __init__(
        self,
        *,
        concurrency: int,
        timeouts: Timeouts,
        headers: Mapping[str, str],
        cacert: StrPath | None = None,
        verify: bool = True,
        client_cert: tuple[StrPath, StrPath] | None = None,
        http2: bool = False,
        cookies: bool = False,
        guard: HostGuard | None = None,
        proxies: bool = False,
        nameservers: Sequence[str] | None = None,
    ) -> None:
        """``guard``: the guard whose address checks (``deny_private``, network
        patterns) judge every address libcurl is about to connect to; None when
        it has none (its name patterns are the engine's, per hop). ``proxies``:
        some request may go through a proxy (:meth:`exchange`'s ``proxy``).
        ``nameservers``: names are resolved by fanout's resolver, with these
        DNS servers, and handed to libcurl (``CURLOPT_RESOLVE``). ``cookies``:
        each origin's cookies are kept for it, in fanout's jar."""
        self._loop = asyncio.get_running_loop()
        # cookies=True: each origin's, kept for it (fanout.net.cookies), as on aiohttp
        self._jar: OriginCookieJar | None = None
        if cookies:
            from fanout.net.cookies import OriginCookieJar

            self._jar = OriginCookieJar()
        self._timeouts = timeouts
        self._defaults = dict(headers)
        # the header lines of a request with no headers, body or credentials of its own
        self._plain_lines = [
            line.encode() for line in _header_lines(False, self._defaults, None, (), False)
        ]
        self._pool: list[_Transfer] = []
        self._pool_size = concurrency
        self._active: dict[Any, _Transfer] = {}  # the Curl handle in the multi: its transfer
        self._sockets: dict[int, int] = {}  # fd: the events watched (pycurl.POLL_*)
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._timer_at = 0.0  # the loop's time the armed timer fires
        self._due: float | None = None  # the loop's time libcurl asked for last
        self._safety: asyncio.TimerHandle | None = None
        self._gaps: asyncio.TimerHandle | None = None  # the read deadlines' sweep
        self._tls = _tls_options(cacert, verify, client_cert)
        if proxies:  # an https:// proxy is checked as a target is (aiohttp: one context)
            self._tls += [
                (_PROXY_TLS[option], value) for option, value in self._tls if option in _PROXY_TLS
            ]
        multi = self._multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, concurrency)
        multi.setopt(pycurl.M_MAXCONNECTS, concurrency)
        # HTTP/1.1: one request per connection at a time. HTTP/2: a host's
        # requests are streams on one connection (the engine's per-host slots
        # bound them); a second one opens only past the server's stream limit.
        multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX if http2 else pycurl.PIPE_NOTHING)
        self._http2 = http2
        self._closed = False
        self._guard = guard
        self._proxies = proxies
        self._resolver: _LazyResolver | None = None
        if nameservers is not None:
            self._resolver = _LazyResolver(
                list(nameservers), dns_deadline(timeouts), max(_DNS_IN_FLIGHT, concurrency)
            )

    # ------------------------------------------------------------ counters

    def counts(self) -> dict[str, int]:
        """What the transport holds now: transfers in the multi, sockets watched
        on the loop, read-deadline timers and libcurl's timer (0 or 1)."""
        return {
            "handles": len(self._active),
            "sockets": len(self._sockets),
            "gap_timers": int(self._gaps is not None),
            "timer": int(self._timer is not None),
        }

    def dns_stats(self) -> dict[str, int] | None:
        """fanout's resolver's counters (with ``nameservers``), else None:
        libcurl resolves names itself."""
        return None if self._resolver is None else resolver_stats(self._resolver)

    # ------------------------------------------------------------ exchange

    async def exchange(
        self,
        request: Request,
        url: URL,
        caps: Caps,
        keep_body: bool,
        hop: Hop | None,
        proxy: Proxy | None = None,
    ) -> Result:
        """See :meth:`fanout.net.transports.Transport.exchange`. With
        ``nameservers``, the name of the host connected to (the proxy's, through
        one) is resolved by fanout's resolver first, as on aiohttp."""
        if self._closed:
            raise RuntimeError("the curl transport is closed")
        resolved = None if self._resolver is None else await self._resolve(url, proxy)
        transfer = self._pool.pop() if self._pool else _Transfer(self._loop.time)
        try:
            self._prepare(transfer, request, url, caps, keep_body, hop, proxy, resolved)
            future = self._start(transfer)
            try:
                code, message = await future
            except asyncio.CancelledError as cancelled:
                unsent = not self._connected(transfer)
                self._remove(transfer)
                if unsent:
                    setattr(cancelled, _UNSENT_ATTRIBUTE, True)
                raise
            result = self._result(transfer, request, url, hop, code, message)
        finally:
            if self._jar is not None:
                self._keep_cookies(transfer, url)
            self._release(transfer)
        error = result.error
        if (
            error is not None
            and proxy is not None
            and result.status == 407
            and url.scheme == "http"
        ):  # the answer to a request in absolute form: the proxy's own
            status = error.message  # "HTTP 407 <reason>", shown already
            result.error = Failure(
                ErrorKind.PROXY, f"the proxy {proxy.shown} refused the request: {status}"
            )
        return result

    def _with_cookies(
        self, url: URL, given: Mapping[str, str] | None, skip: tuple[str, ...]
    ) -> Mapping[str, str] | None:
        """``given`` with the jar's cookies for ``url`` in its Cookie header,
        merged with the request's (or the defaults') own as aiohttp merges them."""
        assert self._jar is not None
        cookies = self._jar.filter_cookies(url)
        if not cookies:
            return given
        own = None
        for name, value in (given or {}).items():
            if name.lower() == "cookie":
                own = value
                break
        else:
            if not any(name.lower() == "cookie" for name in skip):
                own = next((v for k, v in self._defaults.items() if k.lower() == "cookie"), None)
        headers = {k: v for k, v in (given or {}).items() if k.lower() != "cookie"}
        headers["Cookie"] = cookie_header(own, cookies)
        return headers

    def _keep_cookies(self, transfer: _Transfer, url: URL) -> None:
        """Keep the cookies a response to ``url`` set, once its headers are in
        (a redirect hop's too; a failure after the headers keeps them, as aiohttp)."""
        assert self._jar is not None
        transfer.parse()  # the transfer is over (or cancelled): its lines are all in
        if transfer.done and not (transfer.proxy is not None and _proxy_answered_last(transfer)):
            self._jar.update_cookies_from_headers(transfer.headers.getall("Set-Cookie", []), url)

    async def get_prefix(
        self,
        url: URL,
        headers: Mapping[str, str],
        skip: tuple[str, ...],
        limit: int,
        proxy: Proxy | None = None,
    ) -> tuple[int, str | None, bytes]:
        """One GET of ``url`` with ``headers`` (the defaults ``skip`` names left
        out), not followed if a redirect: its status, a redirect's Location (or
        None), and at most ``limit`` bytes of its decoded body for a 2xx, the
        rest not read (robots.txt: :data:`fanout.engine.robots.Get`), through
        ``proxy`` and fanout's resolver as :meth:`exchange` goes. Raises
        :class:`CurlError` as :meth:`exchange` does; cancelling it ends the transfer."""
        if self._closed:
            raise RuntimeError("the curl transport is closed")
        resolved = None if self._resolver is None else await self._resolve(url, proxy)
        # A handle of its own, closed after: its write callback is not the pool's.
        transfer = _Transfer(self._loop.time)
        curl = transfer.curl
        kept = bytearray()

        def on_body(chunk: bytes) -> int | None:
            transfer.last = transfer.clock()
            transfer.parse()  # the headers are whole
            if transfer.redirect or not 200 <= transfer.status < 300:
                transfer.ended = True  # no body wanted: the connection is not kept
                return 0
            kept.extend(chunk[: limit - len(kept)])
            if len(kept) >= limit:
                transfer.ended = True  # the rest is not read
                return 0
            return None

        try:
            request = Request(str(url))
            hop = Hop("GET", headers, None, skip)
            self._prepare(transfer, request, url, Caps(max_bytes=None), False, hop, proxy, resolved)
            curl.setopt(pycurl.WRITEFUNCTION, on_body)
            code, message = await self._start(transfer)
            transfer.parse()
            if code != 0 and not (transfer.ended and code == pycurl.E_WRITE_ERROR):
                raise self._failure(transfer, url, code, message)
            if not transfer.done:
                raise _headers_cut()
            location = transfer.headers.get("Location") if transfer.redirect else None
            return transfer.status, location, bytes(kept)
        finally:
            if self._jar is not None:
                self._keep_cookies(transfer, url)
            self._remove(transfer)
            transfer.future = None
            curl.close()

    def _start(self, transfer: _Transfer) -> asyncio.Future[tuple[int, str]]:
        """Add the prepared ``transfer`` to the multi: the future of its
        libcurl code and message."""
        future = transfer.future = self._loop.create_future()
        transfer.started = transfer.last = self._loop.time()
        self._active[transfer.curl] = transfer
        self._multi.add_handle(transfer.curl)
        # armed, the sweep is due no later than this transfer's deadline
        if self._gaps is None and self._timeouts.read is not None:
            due = transfer.started + self._timeouts.read
            self._gaps = self._loop.call_at(due, self._sweep_gaps)
        self._arm_safety()
        return future

    def _prepare(
        self,
        transfer: _Transfer,
        request: Request,
        url: URL,
        caps: Caps,
        keep_body: bool,
        hop: Hop | None,
        proxy: Proxy | None = None,
        resolved: str | None = None,
    ) -> None:
        """Set ``transfer``'s handle for one exchange (``resolved``: the RESOLVE
        entry :meth:`_resolve` gave)."""
        curl = transfer.curl
        if self._guard is not None:  # what the guard's socket opener reads
            transfer.host = url.raw_host or ""
            transfer.refused = None
            transfer.passed = False
        transfer.parsed = False
        transfer.status = 0
        transfer.reason = ""
        transfer.done = transfer.redirect = transfer.ended = False
        transfer.redirects = caps.max_redirects > 0
        transfer.max_bytes = caps.max_bytes  # None for a HEAD, below
        transfer.size = 0
        transfer.kept = io.BytesIO() if keep_body else None
        transfer.digest = None if keep_body else hashlib.sha256()
        transfer.abort = None
        setopt = curl.setopt
        if not transfer.plain:  # a method, body or fresh connection of the last one
            if transfer.configured:
                curl.reset()
            self._configure(transfer)
        transfer.plain = False  # until every option of this one is set
        text = str(url)
        setopt(pycurl.URL, text)
        if self._http2 and transfer.scheme != url.scheme:
            transfer.scheme = url.scheme
            if url.scheme == "https":  # ALPN: h2 if the server offers it, else HTTP/1.1
                setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
            else:  # cleartext: no upgrade round trip, the server must speak h2c
                setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        if hop is not None:
            method, body, given, skip = hop.method, hop.body, hop.headers, hop.skip
        else:
            method, body, given, skip = request.method, request.body, request.headers, ()
        if self._jar is not None:
            given = self._with_cookies(url, given, skip)
        if not given and not skip and body is None and "@" not in text:
            lines = self._plain_lines  # the same list each time: set once per handle
        else:
            lines = [
                line.encode()  # UTF-8, as aiohttp
                for line in _header_lines(
                    url.raw_user is not None or url.raw_password is not None,
                    self._defaults,
                    given,
                    skip,
                    body is not None,
                )
            ]
        if lines is not transfer.header_lines:
            setopt(pycurl.HTTPHEADER, lines)
            transfer.header_lines = lines
        plain = True
        if method == "HEAD":
            setopt(pycurl.NOBODY, 1)
            transfer.max_bytes = None  # its Content-Length is the GET's, not a body
            plain = False
        elif method != "GET" or body is not None:
            setopt(pycurl.CUSTOMREQUEST, method)
            plain = False
        if body is not None or method in ("POST", "PUT", "PATCH"):
            setopt(pycurl.POSTFIELDSIZE_LARGE, 0 if body is None else len(body))
            setopt(pycurl.COPYPOSTFIELDS, body or b"")
            plain = False
        if body is not None or method not in IDEMPOTENT_METHODS or not request.retry_safe:
            # a connection of its own: libcurl resends a request whose reused
            # connection turns out closed, and a body must never be sent twice.
            # HTTP/2 too: never a stream on a connection already in use (libcurl
            # then resends only a stream refused unprocessed, REFUSED_STREAM).
            setopt(pycurl.FRESH_CONNECT, 1)
            plain = False
        transfer.plain = plain
        if self._proxies:
            self._route(transfer, proxy)
        if self._resolver is not None:  # none for an address: another's is not set again
            curl.setopt(pycurl.RESOLVE, [] if resolved is None else [resolved])

    async def _resolve(self, url: URL, proxy: Proxy | None) -> str | None:
        """The RESOLVE entry of the host connected to for ``url`` (the proxy's,
        through one), looked up by fanout's resolver; None for an address."""
        host, port = (url.raw_host, url.port) if proxy is None else (proxy.host, proxy.port)
        entry = None
        if host and port and _is_name(host):
            assert self._resolver is not None
            try:
                answers = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
            except DNSError as exc:
                if proxy is not None:
                    text = f"cannot connect to the proxy {proxy.shown}: {exc}"
                    failure = Failure(ErrorKind.PROXY, shown(text), "DNSError")
                else:
                    failure = Failure(ErrorKind.DNS, shown(str(exc)), "DNSError")
                raise CurlError(failure, False) from None
            except asyncio.CancelledError as cancelled:  # the total deadline: nothing sent
                setattr(cancelled, _UNSENT_ATTRIBUTE, True)
                raise
            addresses = (a["host"] for a in answers)
            # "+": the entry expires in the multi's DNS cache as libcurl's own
            # lookups do (a plain one stays for good: one per host, walked on
            # every transfer); each transfer sets its name's entry again anyway
            entry = f"+{host}:{port}:" + ",".join(f"[{a}]" if ":" in a else a for a in addresses)
            if self._closed:
                raise RuntimeError("the curl transport is closed")
        return entry

    def _route(self, transfer: _Transfer, proxy: Proxy | None) -> None:
        """Send ``transfer`` through ``proxy`` (None: direct): its URL without
        credentials, which libcurl sends as the Proxy-Authorization of the
        request in absolute form (an http URL) or of the CONNECT (an https one),
        where a proxy reads it; a Proxy-Authorization among the headers is left
        out then (one only, the proxy URL's)."""
        transfer.proxy = proxy
        setopt = transfer.curl.setopt
        if proxy is None:
            setopt(pycurl.PROXY, "")
            return
        setopt(pycurl.PROXY, proxy.shown)
        setopt(pycurl.NOPROXY, "")  # fanout read no_proxy already: not libcurl again
        credentials = _proxy_credentials(proxy)
        if credentials is None:
            setopt(pycurl.PROXYUSERNAME, b"")
            setopt(pycurl.PROXYPASSWORD, b"")
            return
        setopt(pycurl.PROXYUSERNAME, credentials[0])
        setopt(pycurl.PROXYPASSWORD, credentials[1])
        lines = transfer.header_lines
        if lines and any(line[:20].lower() == b"proxy-authorization:" for line in lines):
            kept = [line for line in lines if line[:20].lower() != b"proxy-authorization:"]
            setopt(pycurl.HTTPHEADER, kept)
            transfer.header_lines = kept

    def _configure(self, transfer: _Transfer) -> None:
        """Set the options every transfer of this transport shares (after a reset)."""
        setopt = transfer.curl.setopt
        setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        setopt(pycurl.PATH_AS_IS, 1)
        setopt(pycurl.NOSIGNAL, 1)
        if not self._http2:
            setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        else:
            # wait for a connection being made to the host rather than open another
            setopt(pycurl.PIPEWAIT, 1)
        setopt(pycurl.PROXY, "")  # never the environment's proxies
        setopt(pycurl.ACCEPT_ENCODING, _ACCEPT_ENCODING)
        setopt(pycurl.HEADERFUNCTION, transfer.lines.append)
        setopt(pycurl.WRITEFUNCTION, transfer.on_body)
        connect = self._timeouts.connect
        if connect is not None:
            setopt(pycurl.CONNECTTIMEOUT_MS, max(1, round(connect * 1000)))
        for option, value in self._tls:
            setopt(option, value)
        if self._guard is not None:
            setopt(pycurl.OPENSOCKETFUNCTION, _socket_opener(transfer, self._guard, self._loop))
        transfer.configured = True
        transfer.header_lines = None
        transfer.scheme = ""

    def _result(
        self,
        transfer: _Transfer,
        request: Request,
        url: URL,
        hop: Hop | None,
        code: int,
        message: str,
    ) -> Result:
        transfer.parse()
        if transfer.abort is not None:
            raise self._failure(transfer, url, code, message)
        if code == 0 and not transfer.done:
            raise _headers_cut()
        status = transfer.status
        headers = CIMultiDictProxy(transfer.headers)
        if transfer.redirect and (code == 0 or transfer.ended):
            return Result(request, status, str(url), headers)
        if code != 0:
            raise self._failure(transfer, url, code, message)
        if transfer.kept is not None:
            body: bytes | None = transfer.kept.getvalue()
            sha256 = None
        else:
            body = None
            sha256 = transfer.digest.hexdigest()
        error = None
        if status >= 400:
            error = Failure(
                ErrorKind.HTTP_STATUS, shown(f"HTTP {status} {transfer.reason}".rstrip())
            )
        return Result(
            request,
            status,
            request.url if hop is None else str(url),
            headers,
            body,
            transfer.size,
            sha256,
            0,
            0.0,
            0.0,
            error,
        )

    def _failure(self, transfer: _Transfer, url: URL, code: int, message: str) -> CurlError:
        """The CurlError of a transfer that ended with libcurl's ``code``."""
        transfer.parse()
        if transfer.proxy is not None:
            through = _proxy_failure(transfer, url, code, message, transfer.proxy)
            if through is not None:
                return through
        if transfer.abort is not None:
            sent = transfer.abort.kind is not ErrorKind.TIMEOUT or transfer.done
            return CurlError(transfer.abort, sent or self._connected(transfer))
        cause = _NAMES.get(code, f"CURLE {code}")
        timeouts = self._timeouts
        host, port = url.host or "", url.port
        sent = True
        if code == pycurl.E_COULDNT_RESOLVE_HOST:
            kind, sent = ErrorKind.DNS, False
            text = message if host in message else f"cannot resolve {host}: {message}"
        elif code == pycurl.E_COULDNT_CONNECT and transfer.refused and not transfer.passed:
            # the guard refused every address libcurl tried (as GuardedResolver words it)
            return CurlError(
                Failure(
                    ErrorKind.DENIED, shown(f"{host} has no address allowed: {transfer.refused}")
                ),
                False,
            )
        elif code == pycurl.E_COULDNT_CONNECT:
            errno = transfer.curl.getinfo(pycurl.OS_ERRNO)
            reason = os.strerror(errno) if errno else message
            kind, text, sent = (
                ErrorKind.CONNECT,
                f"cannot connect to {host}:{port}: {reason}",
                False,
            )
        elif code == pycurl.E_OPERATION_TIMEDOUT:  # only the connect deadline is libcurl's
            kind, text, sent = (
                ErrorKind.TIMEOUT,
                f"connect deadline of {timeouts.connect:g}s",
                False,
            )
        elif code in _VERIFY_CODES:  # the words of Python's ssl module too
            kind, sent = ErrorKind.TLS, False
            text = f"certificate verify failed (CERTIFICATE_VERIFY_FAILED): {message}"
        elif code in _TLS_CODES:
            kind, text, sent = ErrorKind.TLS, f"TLS: {message}", False
        elif code == pycurl.E_URL_MALFORMAT:
            kind, text, sent = ErrorKind.INVALID_URL, f"invalid URL: {message}", False
        elif code == pycurl.E_BAD_CONTENT_ENCODING:
            encoding = transfer.headers.get("Content-Encoding", "").strip().lower()
            kind = ErrorKind.PROTOCOL
            if encoding.isalnum():
                text = f"corrupt body: not valid {encoding} data (Content-Encoding: {encoding})"
            else:
                text = f"undecodable body: {message}"
        elif code == pycurl.E_PARTIAL_FILE:
            kind, text = ErrorKind.PROTOCOL, f"incomplete or malformed body: {message}"
        elif code in (pycurl.E_HTTP2, _E_HTTP2_STREAM):
            kind, text = ErrorKind.PROTOCOL, f"HTTP/2: {message}"
            if url.scheme == "http" and not transfer.status:
                text += " (--http2 speaks HTTP/2 to http:// servers unasked: prior knowledge)"
        elif code == pycurl.E_GOT_NOTHING:
            kind, text = ErrorKind.PROTOCOL, "server disconnected before a complete response"
        elif code in (pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR):
            if not transfer.done and not self._connected(transfer):
                kind, sent = ErrorKind.CONNECT, False
                text = f"cannot connect to {host}:{port}: {message}"
            elif transfer.done:  # a 1xx's status alone is no body begun
                kind, text = ErrorKind.PROTOCOL, f"incomplete or malformed body: {message}"
            else:
                kind, text = ErrorKind.PROTOCOL, f"connection lost: {message}"
        elif code == _E_TOO_LARGE and not message:  # libcurl gives no words for it
            kind, text = ErrorKind.PROTOCOL, "malformed response: a response header too large"
        else:  # a malformed response (CURLE_WEIRD_SERVER_REPLY, a header too large...)
            kind, text = ErrorKind.PROTOCOL, f"malformed response: {message}"
        return CurlError(Failure(kind, shown(text), cause), sent)

    def classify(
        self, exc: BaseException, timeouts: Timeouts, proxy: Proxy | None = None
    ) -> tuple[Failure, bool]:
        """See :meth:`fanout.net.transports.Transport.classify`."""
        if isinstance(exc, CurlError):
            return exc.failure, exc.sent
        if isinstance(exc, TimeoutError):  # the engine's total deadline passed
            message = f"total deadline of {timeouts.total:g}s for one attempt"
            return Failure(ErrorKind.TIMEOUT, message, "TimeoutError"), True
        if isinstance(exc, pycurl.error):
            return Failure(ErrorKind.PROTOCOL, shown(f"libcurl: {exc}"), "pycurl.error"), True
        message = shown(f"unexpected error: {exc!r}")
        return Failure(ErrorKind.INTERNAL, message, type(exc).__name__), True

    def unsent(self, cancelled: BaseException) -> bool:
        """Whether the cancelled exchange had not connected yet."""
        return getattr(cancelled, _UNSENT_ATTRIBUTE, False) is True

    # ------------------------------------------------------------ transfers

    def _connected(self, transfer: _Transfer) -> bool:
        try:
            return bool(transfer.curl.getinfo(pycurl.PRETRANSFER_TIME) > 0)
        except pycurl.error:
            return True

    def _sweep_gaps(self) -> None:
        """The read deadline's lazy timer: a transfer ends when no byte came for
        ``timeouts.read`` once connected; the timer moves on to the earliest
        deadline of the others."""
        self._gaps = None
        read = self._timeouts.read
        if read is None:
            return
        now = self._loop.time()
        due = float("inf")
        for transfer in list(self._active.values()):
            future = transfer.future
            if future is None or future.done():
                continue
            last = transfer.last
            if not self._connected(transfer):
                last = now  # the connect deadline is libcurl's
            else:
                pretransfer = transfer.curl.getinfo(pycurl.PRETRANSFER_TIME)
                last = max(last, transfer.started + pretransfer)
            if now - last >= read:  # bytes libcurl holds back (part of a header line, say)?
                last = max(last, _last_received(transfer.curl, now))
            if now - last >= read:
                self._remove(transfer)
                failure = Failure(
                    ErrorKind.TIMEOUT,
                    f"read deadline: no data for {read:g}s",
                    "CURLE_OPERATION_TIMEDOUT",
                )
                future.set_exception(CurlError(failure, True))
            else:
                due = min(due, last + read)
        if self._active and due != float("inf") and not self._closed:
            self._gaps = self._loop.call_at(due, self._sweep_gaps)

    def _remove(self, transfer: _Transfer) -> None:
        """Take ``transfer`` out of the multi now (its connection is closed unless complete)."""
        if self._active.pop(transfer.curl, None) is not None:
            with contextlib.suppress(pycurl.error):  # never added (add_handle failed)
                self._multi.remove_handle(transfer.curl)
        if not self._active:
            self._disarm_safety()
            if self._gaps is not None:
                self._gaps.cancel()
                self._gaps = None

    def _release(self, transfer: _Transfer) -> None:
        self._remove(transfer)
        transfer.future = None
        transfer.kept = None
        transfer.digest = None
        transfer.headers = CIMultiDict()
        transfer.lines.clear()
        if not self._closed and len(self._pool) < self._pool_size:
            self._pool.append(transfer)
        else:
            transfer.curl.close()

    # ------------------------------------------------------------ the loop

    def _on_socket(self, what: int, fd: int, multi: Any, socketp: Any) -> None:
        loop = self._loop
        watched = self._sockets.get(fd, pycurl.POLL_NONE)
        if what == pycurl.POLL_REMOVE:
            what = pycurl.POLL_NONE
        if watched & pycurl.POLL_IN and not what & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if watched & pycurl.POLL_OUT and not what & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if what & pycurl.POLL_IN and not watched & pycurl.POLL_IN:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what & pycurl.POLL_OUT and not watched & pycurl.POLL_OUT:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        if what == pycurl.POLL_NONE:
            self._sockets.pop(fd, None)
        else:
            self._sockets[fd] = what

    def _on_timer(self, timeout_ms: int) -> None:
        if timeout_ms < 0 or self._closed:
            self._due = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        now = self._loop.time()
        due = self._due = now + timeout_ms / 1000
        # A timer armed to fire no later than this is kept (it then moves on to
        # ``due``): libcurl moves its timer on at almost every transfer.
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        if timeout_ms == 0:  # not from inside libcurl's own call
            self._timer = self._loop.call_soon(self._on_timeout)
        else:
            self._timer = self._loop.call_at(due, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if due > self._loop.time():  # moved on since armed
            self._timer_at = due
            self._timer = self._loop.call_at(due, self._on_timeout)
            return
        self._due = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        try:
            self._multi.socket_action(fd, events)
        except pycurl.error as exc:
            for transfer in list(self._active.values()):
                self._finish(transfer, -1, f"libcurl: {exc}")
            return
        self._collect()

    def _collect(self) -> None:
        while True:
            queued, ok, failed = self._multi.info_read()
            for curl in ok:
                transfer = self._active.get(curl)
                if transfer is not None:
                    self._finish(transfer, 0, "")
            for curl, code, message in failed:
                transfer = self._active.get(curl)
                if transfer is not None:
                    self._finish(transfer, code, message)
            if not queued:
                return

    def _finish(self, transfer: _Transfer, code: int, message: str) -> None:
        self._remove(transfer)
        future = transfer.future
        if future is not None and not future.done():
            future.set_result((code, message))

    def _arm_safety(self) -> None:
        if self._safety is None:
            self._safety = self._loop.call_later(_SAFETY_INTERVAL, self._on_safety)

    def _disarm_safety(self) -> None:
        if self._safety is not None:
            self._safety.cancel()
            self._safety = None

    def _on_safety(self) -> None:
        self._safety = None
        if self._active and not self._closed:
            self._act(pycurl.SOCKET_TIMEOUT, 0)
            if self._active:
                self._arm_safety()

    async def close(self) -> None:
        """End every transfer, stop watching its sockets, close the multi and the handles."""
        if self._closed:
            return
        self._closed = True
        for transfer in list(self._active.values()):
            future = transfer.future
            self._remove(transfer)
            if future is not None and not future.done():
                future.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._disarm_safety()
        for transfer in self._pool:
            transfer.curl.close()
        self._pool.clear()
        self._multi.close()  # closes the cached connections: POLL_REMOVE for each
        for fd in list(self._sockets):
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._sockets.clear()
        if self._resolver is not None:
            await self._resolver.close()


def _last_received(curl: Any, now: float) -> float:
    """The loop's time when the transfer's socket last received data, by the
    kernel's count (Linux's TCP_INFO), else 0.0: libcurl reports a header
    only once its line is whole, and a compressed body once it decodes to
    something, while the read deadline is the longest gap between bytes."""
    try:
        fd = curl.getinfo(pycurl.ACTIVESOCKET)
        if fd < 0:
            return 0.0
        with socket.socket(fileno=os.dup(fd)) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError, pycurl.error):  # AttributeError: no TCP_INFO here
        return 0.0
    if len(info) < _TCPI_LAST_DATA_RECV.size + 52:
        return 0.0
    idle_ms: int = _TCPI_LAST_DATA_RECV.unpack_from(info, 52)[0]
    return now - idle_ms / 1000


def _socket_opener(
    transfer: _Transfer, guard: HostGuard, loop: asyncio.AbstractEventLoop
) -> Callable[[int, Any], Any]:
    """libcurl's OPENSOCKETFUNCTION for ``transfer``: the guard judges each address
    libcurl is about to connect to (the one it resolved and connects to, so a
    name that resolves to another address the next time is judged again: DNS
    rebinding); a refused one gets no socket (libcurl tries the next address, or
    fails with CURLE_COULDNT_CONNECT, which :meth:`CurlTransport._failure` reads
    as ``denied``). pycurl duplicates the descriptor of the socket returned:
    this one is closed once libcurl has its copy."""
    check = guard.check_address

    def open_socket(purpose: int, address: Any) -> Any:
        try:
            family, socktype, protocol, peer = address
            refused = check(transfer.host, str(peer[0]))
            if refused is not None:
                if transfer.refused is None:
                    transfer.refused = refused
                return pycurl.SOCKET_BAD
            opened = socket.socket(family, socktype, protocol)
        except Exception:  # never connect unchecked; the error is libcurl's to report
            return pycurl.SOCKET_BAD
        transfer.passed = True
        loop.call_soon(opened.close)
        return opened

    return open_socket


def _proxy_credentials(proxy: Proxy) -> tuple[bytes, bytes] | None:
    """The user and password of ``proxy``'s Basic Proxy-Authorization, as bytes
    (libcurl encodes them again, to the same header)."""
    if proxy.authorization is None:
        return None
    decoded = base64.b64decode(proxy.authorization.removeprefix("Basic "))
    user, _, password = decoded.partition(b":")
    return user, password


def _proxy_failure(
    transfer: _Transfer, url: URL, code: int, message: str, proxy: Proxy
) -> CurlError | None:
    """The CurlError of a transfer through ``proxy`` that the proxy ended (as
    aiohttp's are: a proxy that cannot be reached is tried again, an answer of
    the proxy's is final), or None when the target did."""
    curl = transfer.curl
    try:
        tunnel = curl.getinfo(pycurl.HTTP_CONNECTCODE)
    except pycurl.error:
        tunnel = 0
    if url.scheme == "https" and tunnel and not 200 <= tunnel < 300:
        text = f"the proxy {proxy.shown} refused the tunnel: HTTP {tunnel} {transfer.reason}"
        return CurlError(Failure(ErrorKind.PROXY, shown(text.rstrip())), False)
    if code == pycurl.E_COULDNT_RESOLVE_PROXY or (
        code == pycurl.E_COULDNT_CONNECT and not tunnel and not transfer.refused
    ):
        errno = curl.getinfo(pycurl.OS_ERRNO)
        reason = os.strerror(errno) if errno else message
        text = f"cannot connect to the proxy {proxy.shown}: {reason}"
        return CurlError(Failure(ErrorKind.PROXY, shown(text), _NAMES.get(code)), False)
    tls = code in _TLS_CODES
    if tls and proxy.shown.startswith("https:") and (url.scheme == "http" or not tunnel):
        # TLS with the proxy itself
        if code in _VERIFY_CODES:
            reason = f"certificate verify failed (CERTIFICATE_VERIFY_FAILED): {message}"
        else:
            reason = f"TLS: {message}"
        text = f"cannot connect to the proxy {proxy.shown}: {reason}"
        return CurlError(Failure(ErrorKind.PROXY, shown(text), _NAMES.get(code)), False)
    if (
        url.scheme == "https"
        and code not in (0, pycurl.E_OPERATION_TIMEDOUT)
        and not tls
        and transfer.abort is None
        and not _handshaken(curl)
    ):  # the proxy's answer to CONNECT is not HTTP: nothing reached the target
        text = f"the proxy {proxy.shown} sent a malformed answer to CONNECT: {message}"
        return CurlError(Failure(ErrorKind.PROXY, shown(text)), False)
    return None


def _headers_cut() -> CurlError:
    """The error of a response whose headers never ended: libcurl ends such a
    transfer without an error (as if they had), aiohttp does not."""
    failure = Failure(
        ErrorKind.PROTOCOL,
        "server disconnected before a complete response",
        _NAMES[pycurl.E_GOT_NOTHING],
    )
    return CurlError(failure, True)


def _proxy_answered_last(transfer: _Transfer) -> bool:
    """Whether the last response among ``transfer``'s header lines is its
    proxy's answer to CONNECT (the target answered nothing after it): libcurl
    hands that answer's lines over first, and its cookies are not the target's."""
    try:
        tunnel = transfer.curl.getinfo(pycurl.HTTP_CONNECTCODE)  # 0: no CONNECT this time
    except pycurl.error:
        return True
    if not tunnel:
        return False
    lines = transfer.lines
    end = next((i for i, line in enumerate(lines) if line in (b"\r\n", b"\n")), len(lines))
    return not any(line.startswith(b"HTTP/") for line in lines[end + 1 :])


def _is_name(host: str) -> bool:
    """Whether ``host`` is a name to resolve, not an address."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    return False


def _handshaken(curl: Any) -> bool:
    """Whether the TLS handshake with the target (through the tunnel) is done."""
    try:
        return bool(curl.getinfo(pycurl.APPCONNECT_TIME) > 0)
    except pycurl.error:
        return True


def _header_lines(
    credentials: bool,
    defaults: Mapping[str, str],
    given: Mapping[str, str] | None,
    skip: tuple[str, ...],
    has_body: bool,
) -> list[str]:
    """The request's header lines for libcurl: the given headers, the defaults
    they do not set and ``skip`` does not name, libcurl's own left out where
    ``skip`` names them. A URL with ``credentials`` sends them as its Authorization."""
    headers = dict(given or {})
    named = {name.lower() for name in headers}
    skipped = {name.lower() for name in skip}
    for name, value in defaults.items():
        if name.lower() not in named and name.lower() not in skipped:
            headers[name] = value
            named.add(name.lower())
    if credentials:
        headers = {name: v for name, v in headers.items() if name.lower() != "authorization"}
        named.discard("authorization")
    lines = [f"{name}: {value}" if value else f"{name};" for name, value in headers.items()]
    if has_body:
        if "content-type" not in named:  # as aiohttp: not libcurl's form type
            lines.append("Content-Type: application/octet-stream")
        lines.append("Expect:")  # no 100-continue round trip
    elif "content-type" not in named:  # libcurl's form type of an empty POST
        lines.append("Content-Type:")
    lines.extend(f"{name}:" for name in skip if name.lower() not in named)
    return lines


def _tls_options(
    cacert: StrPath | None, verify: bool, client_cert: tuple[StrPath, StrPath] | None
) -> list[tuple[int, Any]]:
    """The easy options of these TLS settings (checked by FetcherConfig already)."""
    options: list[tuple[int, Any]] = []
    if not verify:
        options += [(pycurl.SSL_VERIFYPEER, 0), (pycurl.SSL_VERIFYHOST, 0)]
    elif cacert is not None:  # these CAs instead of the system's
        options += [(pycurl.CAINFO, os.fspath(cacert)), (pycurl.CAPATH, "")]
    else:
        paths = ssl.get_default_verify_paths()
        if paths.cafile is not None:
            options.append((pycurl.CAINFO, paths.cafile))
        if paths.capath is not None:
            options.append((pycurl.CAPATH, paths.capath))
    if client_cert is not None:
        cert, key = client_cert
        options += [(pycurl.SSLCERT, os.fspath(cert)), (pycurl.SSLKEY, os.fspath(key))]
    return options
