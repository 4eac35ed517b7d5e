"""Per-host fairness: one throttled host must not slow the healthy ones.

Four hosts (127.0.0.1..4, one fastserver each); one answers every request
with 429 and Retry-After: 1. Fanout fetches N URLs per healthy host, alone
and then interleaved with the throttled host's URLs; the healthy hosts'
throughput with the throttled host over their throughput without it. Each
round runs alone, with, with, alone (or the reverse), so a drift of the
machine's speed cancels out of the round's ratio; the median over
``--repeat`` rounds is reported with the middle half of the rounds' ratios.

    python benchmarks/fairness.py [-n 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import fanout
from common import (  # type: ignore[import-not-found]
    fast_server,
    median_and_middle_half,
    pin_to,
)
from fanout.runtime import loop_factory


async def healthy_rate(healthy: list[str], throttled: str | None, n: int) -> float:
    urls: list[str] = []
    for i in range(n):
        urls.extend(f"{base}/h/{i}" for base in healthy)
        if throttled is not None and i % 10 == 0:
            urls.append(f"{throttled}/t/{i}")
    limits = fanout.Limits(concurrency=64, per_host=16, window=4096)
    retry = fanout.RetryPolicy(attempts=2, retry_after_max=1.0)
    done = 0
    start = time.perf_counter()
    last_healthy = start
    async with fanout.Fetcher(limits=limits, retry=retry) as fetcher:
        async for result in fetcher.stream(urls):
            if "/h/" in result.url:
                done += result.ok
                last_healthy = time.perf_counter()
                if done == n * len(healthy):
                    break  # the throttled host's retries are not what we measure
    return done / (last_healthy - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="URLs per healthy host")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    args = parser.parse_args()
    pinning = pin_to(0)
    factory = loop_factory()
    with contextlib.ExitStack() as stack:
        healthy = [stack.enter_context(fast_server(1, host=f"127.0.0.{i}")) for i in (1, 2, 3)]
        throttled = stack.enter_context(
            fast_server(1, "--status", "429", "--retry-after", "1", host="127.0.0.4")
        )
        rates: dict[str | None, list[float]] = {None: [], throttled: []}
        ratios = []
        with asyncio.Runner(loop_factory=factory) as runner:
            for round_number in range(args.repeat):
                order = [None, throttled][:: 1 if round_number % 2 else -1]
                seconds = {other: 0.0 for other in order}
                for other in order + order[::-1]:
                    seconds[other] += 1 / runner.run(healthy_rate(healthy, other, args.n))
                for other, spent in seconds.items():
                    rates[other].append(2 / spent)
                ratios.append(seconds[None] / seconds[throttled])
    alone, mixed = (statistics.median(rates[other]) for other in (None, throttled))
    print(
        f"# fairness: 3 healthy hosts x {args.n} URLs, 1 host answering 429, "
        f"{args.repeat} palindromic rounds; {pinning}"
    )
    print(f"healthy throughput alone:          {alone:8.0f} req/s (median)")
    print(f"healthy throughput with throttled: {mixed:8.0f} req/s (median)")
    print(f"ratio: {median_and_middle_half(ratios)} (goal >= 0.9)")


if __name__ == "__main__":
    main()
