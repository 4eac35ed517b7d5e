"""ETA accuracy: the ETA ``--progress`` shows, against the time the run
actually still took, at 25 % and 50 % of a run with one rate-limited host
among fast ones.

Loopback servers in this process: ``--fast-hosts`` fast hosts share ``--fast``
URLs, and one slow host has ``--slow`` URLs, held to ``--rate`` requests per
second in one of two ways (``--sources``):

- ``robots``: its robots.txt says ``Crawl-delay: 1/rate`` (run with ``--robots``);
- ``server``: it advertises a quota of ``rate`` requests per 1-second window
  (``RateLimit``/``RateLimit-Policy``) and enforces it with 429s.

The slow host's URLs are spread evenly through the input (``--orders mixed``),
at random places (``shuffled``), or all at its start (``slow-first``) or its
end (``slow-last``). fanout runs the ``fanout fetch`` job (the
input read from a file, records to /dev/null) with the ``--progress`` bar's
own state attached, drawn to nowhere; when 25 % and 50 % of the records are
written, the ETA is read exactly as the bar computes it
(:attr:`fanout.cli.progress.LiveProgress.eta`). Once the run ends, each is
set against the time that was actually left (ratio 1.0: exact; below 1: too
early), next to the naive ETA (the remaining count over the overall rate so
far) for contrast.

    python benchmarks/eta.py [--fast-hosts 4] [--fast 2000] [--slow 50] [--rate 5]
                             [--sources robots server] [--orders mixed ...] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from rich.console import Console

import fanout
from fanout.cli.progress import LiveProgress
from fanout.jobs.fetch import FetchJob, run_fetch_job
from fanout.output.stats import RunStats
from fanout.runtime import loop_factory

POINTS = (0.25, 0.5)

Handler = Callable[[web.Request], Awaitable[web.Response]]


class Slow:
    """The slow host's server: held to ``rate`` per second by its robots.txt
    (``robots``) or by the quota it advertises and enforces (``server``)."""

    def __init__(self, source: str, rate: float) -> None:
        self.source, self.rate = source, rate
        self.start: float | None = None
        self.current = -1
        self.used = 0
        self.throttled = 0

    async def robots(self, request: web.Request) -> web.Response:
        if self.source != "robots":
            raise web.HTTPNotFound
        return web.Response(text=f"User-agent: *\nCrawl-delay: {1 / self.rate:g}\n")

    async def page(self, request: web.Request) -> web.Response:
        if self.source != "server":
            return web.Response(text="slow")
        quota = max(round(self.rate), 1)
        now = time.monotonic()
        if self.start is None:
            self.start = now
        window = int(now - self.start)
        if window != self.current:
            self.current, self.used = window, 0
        reset = self.start + window + 1 - now
        status = 200 if self.used < quota else 429
        self.used += status == 200
        self.throttled += status == 429
        headers = {
            "RateLimit": f'"default";r={quota - self.used};t={math.ceil(reset)}',
            "RateLimit-Policy": f'"default";q={quota};w=1',
        }
        return web.Response(status=status, headers=headers, text="slow")


def fast_page(latency: float) -> Handler:
    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        return web.Response(text="fast")

    return page


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def urls_for(fast_bases: list[str], slow_base: str, fast: int, slow: int, order: str) -> list[str]:
    """``fast`` URLs over the fast hosts in turn, ``slow`` of the slow host,
    spread evenly through them (``mixed``), at random places (``shuffled``,
    the same each run), before them (``slow-first``) or after them
    (``slow-last``)."""
    fast_urls = [f"{fast_bases[i % len(fast_bases)]}/{i}" for i in range(fast)]
    slow_urls = [f"{slow_base}/{i}" for i in range(slow)]
    if order == "slow-first":
        return slow_urls + fast_urls
    if order == "slow-last":
        return fast_urls + slow_urls
    if order == "shuffled":
        shuffled = fast_urls + slow_urls
        random.Random(20).shuffle(shuffled)
        return shuffled
    total = fast + slow
    # slow URL j goes at the j-th of ``slow`` evenly spaced places
    places = {(j * total) // slow for j in range(slow)}
    urls: list[str] = []
    fast_iter, slow_iter = iter(fast_urls), iter(slow_urls)
    for index in range(total):
        urls.append(next(slow_iter) if index in places else next(fast_iter))
    return urls


@dataclass
class Reading:
    """What the bar said when ``done`` of the records were written, ``at``
    seconds into the run."""

    point: float
    done: int
    at: float
    eta: float | None
    naive: float


@dataclass(frozen=True)
class Scenario:
    """One run's shape: the slow host's rate ``source``, the input's ``order``."""

    source: str
    order: str
    fast_hosts: int
    fast: int
    slow: int
    rate: float
    latency: float


@dataclass
class Run:
    scenario: Scenario
    total: int
    elapsed: float = 0.0
    readings: list[Reading] = field(default_factory=list)
    throttled: int = 0
    failed: int = 0


async def run_once(scenario: Scenario, work: Path) -> Run:
    source = scenario.source
    slow_server = Slow(source, scenario.rate)
    slow_app = web.Application()
    slow_app.router.add_get("/robots.txt", slow_server.robots)
    slow_app.router.add_get("/{n}", slow_server.page)
    runners: list[web.AppRunner] = []
    try:
        runner, slow_base = await serve(slow_app)
        runners.append(runner)
        fast_bases = []
        for _ in range(scenario.fast_hosts):
            app = web.Application()
            app.router.add_get("/{n}", fast_page(scenario.latency))
            runner, base = await serve(app)
            runners.append(runner)
            fast_bases.append(base)
        urls = urls_for(fast_bases, slow_base, scenario.fast, scenario.slow, scenario.order)
        input_path = work / f"{source}.txt"
        input_path.write_text("".join(f"{url}\n" for url in urls))
        config = fanout.FetcherConfig(
            robots=source == "robots",
            limits=fanout.Limits(per_host=32),
            retry=fanout.RetryPolicy(attempts=20, backoff=0.1, backoff_max=0.5),
        )
        job = FetchJob(input_path=str(input_path), output=os.devnull, config=config)
        total = len(urls)
        stats = RunStats()
        live = LiveProgress(stats, total, console=Console(file=io.StringIO()))
        result = Run(scenario, total)
        marks = [(point, math.ceil(point * total)) for point in POINTS]
        began = time.perf_counter()

        def on_record() -> None:
            live.refresh()
            now = time.perf_counter()
            result.elapsed = now - began
            done = stats.done
            while marks and done >= marks[0][1]:
                point, _ = marks.pop(0)
                naive = (total - done) * (now - began) / done
                result.readings.append(Reading(point, done, now - began, live.eta, naive))

        # the slow host alone needs slow / rate seconds; a run that takes far
        # longer has gone wrong
        async with asyncio.timeout(60 + 10 * scenario.slow / scenario.rate):
            await run_fetch_job(job, stats=stats, on_fetcher=live.attach, on_record=on_record)
        result.throttled = slow_server.throttled
        result.failed = stats.failed
        return result
    finally:
        for runner in runners:
            await runner.cleanup()


def report(run: Run) -> list[str]:
    lines = [
        f"{run.scenario.source}, {run.scenario.order}: {run.total} requests in"
        f" {run.elapsed:.1f} s"
        f" ({run.failed} failed, {run.throttled} 429s at the slow host)",
        f"  {'point':>5} {'done':>6} {'ETA s':>7} {'actual s':>8} {'ratio':>6}"
        f" {'naive s':>8} {'naive ratio':>11}",
    ]
    for reading in run.readings:
        actual = run.elapsed - reading.at
        eta = "-" if reading.eta is None else f"{reading.eta:.1f}"
        ratio = "-" if reading.eta is None or actual <= 0 else f"{reading.eta / actual:.2f}"
        naive_ratio = f"{reading.naive / actual:.2f}" if actual > 0 else "-"
        lines.append(
            f"  {reading.point:>5.0%} {reading.done:>6} {eta:>7} {actual:>8.1f} {ratio:>6}"
            f" {reading.naive:>8.1f} {naive_ratio:>11}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-hosts", type=int, default=4)
    parser.add_argument("--fast", type=int, default=2000, help="URLs over the fast hosts")
    parser.add_argument("--slow", type=int, default=50, help="URLs of the slow host")
    parser.add_argument("--rate", type=float, default=5.0, help="the slow host's req/s")
    parser.add_argument("--latency", type=float, default=0.1, help="the fast hosts' seconds")
    parser.add_argument("--sources", nargs="+", choices=("robots", "server"), default=None)
    parser.add_argument(
        "--orders",
        nargs="+",
        choices=("mixed", "shuffled", "slow-first", "slow-last"),
        default=["mixed"],
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not (
        0 < args.fast_hosts <= 16
        and 0 <= args.fast <= 100_000
        and 0 < args.slow <= 10_000
        and args.rate > 0
        and 0 <= args.latency <= 10
    ):
        parser.error("need 1-16 fast hosts, 0-100,000 fast and 1-10,000 slow URLs, a rate > 0")
    sources = args.sources or ["robots", "server"]
    print(
        f"{args.fast} URLs over {args.fast_hosts} fast hosts, {args.slow} of one host held"
        f" to {args.rate:g}/s: the ETA against the time actually left"
    )
    with tempfile.TemporaryDirectory() as work:
        for order in args.orders:
            for source in sources:
                scenario = Scenario(
                    source,
                    order,
                    args.fast_hosts,
                    args.fast,
                    args.slow,
                    args.rate,
                    args.latency,
                )
                for _ in range(args.repeat):
                    with asyncio.Runner(loop_factory=loop_factory()) as runner:
                        run = runner.run(run_once(scenario, Path(work)))
                    print("\n".join(report(run)))


if __name__ == "__main__":
    main()
