"""Trap servers: raw HTTP/1.1 on loopback that answers what no honest server would.

:class:`Traps` listens on several loopback addresses at once (by default
127.0.0.1, 127.0.0.2 and ::1: three origins on one machine, each on a port of
its own), records every request it receives, byte for byte, and answers each
path with a scripted :class:`Reply`: raw bytes, then a close, a reset or a
kept connection. The helpers below build the usual traps (garbage status
lines, huge headers, lying lengths, bombs, deep JSON, redirects).

>>> async def example() -> None:  # doctest: +SKIP
...     async with Traps() as traps:
...         traps.route("/x", Reply(response(200, body=b"hi")))
...         ...  # fetch traps.base("127.0.0.1") + "/x"
...         assert traps.connections(traps.base("127.0.0.2")) == 0

For code that runs its own event loop (the command line in-process), serve
in a thread: ``with in_thread(Traps) as traps: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import socket
import struct
import sys
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Literal, Self

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "ORIGINS",
    "Reply",
    "Route",
    "Seen",
    "Traps",
    "chunked",
    "dead_port",
    "deep_json",
    "gzip_bomb",
    "mapped_loopback_reachable",
    "redirect",
    "response",
]

ORIGINS = ("127.0.0.1", "127.0.0.2", "::1")
"""Three loopback addresses: three origins (scheme, host, port) on one machine."""

_MAX_HEAD = 1 << 20  # the most bytes of a request head a trap reads
_MAX_BODY = 16 << 20  # the most bytes of a request body a trap reads


@dataclass(frozen=True, slots=True)
class Reply:
    """What a trap sends: ``data`` as it is, then ``end``: ``"close"`` the
    connection, ``"reset"`` it (an RST, the unread data dropped), or
    ``"keep"`` it open for the next request."""

    data: bytes = b""
    end: Literal["close", "reset", "keep"] = "close"


@dataclass(slots=True)
class Seen:
    """One request as a trap received it."""

    base: str
    """The listener's base URL, e.g. ``http://127.0.0.2:41234``: its origin."""
    connection: int
    """Which connection (numbered from 1 in accept order, over all listeners)."""
    order: int
    """Arrival order of the request (from 1, over all listeners)."""
    request_line: bytes
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def method(self) -> str:
        return self.request_line.split(b" ", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        """The request target as sent, e.g. ``/a?b=1``."""
        parts = self.request_line.split(b" ")
        return parts[1].decode("latin-1") if len(parts) > 1 else ""

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]

    def headers(self, name: str) -> list[str]:
        """Every value of the header ``name`` (any case), in order."""
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw_headers if k.lower() == wanted]

    def header(self, name: str) -> str | None:
        """The first value of the header ``name``, or None."""
        values = self.headers(name)
        return values[0] if values else None

    @property
    def raw(self) -> bytes:
        """The whole request as received (head and body), to grep for secrets."""
        head = b"".join(k + b": " + v + b"\r\n" for k, v in self.raw_headers)
        return self.request_line + b"\r\n" + head + b"\r\n" + self.body


Route = Reply | Callable[[Seen], Reply | Awaitable[Reply]]
"""How a trap answers a path: a fixed :class:`Reply`, or a function of the request."""


@dataclass(slots=True)
class _Listener:
    host: str
    base: str = ""
    server: asyncio.Server | None = None
    connections: int = 0
    in_flight: int = 0
    peak: int = 0


@dataclass(slots=True)
class _State:
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Condition | None = None


class Traps:
    """Trap servers on ``hosts`` (loopback addresses; a repeated address gets
    another port, so another origin), recording every request and answering
    each path by its :class:`Route` (unknown paths: 404)."""

    def __init__(self, hosts: Sequence[str] = ORIGINS) -> None:
        for host in hosts:
            if not _is_loopback(host):
                raise ValueError(f"a trap listens on loopback only, not {host!r}")
        self._listeners = [_Listener(host) for host in hosts]
        self._routes: dict[str, Route] = {
            "/ok": Reply(response(200, [("Content-Type", "text/plain")], b"ok")),
        }
        self._state = _State()
        self._connection_ids = itertools.count(1)
        self._order = itertools.count(1)
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._state.changed = asyncio.Condition()
        try:
            for listener in self._listeners:
                listener.server = await asyncio.start_server(
                    functools.partial(self._serve, listener),
                    host=listener.host,
                    port=0,
                    limit=_MAX_HEAD,
                    reuse_address=True,
                )
                port = listener.server.sockets[0].getsockname()[1]
                shown = f"[{listener.host}]" if ":" in listener.host else listener.host
                listener.base = f"http://{shown}:{port}"
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        for listener in self._listeners:
            if listener.server is not None:
                listener.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for listener in self._listeners:
            if listener.server is not None:
                await listener.server.wait_closed()

    # ------------------------------------------------------------ the script

    def route(self, path: str, route: Route) -> str:
        """Answer ``path`` (without query) with ``route`` on every listener; returns ``path``."""
        self._routes[path] = route
        return path

    # ------------------------------------------------------------ what was seen

    @property
    def bases(self) -> list[str]:
        """The base URL of every listener, in the order of ``hosts``."""
        return [listener.base for listener in self._listeners]

    def base(self, host: str) -> str:
        """The base URL of the first listener on ``host``."""
        for listener in self._listeners:
            if listener.host == host:
                return listener.base
        raise KeyError(host)

    def seen(self, base: str | None = None, path: str | None = None) -> list[Seen]:
        """The requests received (at ``base``, for ``path``), in arrival order."""
        return [
            s
            for s in list(self._state.seen)
            if (base is None or s.base == base) and (path is None or s.path == path)
        ]

    def connections(self, base: str | None = None) -> int:
        """Connections accepted (at ``base``, else at every listener)."""
        return sum(n.connections for n in self._listeners if base is None or n.base == base)

    def in_flight(self, base: str) -> int:
        """Requests received at ``base`` and not yet answered."""
        return self._listener(base).in_flight

    def peak(self, base: str) -> int:
        """The most requests in flight at once at ``base``."""
        return self._listener(base).peak

    async def wait_until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait (on the traps' loop, e.g. in a route) until ``predicate()`` holds,
        checked whenever a request arrives or ends; False once ``within`` seconds passed."""
        changed = self._state.changed
        assert changed is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), changed:
                await changed.wait_for(predicate)
                return True
        return predicate()

    def _listener(self, base: str) -> _Listener:
        for listener in self._listeners:
            if listener.base == base:
                return listener
        raise KeyError(base)

    # ------------------------------------------------------------ serving

    async def _serve(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        listener.connections += 1
        connection = next(self._connection_ids)
        self._writers.add(writer)
        end = "close"
        try:
            while True:
                seen = await _read_request(reader, listener.base, connection, self._order)
                if seen is None:
                    break
                self._state.seen.append(seen)
                await self._count(listener, +1)
                try:
                    reply = await self._answer(seen)
                    writer.write(reply.data)
                    await writer.drain()
                finally:
                    await self._count(listener, -1)
                end = reply.end
                if end != "keep":
                    break
        except (
            ConnectionError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            end = "close"  # the client went away or sent no HTTP: drop the connection
        finally:
            self._writers.discard(writer)
            if end == "reset":
                _reset(writer)
            else:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    async def _answer(self, seen: Seen) -> Reply:
        route = self._routes.get(seen.path)
        if route is None:
            return Reply(response(404, body=b"no such trap"))
        if isinstance(route, Reply):
            return route
        reply = route(seen)
        if inspect.isawaitable(reply):
            return await reply
        return reply

    async def _count(self, listener: _Listener, step: int) -> None:
        listener.in_flight += step
        listener.peak = max(listener.peak, listener.in_flight)
        changed = self._state.changed
        assert changed is not None
        async with changed:
            changed.notify_all()


async def _read_request(
    reader: asyncio.StreamReader, base: str, connection: int, order: Iterator[int]
) -> Seen | None:
    """One request from ``reader``, or None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    line, *lines = head[:-4].split(b"\r\n")
    headers = []
    for raw in lines:
        name, _, value = raw.partition(b":")
        headers.append((name.strip(), value.strip()))
    seen = Seen(base, connection, next(order), line, headers, b"")
    if (seen.header("Transfer-Encoding") or "").lower() == "chunked":
        seen.body = await _read_chunked(reader)
    else:
        length = int(seen.header("Content-Length") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise ConnectionError(f"request body of {length} bytes refused")
        seen.body = await reader.readexactly(length)
    return seen


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent by fanout
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise ConnectionError("request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- responses

HeaderItem = tuple[str | bytes, str | bytes]


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def response(
    status: int | bytes = 200,
    headers: Iterable[HeaderItem] = (),
    body: bytes = b"",
    *,
    length: bool = True,
    close: bool = True,
) -> bytes:
    """A raw HTTP/1.1 response. ``status`` is a code (with its usual phrase) or
    the whole status line as bytes; ``headers`` are sent as given, any bytes;
    ``length`` adds a Content-Length of ``body`` (unless ``headers`` has one);
    ``close`` adds ``Connection: close`` (the trap closes after answering)."""
    if isinstance(status, int):
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Whatever"
        line = f"HTTP/1.1 {status} {phrase}".encode()
    else:
        line = status
    items = [(_bytes(k), _bytes(v)) for k, v in headers]
    names = {k.lower() for k, _ in items}
    if length and b"content-length" not in names and b"transfer-encoding" not in names:
        items.append((b"Content-Length", str(len(body)).encode()))
    if close and b"connection" not in names:
        items.append((b"Connection", b"close"))
    head = b"".join(k + b": " + v + b"\r\n" for k, v in items)
    return line + b"\r\n" + head + b"\r\n" + body


def redirect(status: int, location: str, headers: Iterable[HeaderItem] = ()) -> Reply:
    """A redirect with ``status`` (301, 302, 303, 307, 308) to ``location``."""
    return Reply(response(status, [("Location", location), *headers]))


def chunked(*chunks: bytes) -> bytes:
    """``chunks`` in chunked transfer coding, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"


@functools.cache
def gzip_bomb(decoded: int = 64 << 20, wbits: int = 31) -> bytes:
    """``decoded`` zero bytes compressed: gzip with ``wbits=31`` (about 1,000
    times smaller), zlib ("deflate") with 15."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded // len(block))]
    parts.append(compressor.compress(bytes(decoded % len(block))))
    parts.append(compressor.flush())
    return b"".join(parts)


@functools.cache
def zeros_compressed(encoding: Literal["br", "zstd"], decoded: int = 64 << 20) -> bytes:
    """``decoded`` zero bytes in brotli or zstd (both thousands of times smaller)."""
    if encoding == "br":
        return bytes(brotli.compress(bytes(decoded), quality=1))
    return zstd.compress(bytes(decoded))


def deep_json(depth: int, kind: Literal["list", "object"] = "list") -> bytes:
    """Valid JSON nested ``depth`` levels deep: ``[[[...]]]`` or ``{"a":{"a":...}}``."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def dead_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on (bound, noted, closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def mapped_loopback_reachable() -> bool:
    """Whether this machine connects to ``::ffff:127.0.0.1`` (an IPv4-mapped
    IPv6 address) as to 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6) as client:
                client.settimeout(5)
                client.connect(("::ffff:127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- the catalogue

CAP = 1 << 20
"""The body cap (``--max-bytes``, ``Caps.max_bytes``) the catalogue is served under."""


def _with_headers(*headers: HeaderItem, status: int = 200, body: bytes = b"{}") -> Reply:
    return Reply(response(status, headers, body))


def _bomb(encoding: str, wbits: int = 0, *, length: bool = True) -> Reply:
    bomb = zeros_compressed(encoding) if encoding in ("br", "zstd") else gzip_bomb(64 << 20, wbits)
    if length:
        return Reply(response(200, [("Content-Encoding", encoding)], bomb))
    head = [("Content-Encoding", encoding), ("Transfer-Encoding", "chunked")]
    return Reply(
        response(200, head, chunked(*(bomb[i : i + 8192] for i in range(0, len(bomb), 8192))))
    )


def catalogue() -> dict[str, Reply]:
    """Every fixed trap by name: what one response can do to a client. A trap
    is served at ``/trap/<name>``; bodies are meant to be read under :data:`CAP`."""
    long_reason = b"HTTP/1.1 418 \x1b[31mred\x1b]0;title\x07 \xff\xfe\xe2\x80\xae" + b"x" * 4000
    json_type = ("Content-Type", "application/json")
    return {
        # status lines
        "garbage-status-line": Reply(b"HELLO WORLD\r\n\r\n"),
        "no-status-line": Reply(b"Content-Type: text/plain\r\n\r\nhi"),
        "body-only": Reply(b"<html>no status line, no headers</html>"),
        "nothing": Reply(b""),
        "status-999": Reply(response(b"HTTP/1.1 999 Odd")),
        "status-000": Reply(response(b"HTTP/1.1 000 Zero")),
        "status-2-digits": Reply(response(b"HTTP/1.1 20 OK")),
        "status-letters": Reply(response(b"HTTP/1.1 abc OK")),
        "status-http-2": Reply(response(b"HTTP/2 200 OK")),
        "reason-with-escapes": Reply(response(long_reason)),
        "informational-then-close": Reply(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "switching-protocols": Reply(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n"
        ),
        # headers
        "header-line-1mb": _with_headers(("X-Big", b"x" * (1 << 20))),
        "headers-10000": Reply(response(200, [(f"X-H{i}", "v") for i in range(10_000)], b"{}")),
        "nul-in-header": _with_headers(("X-A", b"a\x00b")),
        "cr-in-header": _with_headers(("X-A", b"a\rb")),
        "escape-in-header": _with_headers(("Content-Type", b"text/plain\x1b[2J; charset=utf-8")),
        "obs-fold": Reply(response(b"HTTP/1.1 200 OK\r\nX-A: a\r\n  folded", body=b"{}")),
        "header-no-colon": Reply(response(b"HTTP/1.1 200 OK\r\nno colon here", body=b"{}")),
        "set-cookie-garbage": _with_headers(
            ("Set-Cookie", b"\xff=\x00; Path=\x01; Max-Age=9" + b"9" * 400)
        ),
        # lengths
        "content-length-huge": _with_headers(("Content-Length", "9" * 30)),
        "content-length-over-cap": _with_headers(("Content-Length", str(10**12))),
        "content-length-negative": _with_headers(("Content-Length", "-1")),
        "content-length-conflicting": Reply(
            response(200, [("Content-Length", "2"), ("Content-Length", "3")], b"{}", length=False)
        ),
        "content-length-list": _with_headers(("Content-Length", "2, 3")),
        "content-length-short-body": Reply(
            response(200, [("Content-Length", "100")], b"0123456789")
        ),
        "chunked-bad-size": Reply(
            response(200, [("Transfer-Encoding", "chunked")], b"zz\r\nabc\r\n0\r\n\r\n")
        ),
        "chunked-huge-size": Reply(
            response(200, [("Transfer-Encoding", "chunked")], b"ffffffffffffffffffff\r\nab\r\n")
        ),
        "chunked-and-length": Reply(
            response(
                200,
                [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                b"2\r\n{}\r\n0\r\n\r\n",
            )
        ),
        # Retry-After (on statuses that make fanout read it)
        "retry-after-400-digits": _with_headers(("Retry-After", "9" * 400), status=503),
        "retry-after-year-9999": _with_headers(
            ("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"), status=503
        ),
        "retry-after-year-1": _with_headers(
            ("Retry-After", "Mon, 01 Jan 0001 00:00:00 GMT"), status=429
        ),
        "retry-after-negative": _with_headers(("Retry-After", "-5"), status=503),
        "retry-after-garbage": _with_headers(("Retry-After", b"\x01soon\xff"), status=429),
        "retry-after-float": _with_headers(("Retry-After", "1e999"), status=503),
        # charsets and encodings
        "charset-zlib": _with_headers(("Content-Type", "text/plain; charset=zlib"), body=b"hello"),
        "charset-base64": _with_headers(("Content-Type", "text/plain; charset=base64"), body=b"*"),
        "charset-rot13": _with_headers(("Content-Type", "text/plain; charset=rot13"), body=b"abc"),
        "charset-idna": _with_headers(
            ("Content-Type", "text/plain; charset=idna"), body=b"\xff\xfe"
        ),
        "charset-utf-16-odd": _with_headers(
            ("Content-Type", "text/plain; charset=utf-16"), body=b"\xff"
        ),
        "gzip-bomb": _bomb("gzip", 31),
        "gzip-bomb-chunked": _bomb("gzip", 31, length=False),
        "deflate-bomb": _bomb("deflate", 15),
        "gzip-garbage": _with_headers(("Content-Encoding", "gzip"), body=b"not gzip at all"),
        "br-garbage": _with_headers(("Content-Encoding", "br"), body=b"not brotli"),
        "br-bomb": _bomb("br"),
        "br-bomb-chunked": _bomb("br", length=False),
        "zstd-garbage": _with_headers(
            ("Content-Encoding", "zstd"), body=b"\x28\xb5\x2f\xfdnot zstd"
        ),
        "zstd-bomb": _bomb("zstd"),
        "zstd-bomb-chunked": _bomb("zstd", length=False),
        "unknown-encoding": _with_headers(("Content-Encoding", "x-evil"), body=b"{}"),
        "identity-over-cap": Reply(response(200, [], bytes(CAP + 1))),
        # JSON
        "json-deep-300": _with_headers(json_type, body=deep_json(300)),
        "json-deep-1000": _with_headers(json_type, body=deep_json(1000)),
        "json-deep-100000": _with_headers(json_type, body=deep_json(100_000)),
        "json-deep-objects-300": _with_headers(json_type, body=deep_json(300, "object")),
        "json-huge-number": _with_headers(json_type, body=b"[1e999, -1e999, " + b"9" * 5000 + b"]"),
        "json-lone-surrogate": _with_headers(json_type, body=b'["\\ud800", {"\\udfff": 1}]'),
        # ends
        "close-mid-body": Reply(response(200, [("Content-Length", "100")], b"01234")),
        "reset-after-head": Reply(response(200, [("Content-Length", "100")]), end="reset"),
        "reset-at-once": Reply(b"", end="reset"),
        # redirects
        "redirect-no-location": Reply(response(302)),
        "redirect-bad-location": redirect(302, "http://[::1"),
        "redirect-control-location": Reply(response(302, [("Location", b"/ok\x01\x7f")])),
        "redirect-file-scheme": redirect(302, "file:///etc/passwd"),
        "redirect-loop": redirect(302, "/trap/redirect-loop"),
    }
