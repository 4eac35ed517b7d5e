"""Memory: peak RSS of fanout streaming N URLs, against the naive gather of all tasks.

fanout runs on the aiohttp transport and, with pycurl installed, on the curl
transport (``fanout-curl``); each should stay flat in N.

Each run is a fresh subprocess (peak RSS is per process) fetching N URLs from
benchmarks/fastserver.py. The naive pattern from the notes (one task per URL,
all gathered, under a Semaphore) is stopped when its RSS passes a ceiling,
and reported as such.

    python benchmarks/memory.py [--sizes 100000 1000000] [--ceiling-mb 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import threading
import time

import fanout
from common import fast_server, pin_to  # type: ignore[import-not-found]
from fanout.net.transports import TransportName
from fanout.runtime import loop_factory
from throughput import has_curl  # type: ignore[import-not-found]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000  # KiB on Linux


async def run_fanout(base: str, n: int, transport: TransportName = "aiohttp") -> int:
    limits = fanout.Limits(concurrency=64, per_host=None)
    done = 0
    async with fanout.Fetcher(limits=limits, keep_body=False, transport=transport) as fetcher:
        async for result in fetcher.stream(f"{base}/m/{i}" for i in range(n)):
            done += result.ok
    return done


async def run_naive(base: str, n: int) -> int:
    import aiohttp

    semaphore = asyncio.Semaphore(64)
    async with aiohttp.ClientSession() as session:

        async def get(url: str) -> bytes:
            async with semaphore, session.get(url) as response:
                return await response.read()

        results = await asyncio.gather(*(get(f"{base}/m/{i}") for i in range(n)))
    return len(results)


def child(mode: str, base: str, n: int, ceiling_mb: float) -> None:
    """In the subprocess: run one mode, print 'done peak_mb' or 'ceiling peak_mb'."""
    pin_to(0)

    def watch() -> None:
        while True:
            if rss_mb() > ceiling_mb:
                print(f"ceiling {peak_mb():.0f}", flush=True)
                import os

                os._exit(0)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if mode == "naive":
            done = runner.run(run_naive(base, n))
        else:
            done = runner.run(run_fanout(base, n, "curl" if mode == "fanout-curl" else "aiohttp"))
    print(f"done {peak_mb():.0f} {done}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--ceiling-mb", type=float, default=2000.0)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "BASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, base, n = args.child
        child(mode, base, int(n), args.ceiling_mb)
        return
    print(f"# memory: peak RSS in MB, fresh process per run, ceiling {args.ceiling_mb:.0f} MB")
    peaks: dict[tuple[str, int], str] = {}
    with fast_server(1) as base:
        for mode in ("fanout", "fanout-curl", "naive") if has_curl() else ("fanout", "naive"):
            for n in args.sizes:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        base,
                        str(n),
                        "--ceiling-mb",
                        str(args.ceiling_mb),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=1800,
                    check=True,
                ).stdout.split()
                label = (
                    f"{out[1]} MB" if out[0] == "done" else f"> {out[1]} MB (stopped at ceiling)"
                )
                peaks[(mode, n)] = out[1]
                print(f"{mode:11} n={n:>9,}: peak RSS {label}", flush=True)
    for mode in ("fanout", "fanout-curl"):
        if (mode, args.sizes[0]) not in peaks:
            print(f"{mode}: skipped (pip install 'fanout[curl]')")
            continue
        small, large = (float(peaks[(mode, n)]) for n in (args.sizes[0], args.sizes[-1]))
        print(
            f"{mode} growth {args.sizes[0]:,} -> {args.sizes[-1]:,}: {large / small:.2f}x "
            "(goal within 1.2x, under 150 MB)"
        )


if __name__ == "__main__":
    main()
