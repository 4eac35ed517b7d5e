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
import math
import random
from collections import Counter

from aiohttp import web

from fanout.demo.content import (
    _item,
    _items,
    _page,
    _post,
    _posts,
    _shaped,
    _story,
    _topstories,
    _users,
)
from fanout.demo.endpoint import _FLAKY, _SHAPING, _STOP, MAX_DELAY, STATS_KEY, Handler, _Shaping
from fanout.demo.faults import (
    _br_bomb,
    _bytes,
    _drip,
    _echo,
    _flaky,
    _gzip_bomb,
    _hang,
    _json_bad,
    _redirect,
    _redirect_to,
    _reset,
    _retry_after,
    _short,
    _slow,
    _stall,
    _status,
    _zstd_bomb,
)
from fanout.demo.stats import Stats
from fanout.errors import ConfigError


@web.middleware
async def _account(request: web.Request, handler: Handler) -> web.StreamResponse:
    stats, host = request.app[STATS_KEY], request.host
    stats.enter(host, request.path, request.path_qs)
    try:
        return await handler(request)
    finally:
        stats.leave(host)


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=__doc__ or "", content_type="text/plain")


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
