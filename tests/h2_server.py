"""An HTTP/2 server on loopback (hypercorn serving a small ASGI app), cleartext
with prior knowledge (h2c) or TLS with ALPN, which counts what arrives: the
connections (by the client's port), the HTTP versions and the requests in
flight at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.tls_server import TLSFiles

__all__ = ["H2App", "h2_server"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

# No request is held longer than this (seconds): a test that goes wrong ends.
_HOLD_DEADLINE = 20.0


@dataclass
class H2App:
    """The ASGI app. ``/hold?n=N`` holds requests in batches of N: a batch is
    answered once its N requests have all arrived (or after a deadline, with
    504; one whose stream is reset first is counted in ``resets``);
    ``/bytes?n=N`` sends N bytes; ``/status/N`` answers N; ``/to?url=U``
    redirects to U; anything else answers ``ok``. A request's body is read."""

    connections: set[tuple[str, int]] = field(default_factory=set)
    versions: list[str] = field(default_factory=list)
    methods: list[tuple[str, tuple[str, int]]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    resets: int = 0  # held requests whose stream the client reset
    _batch: list[asyncio.Event] = field(default_factory=list)  # [the current batch's]
    _waiting: int = 0  # requests in the current batch

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        client = tuple(scope["client"])
        self.connections.add(client)
        self.versions.append(scope["http_version"])
        self.methods.append((scope["method"], client))
        while (await receive()).get("more_body"):
            pass
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            answer = await self._answer(scope, receive)
        finally:
            self.in_flight -= 1
        if answer is None:  # the client reset the stream
            return
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path: str = scope["path"]
        query = dict(
            part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
        )
        if path == "/hold":
            if not self._batch:
                self._batch.append(asyncio.Event())
            full = self._batch[0]
            self._waiting += 1
            if self._waiting >= int(query["n"]):  # the batch is complete: the next starts
                full.set()
                self._batch.clear()
                self._waiting = 0
            released = asyncio.ensure_future(full.wait())
            gone = asyncio.ensure_future(receive())  # http.disconnect: the stream was reset
            done, pending = await asyncio.wait(
                {released, gone}, timeout=_HOLD_DEADLINE, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if released in done:
                return 200, [], b"held"
            if gone in done:
                self.resets += 1
                return None
            return 504, [], b"not enough requests arrived"
        if path == "/bytes":
            return 200, [(b"content-type", b"text/plain")], b"x" * int(query["n"])
        if path.startswith("/status/"):
            return int(path[8:]), [], b"status"
        if path == "/to":
            return 302, [(b"location", query["url"].encode())], b""
        return 200, [], b"ok"


@contextlib.asynccontextmanager
async def h2_server(
    app: H2App, *, tls: TLSFiles | None = None, directory: Path | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port: h2c (and HTTP/1.1) without
    ``tls``; with it, https offering h2 by ALPN with the certificate of
    ``tls.server`` (written to ``directory``). Yields the base URL."""
    config = Config()
    config.graceful_timeout = 5.0
    config.accesslog = None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    scheme = "http"
    if tls is not None:
        assert directory is not None
        cert, key = directory / "h2-server.pem", directory / "h2-server.key"
        tls.server.cert_chain_pems[0].write_to_path(str(cert))
        tls.server.private_key_pem.write_to_path(str(key))
        config.certfile, config.keyfile = str(cert), str(key)
        scheme = "https"
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns the socket from now
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
