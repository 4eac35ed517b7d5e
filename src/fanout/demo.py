"""The embedded demo API and fault server, for demos, tests and benchmarks.

Everything is deterministic and offline, and it binds loopback only.

Normal endpoints (shaped by ``latency``, ``jitter`` and ``error_rate``):

- ``/`` this list; ``/pages/{n}`` an HTML page with links (any path below
  ``/pages/`` answers a page, so hostile paths can be tried);
- ``/items/{id}`` (1..10000) and ``/items?page=N&per_page=M`` (a paginated
  list of items 1..1000, with ``next`` in the body and a ``Link: rel="next"``
  header);
- ``/v0/topstories.json`` (500 ids) and ``/v0/item/{id}.json``, like the
  Hacker News API. On purpose, every 50th story (by rank: ids at positions
  49, 99, ...) has no ``score``, every 70th has its score as a string, and
  every 125th answers ``null``;
- ``/users`` (10 users), ``/posts?userId=U`` and ``/posts/{id}`` (100 posts;
  user ``u`` wrote ``u + 5`` of them, ids in order, so 10 users x 6..15 posts).

Endpoints that misbehave on purpose (not shaped by the options):
``/status/{code}``, ``/retry-after/{value}`` (429 with that Retry-After),
``/flaky/{n}?key=K`` (503 the first n times for K, then 200),
``/slow?delay=S``, ``/hang`` (never answers), ``/stall`` (headers and a few
bytes, then nothing), ``/drip?interval=S&count=N`` (a byte every S seconds),
``/short`` (Content-Length 1000, 10 bytes, then the connection closes),
``/reset`` (closes the connection without answering), ``/redirect/{n}``,
``/redirect-to?url=U``, ``/bytes/{n}``, ``/gzip-bomb?size=N``,
``/json/bad`` and ``/echo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from fanout.errors import ConfigError

__all__ = ["DemoServer", "ServerStats", "ServerThread", "make_app", "serve_forever"]

CATEGORIES = ("books", "games", "garden", "kitchen", "music", "tools")
N_ITEMS = 10_000
N_LISTED = 1_000
N_STORIES = 500
N_USERS = 10
MAX_SLOW = 60.0
MAX_BYTES = 100 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ServerStats:
    """What the server saw, per host (the request's Host header)."""

    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # host, path, monotonic
    by_path: Counter[str] = field(default_factory=Counter)

    def peak_in_flight(self, host: str) -> int:
        """The most requests in flight at once from ``host`` ("127.0.0.1:8080")."""
        return self.peak[host]

    def arrivals(self, host: str, prefix: str = "/") -> list[float]:
        """Monotonic arrival times of the requests to ``host`` under ``prefix``."""
        return [t for h, path, t in self.seen if h == host and path.startswith(prefix)]

    def count(self, path_qs: str) -> int:
        """How many requests asked for exactly ``path_qs`` (path and query)."""
        return self.by_path[path_qs]


STATS_KEY = web.AppKey("stats", ServerStats)
STOP_KEY = web.AppKey("stop", asyncio.Event)
FLAKY_KEY = web.AppKey("flaky", Counter[str])
OPTIONS_KEY = web.AppKey("options", dict[str, Any])


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", charset="utf-8"
    )


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be in {low}..{high}")
    return value


def _float(request: web.Request, name: str, default: float, high: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from None
    if not 0.0 <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be in 0..{high}")
    return value


# ----------------------------------------------------------------- the data


def item(item_id: int) -> dict[str, object]:
    """The item with this id, the same in every run."""
    digest = hashlib.sha256(f"item{item_id}".encode()).digest()
    return {
        "id": item_id,
        "name": f"Item {item_id}",
        "category": CATEGORIES[digest[0] % len(CATEGORIES)],
        "price": round(1 + int.from_bytes(digest[1:3], "big") / 100, 2),
        "stock": digest[3] % 50,
        "tags": [t for t, bit in zip(("new", "sale", "eco"), digest[4:7], strict=True) if bit & 1],
    }


def story_ids() -> list[int]:
    """The ids of the top stories, in rank order."""
    return [1000 + 7 * rank for rank in range(N_STORIES)]


def story(story_id: int) -> dict[str, object] | None:
    """A story; some are broken on purpose (see the module docstring)."""
    ids = story_ids()
    if story_id not in ids:
        return None
    rank = ids.index(story_id)
    digest = hashlib.sha256(f"story{story_id}".encode()).digest()
    if rank % 125 == 124:
        return None
    data: dict[str, object] = {
        "id": story_id,
        "by": f"user{digest[0] % 40}",
        "score": 1 + int.from_bytes(digest[1:3], "big") % 900,
        "title": f"Story number {story_id}",
        "time": 1_700_000_000 + story_id * 60,
        "type": "story",
        "descendants": digest[3] % 200,
        "url": f"http://127.0.0.1/story/{story_id}",
    }
    if rank % 50 == 49:
        del data["score"]
    elif rank % 70 == 69:
        data["score"] = str(data["score"])
    return data


def posts() -> list[dict[str, object]]:
    """All 100 posts: user u wrote u + 5 of them, in id order."""
    result: list[dict[str, object]] = []
    for user in range(1, N_USERS + 1):
        for _ in range(user + 5 if user < N_USERS else 100 - sum(u + 5 for u in range(1, 10))):
            post_id = len(result) + 1
            result.append(
                {
                    "userId": user,
                    "id": post_id,
                    "title": f"Post {post_id} by user {user}",
                    "body": "lorem ipsum " * (1 + post_id % 5),
                    "likes": (post_id * 37) % 101,
                }
            )
    return result


def users() -> list[dict[str, object]]:
    """The 10 users."""
    return [
        {"id": u, "name": f"User {u}", "username": f"user{u}", "email": f"user{u}@example.test"}
        for u in range(1, N_USERS + 1)
    ]


def page_html(n: int) -> bytes:
    """A deterministic HTML page with links to a few others."""
    digest = hashlib.sha256(f"page{n}".encode()).hexdigest()
    links = "".join(f'<li><a href="/pages/{(n * 7 + k) % 10_000}">page</a></li>' for k in (1, 2, 3))
    return (
        f"<!doctype html><html><head><title>Page {n}</title></head><body>"
        f"<h1>Page {n}</h1><p>{digest}</p><ul>{links}</ul></body></html>"
    ).encode()


@lru_cache(maxsize=8)
def gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed chunk by chunk (never all in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = []
    left = size
    while left > 0:
        parts.append(compressor.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(compressor.flush())
    return b"".join(parts)


# ------------------------------------------------------------- middleware


@web.middleware
async def _account(request: web.Request, handler: Handler) -> web.StreamResponse:
    stats = request.app[STATS_KEY]
    host = request.host
    stats.in_flight[host] += 1
    stats.peak[host] = max(stats.peak[host], stats.in_flight[host])
    stats.seen.append((host, request.path, time.monotonic()))
    stats.by_path[request.path_qs] += 1
    try:
        return await handler(request)
    finally:
        stats.in_flight[host] -= 1


def _shaped(handler: Handler) -> Handler:
    """Apply the app's latency, jitter and error rate to a normal endpoint."""

    async def shaped(request: web.Request) -> web.StreamResponse:
        options = request.app[OPTIONS_KEY]
        rng: random.Random = options["rng"]
        delay = max(0.0, options["latency"] + rng.uniform(-options["jitter"], options["jitter"]))
        if delay:
            await asyncio.sleep(delay)
        if options["error_rate"] and rng.random() < options["error_rate"]:
            return _json({"error": "injected failure"}, status=503)
        return await handler(request)

    return shaped


# ---------------------------------------------------------------- handlers


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=__doc__ or "", content_type="text/plain")


async def _page(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    n = int(path) if path.isdigit() else int(hashlib.sha256(path.encode()).hexdigest()[:6], 16)
    return web.Response(body=page_html(n), content_type="text/html", charset="utf-8")


async def _item(request: web.Request) -> web.Response:
    item_id = _int(request, "id", 0, -(10**9), 10**9)
    if not 1 <= item_id <= N_ITEMS:
        return _json({"error": f"no item {item_id}"}, status=404)
    return _json(item(item_id))


async def _items(request: web.Request) -> web.Response:
    page = _int(request, "page", 1, 1, 10**6)
    per_page = _int(request, "per_page", 20, 1, 1000)
    start = (page - 1) * per_page
    ids = range(start + 1, min(start + per_page, N_LISTED) + 1)
    has_next = start + per_page < N_LISTED
    next_url = str(request.url.update_query(page=page + 1, per_page=per_page))
    body = {"items": [item(i) for i in ids], "page": page, "next": next_url if has_next else None}
    response = _json(body)
    if has_next:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


async def _topstories(request: web.Request) -> web.Response:
    return _json(story_ids())


async def _story(request: web.Request) -> web.Response:
    story_id = _int(request, "id", 0, 0, 10**9)
    return _json(story(story_id))


async def _users(request: web.Request) -> web.Response:
    return _json(users())


async def _posts(request: web.Request) -> web.Response:
    all_posts = posts()
    if "userId" in request.query:
        user = _int(request, "userId", 0, 0, 10**6)
        return _json([p for p in all_posts if p["userId"] == user])
    return _json(all_posts)


async def _post(request: web.Request) -> web.Response:
    post_id = _int(request, "id", 0, -(10**9), 10**9)
    if not 1 <= post_id <= len(posts()):
        return _json({"error": f"no post {post_id}"}, status=404)
    return _json(posts()[post_id - 1])


async def _status(request: web.Request) -> web.Response:
    code = _int(request, "code", 200, 200, 599)
    return _json({"status": code}, status=code)


async def _retry_after(request: web.Request) -> web.Response:
    value = request.match_info["value"]
    return web.Response(status=429, text="slow down", headers={"Retry-After": value})


async def _flaky(request: web.Request) -> web.Response:
    failures = _int(request, "n", 1, 0, 1000)
    key = request.query.get("key", "")
    counter = request.app[FLAKY_KEY]
    counter[key] += 1
    if counter[key] <= failures:
        return _json({"error": "try again", "attempt": counter[key]}, status=503)
    return _json({"ok": True, "attempt": counter[key]})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(_float(request, "delay", 1.0, MAX_SLOW))
    return web.Response(text="slow\n")


async def _hang(request: web.Request) -> web.Response:
    await request.app[STOP_KEY].wait()
    return web.Response(text="shutting down\n")


async def _stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b"0123456789")
    await request.app[STOP_KEY].wait()
    return response


async def _drip(request: web.Request) -> web.StreamResponse:
    interval = _float(request, "interval", 1.0, MAX_SLOW)
    count = _int(request, "count", 10, 0, 100_000)
    response = web.StreamResponse(headers={"Content-Length": str(count)})
    await response.prepare(request)
    stop = request.app[STOP_KEY]
    for _ in range(count):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            break
        await response.write(b".")
    return response


async def _short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b"0123456789")
    assert request.transport is not None
    request.transport.close()
    return response


async def _reset(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


async def _redirect(request: web.Request) -> web.Response:
    n = _int(request, "n", 1, 0, 1000)
    if n == 0:
        return web.Response(text="arrived\n")
    raise web.HTTPFound(f"/redirect/{n - 1}")


async def _redirect_to(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query.get("url", "/"))


async def _bytes(request: web.Request) -> web.StreamResponse:
    n = _int(request, "n", 0, 0, MAX_BYTES)
    response = web.StreamResponse(headers={"Content-Length": str(n)})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    pattern = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < n:
        part = pattern[: min(len(pattern), n - sent)]
        await response.write(part)
        sent += len(part)
    return response


async def _gzip_bomb(request: web.Request) -> web.Response:
    size = _int(request, "size", 1024**3, 1, 16 * 1024**3)
    body = await asyncio.to_thread(gzip_zeros, size)
    return web.Response(
        body=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
    )


async def _json_bad(request: web.Request) -> web.Response:
    return web.Response(text="{this is not json", content_type="application/json")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return _json(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )


# --------------------------------------------------------------- the app


def make_app(
    *, latency: float = 0.0, jitter: float = 0.0, error_rate: float = 0.0, seed: int = 0
) -> web.Application:
    """The demo application. ``latency`` and ``jitter`` (seconds) delay each
    normal answer by ``latency +/- jitter``; a share ``error_rate`` of them
    answer 503 instead (a seeded, deterministic sequence)."""
    for name, value in (("latency", latency), ("jitter", jitter)):
        if not 0.0 <= value <= MAX_SLOW:
            raise ConfigError(f"{name} must be between 0 and {MAX_SLOW:g} seconds, got {value!r}")
    if not 0.0 <= error_rate <= 1.0:
        raise ConfigError(f"error_rate must be between 0 and 1, got {error_rate!r}")
    app = web.Application(middlewares=[_account])
    app[STATS_KEY] = ServerStats()
    app[STOP_KEY] = asyncio.Event()
    app[FLAKY_KEY] = Counter()
    app[OPTIONS_KEY] = {
        "latency": latency,
        "jitter": jitter,
        "error_rate": error_rate,
        "rng": random.Random(seed),
    }

    async def stop(app: web.Application) -> None:
        app[STOP_KEY].set()

    app.on_shutdown.append(stop)
    normal: list[tuple[str, Handler]] = [
        ("/", _index),
        ("/pages/{path:.*}", _page),
        ("/items/{id}", _item),
        ("/items", _items),
        ("/v0/topstories.json", _topstories),
        ("/v0/item/{id}.json", _story),
        ("/users", _users),
        ("/posts", _posts),
        ("/posts/{id}", _post),
    ]
    faults: list[tuple[str, Handler]] = [
        ("/status/{code}", _status),
        ("/retry-after/{value}", _retry_after),
        ("/flaky/{n}", _flaky),
        ("/slow", _slow),
        ("/hang", _hang),
        ("/stall", _stall),
        ("/drip", _drip),
        ("/short", _short),
        ("/reset", _reset),
        ("/redirect/{n}", _redirect),
        ("/redirect-to", _redirect_to),
        ("/bytes/{n}", _bytes),
        ("/gzip-bomb", _gzip_bomb),
        ("/json/bad", _json_bad),
    ]
    for path, handler in normal:
        app.router.add_get(path, _shaped(handler))
    for path, handler in faults:  # any method, so POSTs can be tested too
        app.router.add_route("*", path, handler)
    app.router.add_route("*", "/echo", _echo)
    return app


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"the demo server binds loopback only, not {host!r}") from None
    if not address.is_loopback:
        raise ConfigError(f"the demo server binds loopback only (127.0.0.0/8, ::1), not {host!r}")


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class DemoServer:
    """The demo app listening on loopback; an async context manager.

    ``url`` is ready once ``async with`` has entered: the sockets are bound and
    listening. With ``hosts``, it listens on each (its own port each), and
    ``urls`` lists them in order.

    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with DemoServer(latency=0.05) as server:
    ...         print(server.url)   # http://127.0.0.1:PORT
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
        self._hosts = list(hosts) if hosts else [host]
        for name in self._hosts:
            _check_loopback(name)
        self._port = port
        self._app = make_app(latency=latency, jitter=jitter, error_rate=error_rate, seed=seed)
        self._runner: web.AppRunner | None = None
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        """The base URL of the first host, like ``http://127.0.0.1:8080``."""
        if not self.urls:
            raise RuntimeError("the demo server is not running")
        return self.urls[0]

    @property
    def stats(self) -> ServerStats:
        """What the server has seen so far."""
        return self._app[STATS_KEY]

    async def __aenter__(self) -> DemoServer:
        runner = web.AppRunner(self._app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            for host in self._hosts:
                site = web.TCPSite(runner, host, self._port if len(self._hosts) == 1 else 0)
                await site.start()
                port = runner.addresses[-1][1]  # the site just started; port 0 picks one
                self.urls.append(_base_url(host, port))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._app[STOP_KEY].set()
            await self._runner.cleanup()
            self._runner = None


class ServerThread:
    """The demo server in a thread with its own event loop, for synchronous code.

    >>> with ServerThread() as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="fanout-demo", daemon=True)
        self._error: BaseException | None = None
        self._server: DemoServer | None = None

    @property
    def url(self) -> str:
        """The base URL of the first host."""
        assert self._server is not None
        return self._server.url

    @property
    def server(self) -> DemoServer:
        """The running DemoServer (read its ``stats`` only once requests are done)."""
        assert self._server is not None
        return self._server

    def _main(self) -> None:
        async def run() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            try:
                async with DemoServer(**self._options) as server:
                    self._server = server
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                self._ready.set()

        asyncio.run(run())

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[list[str]], None] | None = None,
    **options: Any,
) -> None:
    """Serve until cancelled (Ctrl-C); ``on_ready`` gets the URLs once listening."""
    async with DemoServer(host, port, **options) as server:
        if on_ready is not None:
            on_ready(server.urls)
        await asyncio.Event().wait()
