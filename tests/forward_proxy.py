"""A small, real HTTP forward proxy on loopback, for the proxy tests.

It forwards requests in absolute form (``GET http://host:port/path``) to their
host, one request per connection (``Connection: close`` both ways), without
the hop-by-hop headers (``Proxy-Authorization`` among them, as a proxy must),
and tunnels ``CONNECT host:port``. It can require a ``Proxy-Authorization``
(407 otherwise), answer CONNECT with an error status, resolve names of its
own (``hosts``, so a test can name hosts fanout cannot resolve), and records
the request line and headers of everything it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["ForwardProxy", "Seen", "forward_proxy"]

_HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy was sent: its method, target and headers (lower-case names)."""

    method: str
    target: str
    headers: dict[str, str]
    names: list[str] = field(default_factory=list)  # every header line's name, repeats kept


@dataclass
class ForwardProxy:
    """What the running proxy was told to do, and what it saw."""

    authorization: str | None = None  # the Proxy-Authorization required, if any
    connect_status: int | None = None  # answer every CONNECT with this status instead
    connect_headers: str = ""  # header lines ("Name: value\r\n") of its answers to CONNECT
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address, before DNS
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        names: list[str] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
                names.append(name.strip().lower())
        self.seen.append(Seen(method, target, headers, names))
        if self.authorization is not None and headers.get("proxy-authorization") != (
            self.authorization
        ):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            return
        if method == "CONNECT":
            await self._tunnel(target, reader, writer)
        else:
            await self._forward(method, target, headers, reader, writer)

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.connect_status is not None:
            answer = f"HTTP/1.1 {self.connect_status} Refused\r\n{self.connect_headers}\r\n"
            writer.write(answer.encode())
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await self._open(host, port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            await writer.drain()
            return
        writer.write(f"HTTP/1.1 200 Connection established\r\n{self.connect_headers}\r\n".encode())
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        rest = target.removeprefix("http://")
        authority, slash, path = rest.partition("/")
        host, _, port = authority.rpartition(":")
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        kept = [(n, v) for n, v in headers.items() if n not in _HOP_BY_HOP]
        request = f"{method} {slash}{path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept)
        up_reader, up_writer = await self._open(host, port)
        try:
            up_writer.write(request.encode("latin-1") + b"Connection: close\r\n\r\n" + body)
            await up_writer.drain()
            await _pipe(up_reader, writer)
        finally:
            up_writer.close()

    async def _open(
        self, host: str, port: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = host.strip("[]")
        return await asyncio.open_connection(self.hosts.get(host, host), int(port))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the end of ``reader``, then end ``writer``'s side."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


@contextlib.asynccontextmanager
async def forward_proxy(
    *,
    authorization: str | None = None,
    connect_status: int | None = None,
    hosts: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[ForwardProxy]:
    """A forward proxy on 127.0.0.1, its URL in ``.url`` (no credentials); an
    https:// one (TLS to the proxy itself) with ``tls``, the server's context."""
    proxy = ForwardProxy(
        authorization=authorization, connect_status=connect_status, hosts=dict(hosts or {})
    )
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    proxy.url = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        await server.wait_closed()
        for task in list(proxy.tasks):  # connections a client kept open
            task.cancel()
        await asyncio.gather(*proxy.tasks, return_exceptions=True)
