"""The normal endpoints: the data, shaped by the app's latency, jitter and error rate."""

from __future__ import annotations

import hashlib

from aiohttp import web

from fanout.demo.data import N_ITEMS, N_LISTED, POSTS, STORY_IDS, USERS, item, page_html, story
from fanout.demo.endpoint import _SHAPING, Handler, _int, _json, _pause


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
