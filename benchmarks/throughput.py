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


async def raw_aiohttp(
    base: str, n: int, concurrency: int, deadlines: aiohttp.ClientTimeout | None = None
) -> int:
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
    options = {} if deadlines is None else {"timeout": deadlines}
    async with aiohttp.ClientSession(connector=connector, **options) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


async def raw_with_deadlines(base: str, n: int, concurrency: int) -> int:
    """The baseline with fanout's default deadlines (connect, read, total), which
    cost aiohttp a timer per read: what part of the gap is the deadlines."""
    t = fanout.Timeouts()
    timeout = aiohttp.ClientTimeout(
        total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
    )
    return await raw_aiohttp(base, n, concurrency, timeout)


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


def cli_jsonl(base: str, n: int, concurrency: int) -> float:
    """``fanout fetch -i FILE -o FILE`` in a subprocess (start-up included): req/s."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "urls.txt"
        inputs.write_text("".join(f"{url}\n" for url in urls(base, n)))
        output = Path(tmp) / "out.jsonl"
        command = [sys.executable, "-m", "fanout", "fetch", "-i", str(inputs), "-o", str(output)]
        command += ["-c", str(concurrency), "--per-host", str(concurrency), "-q"]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        elapsed = time.perf_counter() - start
        lines = output.read_bytes().count(b"\n")
    if lines != n:
        raise SystemExit(f"cli: {lines} records for {n} URLs")
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
                for job in (raw_aiohttp, raw_with_deadlines, fanout_stream):
                    rate = timed(factory, job, base, args.n, args.concurrency)
                    key = (job.__name__, loop_name)
                    best[key] = max(best.get(key, 0.0), rate)
        cli_rate = max(cli_jsonl(base, args.n, args.concurrency) for _ in range(args.repeat))
    for (name, loop_name), rate in sorted(best.items()):
        print(f"{name:18} on {loop_name:8} {rate:9.0f} req/s")
    for loop_name in loops:
        ratio = best[("fanout_stream", loop_name)] / best[("raw_aiohttp", loop_name)]
        print(f"ratio fanout/raw on {loop_name}: {ratio:.3f} (goal >= 0.85)")
        ratio = best[("fanout_stream", loop_name)] / best[("raw_with_deadlines", loop_name)]
        print(f"ratio fanout/raw-with-deadlines on {loop_name}: {ratio:.3f}")
    print(f"fanout fetch CLI (JSONL to a file, start-up included): {cli_rate:9.0f} req/s")
    default_loop = "uvloop" if "uvloop" in loops else "asyncio"
    ratio = cli_rate / best[("raw_aiohttp", default_loop)]
    print(f"ratio CLI/raw on {default_loop}: {ratio:.3f} (goal >= 0.8)")
    if "uvloop" in loops:
        ratio = best[("fanout_stream", "uvloop")] / best[("raw_aiohttp", "asyncio")]
        print(f"ratio fanout(uvloop)/raw(asyncio): {ratio:.3f}")


if __name__ == "__main__":
    main()
