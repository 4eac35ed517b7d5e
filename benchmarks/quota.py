"""The advertised-quota scenario: a server that enforces exactly the quota it
advertises (Q requests per W-second window, 429 beyond), in each header style.

A loopback server (in this process) answers every request with what is left
of its window's quota: ``RateLimit``/``RateLimit-Policy`` of the IETF draft
(``draft``), or ``X-RateLimit-*`` with the reset as a Unix timestamp
(``x-epoch``). fanout fetches N URLs of it with its server hints on, then off.
Reported, counted at the server: the 429s after the first window, and the
quota used, the requests served over Q times the windows the run spanned
(1.0: every window used to the full); and the requests served per second over
Q/W, by the clock.

    python benchmarks/quota.py [-n 60] [--quota 10] [--window 1] [--styles draft x-epoch]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from aiohttp import web

import fanout
from fanout.runtime import loop_factory


class QuotaServer:
    """Fixed windows from the first request, each taking ``quota`` requests."""

    def __init__(self, style: str, quota: int, window: float) -> None:
        self.style, self.quota, self.window = style, quota, window
        self.start: float | None = None
        self.current = -1
        self.used = 0
        self.answers: list[tuple[int, int]] = []  # (window, status)

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        window = int((now - self.start) // self.window)
        if window != self.current:
            self.current, self.used = window, 0
        reset = self.start + (window + 1) * self.window - now
        status = 200 if self.used < self.quota else 429
        self.used += status == 200
        self.answers.append((window, status))
        left = self.quota - self.used
        if self.style == "draft":
            headers = {
                "RateLimit": f'"default";r={left};t={math.ceil(reset)}',
                "RateLimit-Policy": f'"default";q={self.quota};w={math.ceil(self.window)}',
            }
        else:
            headers = {
                "X-RateLimit-Limit": str(self.quota),
                "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": str(math.ceil(time.time() + reset)),
            }
        return web.Response(status=status, headers=headers)


async def run(style: str, n: int, quota: int, window: float, hints: bool) -> str:
    server = QuotaServer(style, quota, window)
    app = web.Application()
    app.router.add_get("/{n}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    retry = fanout.RetryPolicy(attempts=20, backoff=0.1, backoff_max=0.5)
    try:
        began = time.perf_counter()
        async with fanout.Fetcher(retry=retry, server_hints=hints) as fetcher:
            results = await fetcher.gather([f"http://127.0.0.1:{port}/{i}" for i in range(n)])
        elapsed = time.perf_counter() - began
    finally:
        await runner.cleanup()
    served = sum(status == 200 for _, status in server.answers)
    late = sum(1 for w, status in server.answers if w > 0 and status == 429)
    windows = server.current + 1
    used = served / (quota * windows)
    rate = served / elapsed / (quota / window)
    done = sum(r.ok for r in results)
    return (
        f"{style:8} hints {'on ' if hints else 'off'}: {done}/{n} done, {late} 429s after the"
        f" first window, quota used {used:.2f} over {windows} windows,"
        f" throughput / advertised {rate:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=60, help="requests per run")
    parser.add_argument("--quota", type=int, default=10, help="requests per window")
    parser.add_argument("--window", type=float, default=1.0, help="seconds")
    parser.add_argument("--styles", nargs="+", default=["draft", "x-epoch"])
    args = parser.parse_args()
    print(f"{args.n} requests, quota {args.quota} per {args.window:g} s")
    for style in args.styles:
        for hints in (True, False):
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                print(runner.run(run(style, args.n, args.quota, args.window, hints)))


if __name__ == "__main__":
    main()
