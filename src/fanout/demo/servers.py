"""The demo app served on loopback: :class:`DemoServer` (async),
:class:`ServerThread` (a thread, for sync code) and :func:`serve_forever`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from fanout.demo.app import make_app
from fanout.demo.endpoint import _STOP, STATS_KEY
from fanout.demo.stats import Stats
from fanout.errors import ConfigError


def _bind_address(host: str) -> str:
    """The loopback address to bind for ``host``; ConfigError for anything else."""
    if host == "localhost":
        return "127.0.0.1"  # one socket, so one port, whatever localhost resolves to
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ConfigError(f"host must be a loopback address (127.0.0.0/8, ::1), not {host!r}")
    return str(address)


class DemoServer:
    """The demo app listening on loopback, as an async context manager.

    Once ``async with`` has entered, every socket is listening. With ``hosts``
    it listens on each (each on its own port, or all on ``port`` if given),
    and ``urls`` lists their base URLs in order; ``url`` is the first.

    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with DemoServer(hosts=["127.0.0.1", "127.0.0.2"]) as server:
    ...         print(server.urls)  # ['http://127.0.0.1:41235', 'http://127.0.0.2:39071']
    ...         print(server.stats.peak_in_flight("127.0.0.1:41235"))
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hosts: Sequence[str] | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._hosts = [host] if hosts is None else list(hosts)
        if not self._hosts:
            raise ConfigError("hosts must name at least one loopback address")
        self._binds = [_bind_address(h) for h in self._hosts]
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {port!r}")
        self._port = port
        self._app = make_app(latency=latency, jitter=jitter, error_rate=error_rate, seed=seed)
        self._runner: web.AppRunner | None = None
        self._started = False
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        """The base URL of the first host, like ``http://127.0.0.1:8080``."""
        if not self.urls:
            raise RuntimeError("the demo server is not running")
        return self.urls[0]

    @property
    def stats(self) -> Stats:
        """What the server has seen so far (live, not a copy)."""
        return self._app[STATS_KEY]

    async def __aenter__(self) -> DemoServer:
        if self._started:
            raise RuntimeError("a DemoServer runs once; make a new one")
        self._started = True
        self._runner = web.AppRunner(
            self._app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        try:
            for host, bind in zip(self._hosts, self._binds, strict=True):
                family = socket.AF_INET6 if ":" in bind else socket.AF_INET
                sock = socket.create_server((bind, self._port), family=family)
                port = sock.getsockname()[1]
                await web.SockSite(self._runner, sock).start()
                self.urls.append(
                    f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
                )
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._app[_STOP].set()  # before cleanup, so hanging handlers end at once
            await runner.cleanup()
        self.urls = []


class ServerThread:
    """A DemoServer on its own event loop in a background thread, for sync code.

    Takes the same arguments as :class:`DemoServer`, checked at once.

    >>> with ServerThread(latency=0.01) as server:  # doctest: +SKIP
    ...     urllib.request.urlopen(f"{server.url}/items/1").read()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.server = DemoServer(host, port, **options)
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], object] | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL of the first host."""
        return self.server.url

    @property
    def urls(self) -> list[str]:
        """The base URLs of every host."""
        return self.server.urls

    @property
    def stats(self) -> Stats:
        """What the server has seen (read it once the requests are done)."""
        return self.server.stats

    def _main(self, ready: concurrent.futures.Future[Callable[[], object]]) -> None:
        async def serve() -> None:
            stop, loop = asyncio.Event(), asyncio.get_running_loop()
            async with self.server:
                ready.set_result(lambda: loop.call_soon_threadsafe(stop.set))
                await stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # raised again in the caller's thread, not lost here
            if ready.done():
                self._error = exc
            else:
                ready.set_exception(exc)

    def __enter__(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("the server thread is already running")
        ready: concurrent.futures.Future[Callable[[], object]] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="fanout-demo", daemon=True
        )
        self._thread.start()
        try:
            self._stop = ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, stop = self._thread, self._stop
        self._thread = self._stop = None
        if thread is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended on its own
            stop()
        thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[list[str]], object] | None = None,
    **options: Any,
) -> None:
    """Serve the demo app until cancelled; ``on_ready(urls)`` runs once listening.

    >>> asyncio.run(serve_forever(port=8080, on_ready=print))  # doctest: +SKIP
    """
    async with DemoServer(host, port, **options) as server:
        if on_ready is not None:
            on_ready(list(server.urls))
        await asyncio.Event().wait()
