"""The embedded demo API and fault server, for demos, tests and benchmarks.

Everything is deterministic and offline, and it binds loopback only.

Normal endpoints (shaped by ``latency``, ``jitter`` and ``error_rate``):

- ``/`` this text; ``/pages/{n}`` an HTML page with links to three others
  (any path below ``/pages/`` answers a page, so hostile paths can be tried);
- ``/items/{id}`` (ids 1..10000, else a 404 JSON error) and
  ``/items?page=N&per_page=M`` (items 1..1000, ``next`` in the body and a
  ``Link: <...>; rel="next"`` header while there is a next page);
- ``/v0/topstories.json`` and ``/v0/item/{id}.json``, like the Hacker News
  API: 500 story ids, ``1000 + 7 * rank`` for rank 0..499. Broken on purpose,
  by rank: 124, 249, 374 and 499 (``rank % 125 == 124``) answer ``null``;
  the others with ``rank % 50 == 49`` (49, 99, 149, 199, 299, 349, 399, 449)
  have no ``score``; the rest with ``rank % 70 == 69`` (69, 139, 209, 279,
  419, 489) have their score as a string. Unknown ids answer ``null`` too;
- ``/users`` (10 users), ``/posts``, ``/posts?userId=U`` and ``/posts/{id}``
  (100 posts in id order: users 1..9 wrote ``u + 5`` each, user 10 wrote 10).

Endpoints that misbehave on purpose (not shaped by the options):
``/status/{code}`` (200..599), ``/retry-after/{value}`` (429 with that
Retry-After), ``/flaky/{n}?key=K`` (503 the first n times for K, then 200),
``/slow?delay=S`` (at most 60 s), ``/hang`` (no answer until shutdown),
``/stall`` (Content-Length 1000, 10 bytes, then nothing until shutdown),
``/drip?interval=S&count=N`` (a byte every S seconds), ``/short``
(Content-Length 1000, 10 bytes, then the connection closes), ``/reset`` (the
connection is reset, no answer), ``/redirect/{n}`` (n relative redirects, or
absolute with ``?absolute=1``), ``/redirect-to?url=U&status=S&delay=D`` (a
redirect with status S, 302 by default, to U, any scheme, after D seconds),
``/bytes/{n}`` (byte i is ``i % 256``; at most 100 MiB),
``/gzip-bomb?size=N`` (gzip that inflates to N zero bytes, 1 GiB by default),
``/br-bomb?size=N`` and ``/zstd-bomb?size=N`` (the same in brotli and zstd),
``/json/bad`` (not JSON, labelled JSON) and ``/echo`` (method, path, headers
and body as JSON).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import ipaddress
import math
import random
import socket
import struct
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

__all__ = ["STATS_KEY", "DemoServer", "ServerThread", "Stats", "make_app", "serve_forever"]

CATEGORIES = ("books", "games", "garden", "kitchen", "music", "tools")
N_ITEMS = 10_000
N_LISTED = 1_000
N_STORIES = 500
N_USERS = 10
MAX_DELAY = 60.0
MAX_BYTES = 100 * 1024 * 1024
MAX_BOMB = 16 * 1024**3
ZERO_BLOCK = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Stats:
    """What the server saw, per host (the request's Host header, "127.0.0.1:8080").

    It lives on the server's event loop: read it there, or once requests are done.
    """

    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # host, path, monotonic
    by_path: Counter[str] = field(default_factory=Counter)
    _waiters: list[tuple[Callable[[Stats], bool], asyncio.Future[None]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def peak_in_flight(self, host: str) -> int:
        """The most requests in flight at once to ``host``."""
        return self.peak[host]

    def arrivals(self, host: str, prefix: str = "/") -> list[float]:
        """``time.monotonic()`` arrival times of requests to ``host`` under ``prefix``."""
        return [t for h, path, t in self.seen if h == host and path.startswith(prefix)]

    def count(self, path_qs: str) -> int:
        """How many requests asked for exactly ``path_qs`` ("/items?page=2")."""
        return self.by_path[path_qs]

    def enter(self, host: str, path: str, path_qs: str) -> None:
        """Count a request that has just arrived."""
        self.in_flight[host] += 1
        self.peak[host] = max(self.peak[host], self.in_flight[host])
        self.seen.append((host, path, time.monotonic()))
        self.by_path[path_qs] += 1
        self._wake()

    def leave(self, host: str) -> None:
        """Count a request whose handler has returned."""
        self.in_flight[host] -= 1
        self._wake()

    async def wait_until(self, predicate: Callable[[Stats], bool]) -> None:
        """Wait, on the server's loop, until ``predicate(stats)`` holds.

        It is checked after each arrival and departure, so a test can act once
        requests are in flight instead of sleeping and hoping::

            await server.stats.wait_until(lambda s: s.in_flight["127.0.0.1:8080"] == 3)
        """
        if predicate(self):
            return
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        finally:
            self._waiters.remove(waiter)

    def _wake(self) -> None:
        for predicate, future in self._waiters:
            if not future.done() and predicate(self):
                future.set_result(None)


@dataclass(slots=True)
class _Shaping:
    latency: float
    jitter: float
    error_rate: float
    rng: random.Random


STATS_KEY = web.AppKey("fanout.demo.stats", Stats)
_STOP = web.AppKey("fanout.demo.stop", asyncio.Event)
_FLAKY = web.AppKey("fanout.demo.flaky", Counter[str])
_SHAPING = web.AppKey("fanout.demo.shaping", _Shaping)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer\n") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be in {low}..{high}\n")
    return value


def _seconds(request: web.Request, name: str, default: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number of seconds\n") from None
    if not value >= 0.0:  # also refuses NaN
        raise web.HTTPBadRequest(text=f"{name} must be >= 0\n")
    return min(value, MAX_DELAY)


def _header_value(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise web.HTTPBadRequest(text="no line breaks in header values\n")
    return value


async def _pause(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``, or less if the server shuts down; True if it did."""
    stop = request.app[_STOP]
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
    return stop.is_set()


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
        "tags": [t for t, b in zip(("new", "sale", "eco"), digest[4:7], strict=True) if b & 1],
    }


STORY_IDS = tuple(1000 + 7 * rank for rank in range(N_STORIES))


def story(story_id: int) -> dict[str, object] | None:
    """A story, or None; some are broken on purpose (see the module docstring)."""
    rank, offset = divmod(story_id - 1000, 7)
    if offset or not 0 <= rank < N_STORIES or rank % 125 == 124:
        return None
    digest = hashlib.sha256(f"story{story_id}".encode()).digest()
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


def _make_posts() -> tuple[dict[str, object], ...]:
    counts = [u + 5 for u in range(1, N_USERS)]
    counts.append(100 - sum(counts))
    user_ids = [user for user, count in enumerate(counts, start=1) for _ in range(count)]
    return tuple(
        {
            "userId": user,
            "id": post_id,
            "title": f"Post {post_id} by user {user}",
            "body": "lorem ipsum " * (1 + post_id % 5),
            "likes": (post_id * 37) % 101,
        }
        for post_id, user in enumerate(user_ids, start=1)
    )


POSTS = _make_posts()
USERS = tuple(
    {"id": u, "name": f"User {u}", "username": f"user{u}", "email": f"user{u}@example.test"}
    for u in range(1, N_USERS + 1)
)


def page_html(n: int) -> bytes:
    """A deterministic HTML page with links to three others."""
    digest = hashlib.sha256(f"page{n}".encode()).hexdigest()
    links = "".join(f'<li><a href="/pages/{(n * 7 + k) % 10_000}">page</a></li>' for k in (1, 2, 3))
    return (
        f"<!doctype html><html><head><title>Page {n}</title></head><body>"
        f"<h1>Page {n}</h1><p>{digest}</p><ul>{links}</ul></body></html>"
    ).encode()


# A gzip member by hand (RFC 1952): header, raw deflate, CRC-32 and size. A full
# flush makes the deflate of each zero block byte-aligned and independent, so one
# compressed block repeats for the whole body: no N bytes in memory, no N bytes
# compressed, and the first bytes go out at once.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


@lru_cache(maxsize=16)
def _deflated_zeros(n: int, *, final: bool) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(n)) + compressor.flush(
        zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH
    )


@lru_cache(maxsize=16)
def _crc32_zeros(size: int) -> int:
    whole, rest = divmod(size, ZERO_BLOCK)
    block, crc = bytes(ZERO_BLOCK), 0
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:rest], crc)


# ------------------------------------------------------------- middleware


@web.middleware
async def _account(request: web.Request, handler: Handler) -> web.StreamResponse:
    stats, host = request.app[STATS_KEY], request.host
    stats.enter(host, request.path, request.path_qs)
    try:
        return await handler(request)
    finally:
        stats.leave(host)


def _shaped(handler: Handler) -> Handler:
    """Apply the app's latency, jitter and error rate to a normal endpoint."""

    async def shaped(request: web.Request) -> web.StreamResponse:
        shaping = request.app[_SHAPING]
        delay = shaping.latency + shaping.rng.uniform(-shaping.jitter, shaping.jitter)
        if delay > 0 and await _pause(request, delay):
            return _json({"error": "shutting down"}, status=503)
        if shaping.error_rate and shaping.rng.random() < shaping.error_rate:
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
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) <= N_ITEMS:
        return _json({"error": f"no item {raw}"}, status=404)
    return _json(item(int(raw)))


async def _items(request: web.Request) -> web.Response:
    page = _int(request, "page", 1, 1, 10**6)
    per_page = _int(request, "per_page", 20, 1, N_LISTED)
    start = (page - 1) * per_page
    ids = range(start + 1, min(start + per_page, N_LISTED) + 1)
    next_url = str(request.url.update_query(page=page + 1, per_page=per_page))
    has_next = start + per_page < N_LISTED
    response = _json(
        {"items": [item(i) for i in ids], "page": page, "next": next_url if has_next else None}
    )
    if has_next:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


async def _topstories(request: web.Request) -> web.Response:
    return _json(STORY_IDS)


async def _story(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    return _json(story(int(raw)) if raw.isdigit() else None)


async def _users(request: web.Request) -> web.Response:
    return _json(USERS)


async def _posts(request: web.Request) -> web.Response:
    if "userId" not in request.query:
        return _json(POSTS)
    user = _int(request, "userId", 0, -(10**9), 10**9)
    return _json([p for p in POSTS if p["userId"] == user])


async def _post(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) <= len(POSTS):
        return _json({"error": f"no post {raw}"}, status=404)
    return _json(POSTS[int(raw) - 1])


async def _status(request: web.Request) -> web.Response:
    code = _int(request, "code", 200, 200, 599)
    return _json({"status": code}, status=code)


async def _retry_after(request: web.Request) -> web.Response:
    value = _header_value(request.match_info["value"])
    return web.Response(status=429, text="slow down\n", headers={"Retry-After": value})


async def _flaky(request: web.Request) -> web.Response:
    failures = _int(request, "n", 1, 0, 10**6)
    key = request.query.get("key", "")
    counter = request.app[_FLAKY]
    counter[key] += 1
    if counter[key] <= failures:
        return _json({"error": "try again", "attempt": counter[key]}, status=503)
    return _json({"ok": True, "attempt": counter[key]})


async def _slow(request: web.Request) -> web.Response:
    if await _pause(request, _seconds(request, "delay", 1.0)):
        return _json({"error": "shutting down"}, status=503)
    return web.Response(text="slow\n")


async def _hang(request: web.Request) -> web.Response:
    await request.app[_STOP].wait()
    return _json({"error": "shutting down"}, status=503)


async def _stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    response.force_close()
    await response.prepare(request)
    await response.write(b"0123456789")
    await request.app[_STOP].wait()
    return response


async def _drip(request: web.Request) -> web.StreamResponse:
    interval = _seconds(request, "interval", 1.0)
    count = _int(request, "count", 10, 0, 100_000)
    response = web.StreamResponse(headers={"Content-Length": str(count)})
    response.force_close()  # a drip cut short by shutdown must not be reused
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the client hung up: its choice, no error
        for _ in range(count):
            if await _pause(request, interval):
                break
            await response.write(b".")
    return response


def _transport(request: web.Request) -> asyncio.Transport:
    transport = request.transport
    if transport is None:
        raise web.HTTPInternalServerError(text="the connection is already gone\n")
    return transport


async def _short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    response.force_close()
    await response.prepare(request)
    await response.write(b"0123456789")
    _transport(request).close()  # after the buffered bytes are flushed
    return response


async def _reset(request: web.Request) -> web.StreamResponse:
    transport = _transport(request)
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST, not FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return web.Response()


async def _redirect(request: web.Request) -> web.Response:
    n = _int(request, "n", 1, 0, 1000)
    if n == 0:
        return web.Response(text="arrived\n")
    target = request.rel_url.with_path(f"/redirect/{n - 1}").with_query(request.query)
    if request.query.get("absolute"):
        target = request.url.join(target)
    raise web.HTTPFound(target)


async def _redirect_to(request: web.Request) -> web.Response:
    location = _header_value(request.query.get("url", "/"))
    status = _int(request, "status", 302, 300, 399)
    await _pause(request, _seconds(request, "delay", 0.0))
    return web.Response(status=status, headers={"Location": location})


async def _bytes(request: web.Request) -> web.StreamResponse:
    n = min(_int(request, "n", 0, 0, 2**63), MAX_BYTES)
    response = web.StreamResponse(headers={"Content-Length": str(n)})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    pattern = bytes(range(256)) * 256  # 64 KiB, so every chunk starts at byte 0
    with contextlib.suppress(ConnectionError):
        for start in range(0, n, len(pattern)):
            await response.write(pattern[: n - start])
    return response


async def _gzip_bomb(request: web.Request) -> web.StreamResponse:
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    whole, rest = divmod(size, ZERO_BLOCK)
    block = _deflated_zeros(ZERO_BLOCK, final=False)
    tail = _deflated_zeros(rest, final=True)
    length = len(_GZIP_HEADER) + whole * len(block) + len(tail) + 8
    response = web.StreamResponse(
        headers={"Content-Encoding": "gzip", "Content-Length": str(length)}
    )
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(_GZIP_HEADER)
        for _ in range(whole):
            await response.write(block)
        await response.write(tail)
        crc = await asyncio.to_thread(_crc32_zeros, size)
        await response.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return response


# A zstd frame by hand (RFC 8878): the magic number, a descriptor with no content
# size and no checksum, a 128 KiB window, then RLE blocks of 128 KiB of zeros, 4
# bytes each (a block header and the byte repeated): nothing is compressed.
_ZSTD_HEADER = b"\x28\xb5\x2f\xfd\x00\x38"
_ZSTD_BLOCK = 128 * 1024


def _zstd_zeros(size: int, *, last: bool) -> bytes:
    """An RLE block of ``size`` zero bytes (a raw empty block when ``size`` is 0)."""
    kind = 1 if size else 0
    header = ((size << 3) | (kind << 1) | int(last)).to_bytes(3, "little")
    return header + (b"\x00" if size else b"")


async def _zstd_bomb(request: web.Request) -> web.StreamResponse:
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    whole, rest = divmod(size, _ZSTD_BLOCK)
    response = web.StreamResponse(headers={"Content-Encoding": "zstd"})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    block = _zstd_zeros(_ZSTD_BLOCK, last=False)
    with contextlib.suppress(ConnectionError):
        await response.write(_ZSTD_HEADER)
        for start in range(0, whole, 1024):  # 4 KiB a write
            await response.write(block * min(1024, whole - start))
        await response.write(_zstd_zeros(rest, last=True))
    return response


async def _br_bomb(request: web.Request) -> web.StreamResponse:
    # brotli has no block to repeat by hand: a fast compressor streams the zeros
    # (about 0.2 s of CPU per GiB, 300 KiB of output).
    try:
        import brotlicffi as brotli  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        import brotli
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    response = web.StreamResponse(headers={"Content-Encoding": "br"})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    compressor = brotli.Compressor(quality=1)
    process = getattr(compressor, "process", None) or compressor.compress
    block = bytes(ZERO_BLOCK)
    with contextlib.suppress(ConnectionError):
        for start in range(0, size, ZERO_BLOCK):
            await response.write(process(block[: size - start]) + compressor.flush())
        await response.write(compressor.finish())
    return response


async def _json_bad(request: web.Request) -> web.Response:
    return web.Response(text="{this is not json", content_type="application/json")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return _json(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {str(name): value for name, value in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )


# --------------------------------------------------------------- the app


def make_app(
    *, latency: float = 0.0, jitter: float = 0.0, error_rate: float = 0.0, seed: int = 0
) -> web.Application:
    """The demo application, to serve with any aiohttp runner.

    Each normal answer waits ``latency`` seconds, give or take up to ``jitter``
    (never below 0), and a share ``error_rate`` of them answer 503 instead, in
    a sequence fixed by ``seed``. ``app[STATS_KEY]`` holds the request counts.

    >>> app = make_app(latency=0.05, jitter=0.01, error_rate=0.1)
    """
    for name, value in (("latency", latency), ("jitter", jitter)):
        if not (math.isfinite(value) and 0.0 <= value <= MAX_DELAY):
            raise ConfigError(f"{name} must be between 0 and {MAX_DELAY:g} seconds, got {value!r}")
    if not 0.0 <= error_rate <= 1.0:
        raise ConfigError(f"error_rate must be between 0 and 1, got {error_rate!r}")
    if not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    app = web.Application(middlewares=[_account])
    app[STATS_KEY] = Stats()
    app[_STOP] = asyncio.Event()
    app[_FLAKY] = Counter()
    app[_SHAPING] = _Shaping(latency, jitter, error_rate, random.Random(seed))

    async def release_waiters(app: web.Application) -> None:
        app[_STOP].set()

    app.on_shutdown.append(release_waiters)
    normal: dict[str, Handler] = {
        "/": _index,
        "/pages/{path:.*}": _page,
        "/items/{id}": _item,
        "/items": _items,
        "/v0/topstories.json": _topstories,
        "/v0/item/{id}.json": _story,
        "/users": _users,
        "/posts": _posts,
        "/posts/{id}": _post,
    }
    faults: dict[str, Handler] = {
        "/status/{code}": _status,
        "/retry-after/{value}": _retry_after,
        "/flaky/{n}": _flaky,
        "/slow": _slow,
        "/hang": _hang,
        "/stall": _stall,
        "/drip": _drip,
        "/short": _short,
        "/reset": _reset,
        "/redirect/{n}": _redirect,
        "/redirect-to": _redirect_to,
        "/bytes/{n}": _bytes,
        "/gzip-bomb": _gzip_bomb,
        "/br-bomb": _br_bomb,
        "/zstd-bomb": _zstd_bomb,
        "/json/bad": _json_bad,
        "/echo": _echo,
    }
    for path, handler in normal.items():
        app.router.add_get(path, _shaped(handler))
    for path, handler in faults.items():  # any method, so POSTs can be tested too
        app.router.add_route("*", path, handler)
    return app


# ------------------------------------------------------------- the servers


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
