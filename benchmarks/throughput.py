"""Throughput: fanout's ``stream`` against a minimal raw aiohttp worker pool.

Both fetch the same N small responses from benchmarks/fastserver.py (pinned to
CPU 1, the client to CPU 0) at concurrency C, in the same run, on the same
event loop type. Each contender runs ``--repeat`` times, alternating; the best
run of each counts. Prints one line per figure.

    python benchmarks/throughput.py [-n 20000] [-c 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

import fanout
from common import fast_server, pin_to  # type: ignore[import-not-found]


def urls(base: str, n: int) -> Iterator[str]:
    return (f"{base}/item/{i}" for i in range(n))


async def raw_aiohttp(base: str, n: int, concurrency: int) -> int:
    """The baseline: one session, C coroutines pulling URLs from a queue."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls(base, n):
        queue.put_nowait(url)
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty():
            url = queue.get_nowait()
            async with session.get(url) as response:
                await response.read()
            done += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


async def fanout_stream(base: str, n: int, concurrency: int) -> int:
    limits = fanout.Limits(concurrency=concurrency, per_host=None)
    done = 0
    async with fanout.Fetcher(limits=limits) as fetcher:
        async for result in fetcher.stream(urls(base, n)):
            done += result.ok
    return done


def timed(
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    job: Callable[[str, int, int], Awaitable[int]],
    base: str,
    n: int,
    concurrency: int,
) -> float:
    async def main() -> int:
        return await job(base, n, concurrency)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        start = time.perf_counter()
        done = runner.run(main())
        elapsed = time.perf_counter() - start
    if done != n:
        raise SystemExit(f"{job.__name__}: only {done} of {n} succeeded")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pinning = pin_to(0)
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    uvloop_factory = fanout.runtime.loop_factory()
    if uvloop_factory is not None:
        loops["uvloop"] = uvloop_factory
    print(f"# throughput: n={args.n} c={args.concurrency} best of {args.repeat}; {pinning}")
    with fast_server(cpu=1) as base:
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.repeat):
            for loop_name, factory in loops.items():
                for job in (raw_aiohttp, fanout_stream):
                    rate = timed(factory, job, base, args.n, args.concurrency)
                    key = (job.__name__, loop_name)
                    best[key] = max(best.get(key, 0.0), rate)
    for (name, loop_name), rate in sorted(best.items()):
        print(f"{name:14} on {loop_name:8} {rate:9.0f} req/s")
    for loop_name in loops:
        ratio = best[("fanout_stream", loop_name)] / best[("raw_aiohttp", loop_name)]
        print(f"ratio fanout/raw on {loop_name}: {ratio:.3f} (goal >= 0.85)")
    if "uvloop" in loops:
        ratio = best[("fanout_stream", "uvloop")] / best[("raw_aiohttp", "asyncio")]
        print(f"ratio fanout(uvloop)/raw(asyncio): {ratio:.3f}")


if __name__ == "__main__":
    main()
