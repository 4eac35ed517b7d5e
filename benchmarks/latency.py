"""Latency-bound efficiency: wall time over the lower bound ceil(N/C) x latency.

N URLs, a server answering after L seconds (benchmarks/fastserver.py
--latency, pinned to CPU 1), concurrency C, for fanout and for the raw
aiohttp worker pool in the same run. What separates raw aiohttp from the
bound is the client's CPU per round: C requests to send and C responses to
parse each round.

    python benchmarks/latency.py [-n 5000] [-c 250] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from common import fast_server, pin_to  # type: ignore[import-not-found]
from fanout.runtime import loop_factory
from throughput import fanout_stream, raw_aiohttp  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, default=250)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pinning = pin_to(0)
    bound = math.ceil(args.n / args.concurrency) * args.latency
    factory = loop_factory()
    print(
        f"# latency-bound: n={args.n} c={args.concurrency} latency={args.latency}s "
        f"bound={bound:.2f}s best of {args.repeat}; {pinning}"
    )
    best: dict[str, tuple[float, float]] = {}
    with fast_server(1, "--latency", str(args.latency)) as base:
        for _ in range(args.repeat):
            for job in (raw_aiohttp, fanout_stream):
                with asyncio.Runner(loop_factory=factory) as runner:
                    wall, cpu = time.perf_counter(), time.process_time()
                    runner.run(job(base, args.n, args.concurrency))
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if job.__name__ not in best or wall < best[job.__name__][0]:
                    best[job.__name__] = (wall, cpu)
    for name, (wall, cpu) in best.items():
        rounds = math.ceil(args.n / args.concurrency)
        print(
            f"{name:14} wall {wall:.3f}s = {wall / bound:.3f} x bound; client CPU {cpu:.3f}s "
            f"({cpu / rounds * 1000:.1f} ms per round of {args.concurrency})"
        )
    ratio = best["fanout_stream"][0] / best["raw_aiohttp"][0]
    print(f"ratio fanout/raw wall: {ratio:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
