"""The shedding scenario: a server that allows R requests per second and sheds
the rest with bare 429s (no Retry-After), beside healthy hosts.

Loopback servers in this process: the shedding one (a token bucket of R per
second holding ``--burst`` tokens, R/10 by default: 200 within it, a bare 429
beyond), and ``--healthy`` hosts answering 200 after ``--latency``. fanout
fetches their URLs interleaved (shedding, healthy 1, healthy 2, shedding, ...,
then the shedding host's alone), with more shedding URLs than R per second
can serve in ``--duration`` seconds; the run stops at ``--duration``. Three
runs: the healthy hosts alone (the baseline), then with the shedding host,
adaptive (the default) and static (``adapt=False``). Reported, counted at the
shedding server after ``--warmup`` seconds from its first request: the
fraction of its answers that were 429s (goal <= 0.10) and the 200s per
second over R (goal >= 0.7); and the time until the healthy hosts' last
result over the baseline's (goal ~1: not slowed; the baseline runs before
and after, and their mean is taken).

    python benchmarks/shedding.py [--rate 50] [--duration 10] [--warmup 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

import fanout
from fanout.runtime import loop_factory


class Shedding:
    """A token bucket of ``rate`` per second holding ``burst`` tokens: 200 with a
    token, a bare 429 without. Records each answer's time (from the first
    request) and status."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.last: float | None = None
        self.start = 0.0
        self.answers: list[tuple[float, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.last is None:
            self.start = self.last = now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        status = 429
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            status = 200
        self.answers.append((now - self.start, status))
        return web.Response(status=status)

    def after(self, warmup: float, until: float) -> tuple[float, float]:
        """The 429 fraction and 200s per second over R, from ``warmup`` to ``until``."""
        late = [status for at, status in self.answers if warmup <= at < until]
        if not late or until <= warmup:
            return float("nan"), float("nan")
        shed = late.count(429) / len(late)
        served = late.count(200) / (until - warmup) / self.rate
        return shed, served


async def healthy_handle(request: web.Request) -> web.Response:
    await asyncio.sleep(request.app["latency"])
    return web.Response(text="ok")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def interleaved(shedding: str | None, healthy: list[str], n: int, many: int) -> Iterator[str]:
    """The healthy hosts' ``n`` URLs each interleaved with the shedding host's,
    then the shedding host's up to ``many`` in all."""
    sent = 0
    for i in range(n):
        if shedding is not None:
            yield f"{shedding}/{sent}"
            sent += 1
        for base in healthy:
            yield f"{base}/{i}"
    while shedding is not None and sent < many:
        yield f"{shedding}/{sent}"
        sent += 1


async def run(args: argparse.Namespace, shed: bool, adapt: bool) -> dict[str, float]:
    """One run; the figures of the shedding host (when there is one) and the
    seconds until the healthy hosts' last result."""
    server = Shedding(args.rate, args.burst or max(1.0, args.rate / 10))
    app = web.Application()
    app.router.add_get("/{n}", server.handle)
    healthy_app = web.Application()
    healthy_app["latency"] = args.latency
    healthy_app.router.add_get("/{n}", healthy_handle)
    async with contextlib.AsyncExitStack() as stack:
        shedding = await stack.enter_async_context(serve(app)) if shed else None
        healthy = []
        for _ in range(args.healthy):
            healthy.append(await stack.enter_async_context(serve(healthy_app)))
        many = int(args.rate * args.duration * 2)
        urls = interleaved(shedding, healthy, args.n, many)
        retry = fanout.RetryPolicy(attempts=20, backoff=0.1, backoff_max=1.0)
        left = args.n * args.healthy
        healthy_done = float("nan")
        began = time.perf_counter()
        async with fanout.Fetcher(retry=retry, adapt=adapt) as fetcher:
            stream = fetcher.stream(urls)
            async with contextlib.aclosing(stream), asyncio.timeout(args.duration * 3):
                async for result in stream:
                    now = time.perf_counter() - began
                    if shedding is None or not result.request.url.startswith(shedding):
                        left -= 1
                        if left == 0:
                            healthy_done = now
                            if shedding is None:
                                break
                    if now >= args.duration and left == 0:
                        break
    figures = {"healthy_s": healthy_done}
    if shed:
        until = min(args.duration, server.answers[-1][0] if server.answers else 0.0)
        figures["shed"], figures["served"] = server.after(args.warmup, until)
        figures["answers"] = len(server.answers)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="R: requests/s served")
    parser.add_argument("--burst", type=float, default=0.0, help="server bucket (0: R/10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds not counted")
    parser.add_argument("--healthy", type=int, default=2, help="healthy hosts")
    parser.add_argument("-n", type=int, default=200, help="URLs per healthy host")
    parser.add_argument("--latency", type=float, default=0.02, help="healthy answer, seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = {}
    for name, shed, adapt in (
        ("warm-up", False, True),  # not counted: the first run pays for imports and caches
        ("baseline", False, True),
        ("adaptive", True, True),
        ("static", True, False),
        ("baseline again", False, True),
    ):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            figures[name] = runner.run(run(args, shed, adapt))
    # before and after: a drift of the machine's speed cancels out
    base = (figures["baseline"]["healthy_s"] + figures["baseline again"]["healthy_s"]) / 2
    for name in ("adaptive", "static"):
        figures[name]["healthy_ratio"] = figures[name]["healthy_s"] / base
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"R = {args.rate:g} req/s, {args.healthy} healthy hosts x {args.n} URLs,"
        f" {args.duration:g} s runs, counted after {args.warmup:g} s"
    )
    print(f"healthy hosts alone: {base:.2f} s")
    print(
        f"{'run':9} {'429 fraction':>12} {'served / R':>10} {'healthy s':>9} {'healthy ratio':>13}"
    )
    for name in ("adaptive", "static"):
        row = figures[name]
        print(
            f"{name:9} {row['shed']:12.3f} {row['served']:10.2f}"
            f" {row['healthy_s']:9.2f} {row['healthy_ratio']:13.2f}"
        )
    print("goals: 429 fraction <= 0.10, served / R >= 0.70, healthy ratio ~1")


if __name__ == "__main__":
    main()
