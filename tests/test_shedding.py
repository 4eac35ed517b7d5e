"""Adaptation end to end, counted at loopback servers: a server that allows R
requests per second and sheds the rest with bare 429s is soon sent little
more than R (and, with ``adapt=False``, is hammered); a healthy host beside it
is not held back; a host whose responses stall past the read deadline gets
its concurrency cut. Assertions are on counts and on the fetcher's own
figures, never on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

from fanout import Fetcher, Limits, RetryPolicy, Timeouts
from tests.loopback import serving

RATE = 50.0  # requests per second the shedding server allows
LAST = 100  # answers counted at the end of a run


class Shedding:
    """A token bucket of ``RATE`` per second holding ``RATE / 10`` tokens: 200
    with a token, a bare 429 without. Records each answer's status."""

    def __init__(self) -> None:
        self.burst = RATE / 10
        self.tokens = self.burst
        self.last: float | None = None
        self.statuses: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * RATE)
        self.last = now
        status = 429
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            status = 200
        self.statuses.append(status)
        return web.Response(status=status)

    def shed(self, last: int) -> float:
        """The fraction of 429s among the ``last`` answers."""
        tail = self.statuses[-last:]
        return tail.count(429) / len(tail)


@contextlib.asynccontextmanager
async def shedding() -> AsyncIterator[Shedding]:
    server = Shedding()
    app = web.Application()
    app.router.add_get("/{n}", server.handle)
    async with serving(app) as server.url:
        yield server


async def fetch_shedding(adapt: bool, n: int) -> tuple[Shedding, float | None, str | None]:
    """Fetch ``n`` URLs of a shedding server; the server, and the host's rate
    limit and its source once 3/4 of the results are in."""
    retry = RetryPolicy(attempts=20, backoff=0.05, backoff_max=0.5)
    limit: float | None = None
    source: str | None = None
    async with shedding() as server, Fetcher(retry=retry, adapt=adapt) as fetcher:
        got = 0
        async for result in fetcher.stream(f"{server.url}/{i}" for i in range(n)):
            assert result.ok, result.error
            got += 1
            if got == n * 3 // 4:
                [row] = fetcher.host_stats()
                limit, source = row["rate_limit"], row["rate_source"]
    return server, limit, source


async def test_a_shedding_host_is_soon_sent_about_what_it_allows() -> None:
    """After the first cuts, few of the last answers are 429s (it is not sent
    much more than R), and the rate the host adapted to is not far below R
    (it is not cut too deep: throughput; benchmarks/shedding.py measures it)."""
    server, limit, source = await fetch_shedding(True, 200)
    assert len(server.statuses) > LAST
    assert server.shed(LAST) <= 0.1, server.statuses[-LAST:]
    assert source == "adapted"
    assert limit is not None
    assert limit >= 0.5 * RATE


async def test_without_adapt_a_shedding_host_is_hammered() -> None:
    server, limit, source = await fetch_shedding(False, 100)
    assert server.shed(LAST) > 0.5
    assert (limit, source) == (None, None)


async def test_a_healthy_host_is_not_held_back_by_a_shedding_one() -> None:
    """Their URLs alternate; the healthy host's all succeed, and all of them
    are in before half of the shedding host's: none waited on its rate."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    healthy_app = web.Application()
    healthy_app.router.add_get("/{n}", ok)
    retry = RetryPolicy(attempts=20, backoff=0.05, backoff_max=0.5)
    n = 60
    async with (
        shedding() as server,
        serving(healthy_app) as healthy,
        Fetcher(retry=retry) as fetcher,
    ):
        urls = [url for i in range(n) for url in (f"{server.url}/{i}", f"{healthy}/{i}")]
        healthy_left, shed_done = n, 0
        async for result in fetcher.stream(urls):
            if result.request.url.startswith(healthy):
                assert result.ok, result.error
                healthy_left -= 1
                if healthy_left == 0:
                    break
            else:
                shed_done += 1
        [row] = [row for row in fetcher.host_stats() if row["host"] in server.url]
    assert healthy_left == 0
    assert shed_done < n // 2
    # the shedding host was held back: its slots cut (its rate too, once older than a second)
    assert row["slots"] is not None
    assert row["slots"] < 8 or row["rate_source"] == "adapted"


async def stalled_slots(adapt: bool) -> tuple[int | None, str | None]:
    """Eight requests to a host that never answers in time (read deadline
    0.5 s), then four to the same host answering at once: its slots and rate
    source after the run."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        if request.match_info["n"].startswith("stall"):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):  # the test's own deadline
                    await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{n}", handle)
    config = {
        "limits": Limits(per_host=8),
        "timeouts": Timeouts(read=0.5),
        "retry": RetryPolicy(attempts=1),
        "adapt": adapt,
    }
    try:
        async with serving(app) as base, Fetcher(**config) as fetcher:  # type: ignore[arg-type]
            stalled = await fetcher.gather([f"{base}/stall{i}" for i in range(8)])
            assert all(r.error is not None and r.error.kind == "timeout" for r in stalled)
            fine = await fetcher.gather([f"{base}/{i}" for i in range(4)])
            assert all(r.ok for r in fine)
            [row] = fetcher.host_stats()
    finally:
        release.set()
    return row["slots"], row["rate_source"]


async def test_a_host_that_stalls_past_the_read_deadline_gets_fewer_slots() -> None:
    """The first timeout cuts its eight slots to five; the other seven were in
    flight at that cut (the same round) and cut no more; four successes are
    less than a round of five, which would win a slot back."""
    assert await stalled_slots(True) == (5, None)  # younger than the rate's window: slots only


async def test_without_adapt_a_stalling_host_keeps_its_slots() -> None:
    assert await stalled_slots(False) == (8, None)


async def test_a_429_with_retry_after_neither_cuts_nor_raises() -> None:
    """One request: a bare 429 (a cut: one slot), ten 429s with Retry-After: 0
    (cool-downs, as without adaptation: no cut, and no success either), then
    a 200 (a round of one success: two slots). Counted as successes, the ten
    would have won back four slots."""
    answers = [web.Response(status=429)]
    answers += [web.Response(status=429, headers={"Retry-After": "0"}) for _ in range(10)]

    async def handle(request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    retry = RetryPolicy(attempts=12, backoff=0.01, backoff_max=0.01)
    async with serving(app) as base, Fetcher(retry=retry) as fetcher:
        [result] = await fetcher.gather([f"{base}/"])
        [row] = fetcher.host_stats()
    assert result.ok
    assert result.attempts == 12
    # slots only: the host is younger than the window its rate is measured over
    assert (row["slots"], row["rate_source"], row["throttled"]) == (2, None, 11)


async def test_a_retry_after_not_respected_is_a_bare_429() -> None:
    """With ``respect_retry_after=False`` a Retry-After cools nothing down, so
    it answers nothing either: the 429 is a congestion signal (it was neither,
    and such a server was hammered)."""
    answers = [web.Response(status=429, headers={"Retry-After": "5"}) for _ in range(3)]

    async def handle(request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    retry = RetryPolicy(attempts=4, backoff=0.01, backoff_max=0.01, respect_retry_after=False)
    async with serving(app) as base, Fetcher(retry=retry) as fetcher:
        [result] = await fetcher.gather([f"{base}/"])
        [row] = fetcher.host_stats()
    assert result.ok
    assert result.attempts == 4
    assert row["cool_down_s"] == 0.0
    assert row["slots"] is not None
    assert row["slots"] < 8  # cut (a young host: slots only)


async def refused_everything(host_errors: int) -> tuple[int, dict[str, int], str]:
    """Fetch 300 URLs of a host that answers nothing but bare 503s, beside 30
    of a healthy host: the requests the failing host was sent, the kinds of
    its records, and the last one's message."""
    sent = 0

    async def refuse(request: web.Request) -> web.Response:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0.02)  # its latency: the run outlasts the rate's window
        return web.Response(status=503)

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    failing, healthy = web.Application(), web.Application()
    failing.router.add_get("/{n}", refuse)
    healthy.router.add_get("/{n}", fine)
    retry = RetryPolicy(attempts=3, backoff=0.01, backoff_max=0.05)
    kinds: dict[str, int] = {}
    message = ""
    async with (
        serving(failing) as bad,
        serving(healthy, host="127.0.0.2") as good,
        Fetcher(retry=retry, host_errors=host_errors) as fetcher,
    ):
        urls = [f"{bad}/{i}" for i in range(300)] + [f"{good}/{i}" for i in range(30)]
        async for result in fetcher.stream(urls):
            if result.url.startswith(good):
                assert result.ok, result.error
                continue
            assert result.error is not None
            kinds[result.error.kind.value] = kinds.get(result.error.kind.value, 0) + 1
            message = result.error.message
    return sent, kinds, message


async def test_a_host_that_answers_only_503s_is_marked_down_not_crawled() -> None:
    """Cut after cut with no success between them (2 x host_errors rounds) mark
    the host down, as connection failures do: its other requests end at once
    as host_down, instead of being crawled at the adapted floor (one request
    every 10 s: about a day for these 900 attempts)."""
    sent, kinds, message = await asyncio.wait_for(refused_everything(host_errors=5), 60)
    assert sent < 300, sent
    assert kinds.get("host_down", 0) > 200, kinds
    assert sum(kinds.values()) == 300
    assert "rounds in a row of 429s, 503s or timeouts" in message, message
    assert "HTTP 503" in message, message
