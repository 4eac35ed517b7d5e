"""Server hints pace a host: against a loopback server that enforces exactly
the quota it advertises (Q requests per W-second window, 429 beyond), in each
header style, fanout sends no request past the quota after the first window.
Counted at the server."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from fanout import Fetcher, Limits, RetryPolicy
from tests.loopback import serving

pytestmark = pytest.mark.usefixtures("transport")

QUOTA = 5
WINDOW = 1.0  # seconds
# Each run spans 3 windows (2 s): one style in make test-fast, the others in make test.
STYLES = ["draft", pytest.param("separate", marks=pytest.mark.slow),
          pytest.param("x-epoch", marks=pytest.mark.slow)]  # fmt: skip


class QuotaServer:
    """Fixed windows from the first request: each window takes ``QUOTA``
    requests, and answers the rest 429; every answer advertises what is left,
    in ``style``. Records each answer's status and window."""

    def __init__(self, style: str, *, reset: float | None = None) -> None:
        self.style = style
        self.reset = reset  # a reset to advertise instead of the true one
        self.start: float | None = None
        self.window = -1
        self.used = 0
        self.answers: list[tuple[int, int]] = []  # (window, status)
        self.url = ""

    def headers(self, remaining: int, reset: float) -> dict[str, str]:
        if self.reset is not None:
            reset = self.reset
        delta = math.ceil(reset)  # never earlier than the true reset
        if self.style == "draft":
            return {
                "RateLimit": f'"default";r={remaining};t={delta}',
                "RateLimit-Policy": f'"default";q={QUOTA};w={int(WINDOW)}',
            }
        if self.style == "separate":
            return {
                "RateLimit-Limit": str(QUOTA),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(delta),
            }
        return {
            "X-RateLimit-Limit": str(QUOTA),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + reset)),
        }

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        window = int((now - self.start) // WINDOW)
        if window != self.window:
            self.window, self.used = window, 0
        reset = self.start + (window + 1) * WINDOW - now
        status = 200 if self.used < QUOTA else 429
        if status == 200:
            self.used += 1
        self.answers.append((window, status))
        return web.Response(status=status, headers=self.headers(QUOTA - self.used, reset))

    def late_refusals(self) -> int:
        """429s after the first window."""
        return sum(1 for window, status in self.answers if window > 0 and status == 429)


@contextlib.asynccontextmanager
async def quota_server(style: str, **options: float) -> AsyncIterator[QuotaServer]:
    state = QuotaServer(style, **options)
    app = web.Application()
    app.router.add_get("/{n}", state.handle)
    async with serving(app) as state.url:
        yield state


RETRY = RetryPolicy(attempts=10, backoff=0.01, backoff_max=0.05)


@pytest.mark.parametrize("style", STYLES)
async def test_an_advertised_quota_is_kept_after_the_first_window(style: str) -> None:
    async with quota_server(style) as server, Fetcher(retry=RETRY) as fetcher:
        results = await fetcher.gather([f"{server.url}/{n}" for n in range(3 * QUOTA)])
    assert [r.status for r in results] == [200] * (3 * QUOTA)
    assert server.late_refusals() == 0
    # each window the server saw took its whole quota or less
    assert sum(status == 200 for _, status in server.answers) == 3 * QUOTA


@pytest.mark.slow
async def test_without_server_hints_the_quota_is_overrun() -> None:
    """The same run with the hints ignored: the retries and the next requests
    come before the reset, and are refused (this is what the hints prevent).
    Adaptation is off too: it would learn the pace from the 429s themselves."""
    retry = RetryPolicy(attempts=20, backoff=0.1, backoff_max=0.2)  # spans windows
    async with (
        quota_server("draft") as server,
        Fetcher(retry=retry, server_hints=False, adapt=False) as fetcher,
    ):
        await fetcher.gather([f"{server.url}/{n}" for n in range(3 * QUOTA)])
    assert server.late_refusals() > 0


async def test_a_reset_past_the_cap_waits_the_cap() -> None:
    """A server that says its quota resets in a day holds its host for
    ``retry_after_max``, not a day (the run ends: no hang)."""
    retry = RetryPolicy(attempts=3, backoff=0.01, retry_after_max=0.2)
    async with (
        quota_server("draft", reset=86400) as server,
        Fetcher(retry=retry, limits=Limits(per_host=1)) as fetcher,
    ):
        results = await fetcher.gather([f"{server.url}/{n}" for n in range(QUOTA + 1)])
    assert all(r.status in (200, 429) for r in results)
    assert len(server.answers) >= QUOTA + 1


async def test_an_idle_hosts_quota_is_kept_without_holding_its_state() -> None:
    """Hosts that advertise a long window (a day, capped at ``retry_after_max``)
    are not held while idle: their state is dropped (held, about 1.5 KB a host
    for the window, growing with the hosts a run meets), their quota kept in
    the bounded memory, so the next requests are still paced: none refused."""
    retry = RetryPolicy(attempts=3, backoff=0.01, retry_after_max=1.0)
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(quota_server("draft", reset=86400)) for _ in range(4)
        ]
        fetcher = await stack.enter_async_context(Fetcher(retry=retry))
        results = await fetcher.gather([f"{server.url}/0" for server in servers])
        assert [r.status for r in results] == [200] * 4
        assert fetcher.hosts_held == 0
        first = servers[0]
        # 4 left in the window; the 5th waits for the reset
        results = await fetcher.gather([f"{first.url}/{n}" for n in range(1, QUOTA + 1)])
    assert [r.status for r in results] == [200] * QUOTA
    assert [status for _, status in first.answers] == [200] * (QUOTA + 1)
