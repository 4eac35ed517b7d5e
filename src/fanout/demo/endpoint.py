"""What every endpoint uses: the app's keys, its parameters read and checked,
JSON answers, and waiting until the server shuts down."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from fanout.demo.stats import Stats

MAX_DELAY = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
