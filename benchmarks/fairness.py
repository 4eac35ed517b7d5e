"""Per-host fairness: one throttled host must not slow the healthy ones.

Four hosts (127.0.0.1..4, one fastserver each); one answers every request
with 429 and Retry-After: 1. Fanout fetches N URLs per healthy host, alone
and then interleaved with the throttled host's URLs; the healthy hosts'
throughput with the throttled host over their throughput without it.

    python benchmarks/fairness.py [-n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import fanout
from common import fast_server, pin_to  # type: ignore[import-not-found]
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
    args = parser.parse_args()
    pinning = pin_to(0)
    factory = loop_factory()
    with contextlib.ExitStack() as stack:
        healthy = [stack.enter_context(fast_server(1, host=f"127.0.0.{i}")) for i in (1, 2, 3)]
        throttled = stack.enter_context(
            fast_server(1, "--status", "429", "--retry-after", "1", host="127.0.0.4")
        )
        with asyncio.Runner(loop_factory=factory) as runner:
            alone = max(runner.run(healthy_rate(healthy, None, args.n)) for _ in range(2))
            mixed = max(runner.run(healthy_rate(healthy, throttled, args.n)) for _ in range(2))
    print(f"# fairness: 3 healthy hosts x {args.n} URLs, 1 host answering 429; {pinning}")
    print(f"healthy throughput alone:          {alone:8.0f} req/s")
    print(f"healthy throughput with throttled: {mixed:8.0f} req/s")
    print(f"ratio: {mixed / alone:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
