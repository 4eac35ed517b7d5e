"""Latency-bound efficiency: wall time over the lower bound ceil(N/C) x latency.

N URLs, a server answering after L seconds (benchmarks/fastserver.py
--latency, pinned to CPU 1), concurrency C, for fanout and for the raw
aiohttp worker pool in the same run. What separates raw aiohttp from the
bound is the client's CPU per round: C requests to send and C responses to
parse each round.

Each round runs raw, fanout, fanout with ``tune_collector=True`` (and, with
pycurl installed, fanout on the curl transport), then the same in reverse
(or the reverse of that); each ratio to raw is taken
within a round, and its median over ``--repeat`` rounds is
reported with the middle half of the rounds' ratios.

    python benchmarks/latency.py [-n 5000] [-c 250] [--latency 0.05] [--repeat 21]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import statistics
import time

from common import (  # type: ignore[import-not-found]
    collections_counted,
    fast_server,
    median_and_middle_half,
    pin_to,
)
from fanout.runtime import loop_factory
from throughput import (  # type: ignore[import-not-found]
    fanout_curl_stream,
    fanout_stream,
    has_curl,
    raw_aiohttp,
)


async def fanout_tuned(base: str, n: int, concurrency: int) -> int:
    """fanout_stream with ``Fetcher(tune_collector=True)``: the collector's first
    threshold raised while the fetcher is open."""
    return await fanout_stream(base, n, concurrency, tune_collector=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, default=250)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=21, help="rounds")
    args = parser.parse_args()
    pinning = pin_to(0)
    rounds = math.ceil(args.n / args.concurrency)
    bound = rounds * args.latency
    factory = loop_factory()
    print(
        f"# latency-bound: n={args.n} c={args.concurrency} latency={args.latency}s "
        f"bound={bound:.2f}s, {args.repeat} palindromic rounds; {pinning}"
    )
    walls: dict[str, list[float]] = {}  # per round, the sum of the two runs
    cpus: dict[str, list[float]] = {}
    collected: dict[str, collections.Counter[int]] = {}  # collections, by generation
    with fast_server(1, "--latency", str(args.latency)) as base:
        for round_number in range(args.repeat):
            # A palindrome: a drift of the machine's speed cancels out of the ratio.
            order = [raw_aiohttp, fanout_stream, fanout_tuned]
            if has_curl():
                order.append(fanout_curl_stream)
            order = order[:: 1 if round_number % 2 else -1]
            totals = {job.__name__: [0.0, 0.0] for job in order}
            for job in order + order[::-1]:
                with (
                    asyncio.Runner(loop_factory=factory) as runner,
                    collections_counted() as counted,
                ):
                    wall, cpu = time.perf_counter(), time.process_time()
                    runner.run(job(base, args.n, args.concurrency))
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                collected.setdefault(job.__name__, collections.Counter()).update(counted)
                totals[job.__name__][0] += wall / 2
                totals[job.__name__][1] += cpu / 2
            for name, (wall, cpu) in totals.items():
                walls.setdefault(name, []).append(wall)
                cpus.setdefault(name, []).append(cpu)
    runs = 2 * args.repeat * args.n / 1000  # thousands of requests per contender
    for name in walls:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        per_1000 = "/".join(f"{collected[name][g] / runs:.1f}" for g in range(3))
        print(
            f"{name:14} wall {wall:.3f}s = {wall / bound:.3f} x bound; client CPU {cpu:.3f}s "
            f"({cpu / rounds * 1000:.1f} ms per round of {args.concurrency}) (medians); "
            f"collections per 1,000 requests {per_1000} (generations 0/1/2)"
        )
    raw_cpu_per_round = statistics.median(cpus["raw_aiohttp"]) / rounds
    if raw_cpu_per_round > args.latency:
        print(
            f"not latency-bound on this machine: raw aiohttp's CPU per round "
            f"({raw_cpu_per_round * 1000:.1f} ms) exceeds the latency, so the ratio below "
            "compares CPU per request (throughput), not waiting"
        )
    for name, what in (("fanout_stream", ""), ("fanout_tuned", " with tune_collector=True")):
        ratios = [f / r for f, r in zip(walls[name], walls["raw_aiohttp"], strict=True)]
        print(f"ratio fanout{what}/raw wall: {median_and_middle_half(ratios)} (goal <= 1.05)")
    if "fanout_curl_stream" in walls:
        curl = walls["fanout_curl_stream"]
        to_raw = [f / r for f, r in zip(curl, walls["raw_aiohttp"], strict=True)]
        print(f"ratio fanout on curl/raw wall: {median_and_middle_half(to_raw)}")
        to_bound = median_and_middle_half([wall / bound for wall in curl])
        print(f"ratio fanout on curl/bound wall: {to_bound} (goal <= 1.05)")
    else:
        print("fanout on curl: skipped (pip install 'fanout[curl]')")


if __name__ == "__main__":
    main()
