"""Per-host fairness: one throttled or slow host must not slow the healthy ones.

Four hosts (127.0.0.1..4, one fastserver each); one answers every request
with 429 and Retry-After: 1 (``--other throttled``, the default) or only
after 30 seconds (``--other slow``: its requests wait for its 16 slots).
Fanout fetches N URLs per healthy host, alone and then interleaved with the
fourth host's URLs; the healthy hosts' throughput with that host over their
throughput without it. Each round runs alone, with, with, alone (or the
reverse), so a drift of the machine's speed cancels out of the round's
ratio; the median over ``--repeat`` rounds is reported with the middle half
of the rounds' ratios.

Two mixes (``--mix``, both by default):

- ``sparse``: one throttled URL after every 10 of each healthy host's, with
  a read-ahead window of 4,096 (the case measured before parking existed).
- ``alternate``: every other URL is the throttled host's (throttled, healthy,
  throttled, ...) with the default window (2 x concurrency). Without parking
  the window fills with the throttled host's waiting requests.

The healthy hosts' throughput counts their URLs only, over the time to the
last of their results; the run then stops (the throttled host's requests,
still waiting, are not what is measured). Both runs read their whole input
up to that point: the interleaved one reads twice as many URLs.

    python benchmarks/fairness.py [-n 3000] [--repeat 5] [--mix alternate] [--other slow]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import fanout
from common import (  # type: ignore[import-not-found]
    collections_counted,
    fast_server,
    median_and_middle_half,
    pin_to,
    settle_heap,
)
from fanout.runtime import loop_factory


async def healthy_rate(
    healthy: list[str], throttled: str | None, n: int, mix: str, tuned: bool
) -> tuple[float, float]:
    """The healthy hosts' requests per second, and the client's CPU seconds per
    healthy request, both up to the last healthy result."""
    urls: list[str] = []
    for i in range(n):
        for base in healthy:
            if throttled is not None and mix == "alternate":
                urls.append(f"{throttled}/t/{i}")
            urls.append(f"{base}/h/{i}")
        if throttled is not None and mix == "sparse" and i % 10 == 0:
            urls.append(f"{throttled}/t/{i}")
    window = 4096 if mix == "sparse" else None
    limits = fanout.Limits(concurrency=64, per_host=16, window=window)
    retry = fanout.RetryPolicy(attempts=2, retry_after_max=1.0)
    done = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    last_healthy = start
    cpu = 0.0
    async with fanout.Fetcher(limits=limits, retry=retry, tune_collector=tuned) as fetcher:
        async for result in fetcher.stream(urls):
            if "/h/" in result.url:
                done += result.ok
                last_healthy = time.perf_counter()
                if done == n * len(healthy):
                    cpu = time.process_time() - cpu_start
                    break  # the throttled host's retries are not what we measure
    return done / (last_healthy - start), cpu / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="URLs per healthy host")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    parser.add_argument("--mix", choices=["sparse", "alternate", "both"], default="both")
    parser.add_argument(
        "--other",
        choices=["throttled", "slow"],
        default="throttled",
        help="the fourth host answers 429 with Retry-After: 1, or answers after 30 s",
    )
    parser.add_argument(
        "--collector",
        choices=["tuned", "default", "both"],
        default="both",
        help="the garbage collector's threshold raised while the Fetcher is open, as fanout's"
        " command line runs, or CPython's default, as in a caller's own loop",
    )
    args = parser.parse_args()
    mixes = ["sparse", "alternate"] if args.mix == "both" else [args.mix]
    tunings = [True, False] if args.collector == "both" else [args.collector == "tuned"]
    pinning = pin_to(0)
    factory = loop_factory()
    with contextlib.ExitStack() as stack:
        healthy = [stack.enter_context(fast_server(1, host=f"127.0.0.{i}")) for i in (1, 2, 3)]
        answers = ["--latency", "30"] if args.other == "slow" else ["--status", "429"]
        if args.other == "throttled":
            answers += ["--retry-after", "1"]
        throttled = stack.enter_context(fast_server(1, *answers, host="127.0.0.4"))
        doing = "answering after 30 s" if args.other == "slow" else "answering 429"
        with asyncio.Runner(loop_factory=factory) as runner:
            for mix in mixes:
                for tuned in tunings:
                    measure(runner, healthy, (throttled, doing), mix, tuned, args.n, args.repeat)
                    print(pinning)


def measure(
    runner: asyncio.Runner,
    healthy: list[str],
    other: tuple[str, str],
    mix: str,
    tuned: bool,
    n: int,
    repeat: int,
) -> None:
    throttled, doing = other
    rates: dict[str | None, list[float]] = {None: [], throttled: []}
    cpus: dict[str | None, list[float]] = {None: [], throttled: []}
    collections = {None: 0, throttled: 0}
    # The first 429 imports what parses Retry-After, and the first run warms caches:
    # measured in a round, that cost 0.1 s of the throttled side's time.
    runner.run(healthy_rate(healthy, throttled, 200, mix, tuned))
    ratios = []
    for round_number in range(repeat):
        order = [None, throttled][:: 1 if round_number % 2 else -1]
        seconds = {other: 0.0 for other in order}
        for other in order + order[::-1]:
            settle_heap()
            with collections_counted() as counted:
                rate, cpu = runner.run(healthy_rate(healthy, other, n, mix, tuned))
            collections[other] += sum(counted.values())
            seconds[other] += 1 / rate
            cpus[other].append(cpu)
        for other, spent in seconds.items():
            rates[other].append(2 / spent)
        ratios.append(seconds[None] / seconds[throttled])
    alone, mixed = (statistics.median(rates[other]) for other in (None, throttled))
    shape = "1 throttled URL per 30" if mix == "sparse" else "every other URL throttled"
    collector = "collector tuned" if tuned else "default collector"
    print(
        f"# fairness, {mix}, {collector}: 3 healthy hosts x {n} URLs, 1 host {doing}"
        f" ({shape}), {repeat} palindromic rounds"
    )
    print(f"healthy throughput alone:          {alone:8.0f} req/s (median)")
    print(f"healthy throughput with throttled: {mixed:8.0f} req/s (median)")
    alone_cpu, mixed_cpu = (statistics.median(cpus[other]) * 1e6 for other in (None, throttled))
    print(f"client CPU per healthy request: alone {alone_cpu:.0f} us, with {mixed_cpu:.0f} us")
    runs = 2 * repeat
    print(
        f"garbage collections per run: alone {collections[None] / runs:.0f},"
        f" with {collections[throttled] / runs:.0f}"
    )
    print(f"ratio: {median_and_middle_half(ratios)} (goal >= 0.9)")


if __name__ == "__main__":
    main()
