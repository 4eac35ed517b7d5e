"""Scheduling cost over many hosts: 10,000 rate-limited hosts against one.

One fastserver process listens on ``--hosts`` ports spread over 127.0.0.1-4
(distinct host:port pairs, so distinct hosts to fanout). Fanout fetches the
same number of requests twice: spread over every host (``-k`` consecutive
requests per host, each host with a per-host rate that makes its later
requests wait for a token, so they are parked and the dispatcher's wake-up
heap holds thousands of hosts), and all to one host (the same rate limiting
code runs, at a rate it never reaches: 10^6 per second, with a burst of
1,000, as a host waiting for a token waits at least a millisecond). The
ratio of the two throughputs is what the dispatcher's cost per host adds.

A third run spreads the requests over ``--few`` hosts (64) at the same
never-reached rate: many against few separates the dispatcher's cost (hosts
waiting in its heap, requests parked) from what any spread of hosts costs.

Every answer says ``Connection: close``, in every run: a keep-alive run over
10,000 hosts would open a connection per host while the one-host run reuses
64, and measure connection setup instead of scheduling; it would also need
10,000 idle sockets, more than the idle cap of the connector allows. The
client closes first, so the TIME_WAIT entries are its own, which Linux
reuses on loopback: closed by the server, they piled up under its one
listening port and slowed the one-host run by 40 %. The soft limit of open
files is raised to the hard one (the server holds 10,000 listening sockets).

Each round runs one, few, many, many, few, one (or the reverse), so a drift
of the machine's speed cancels out; the median over ``--repeat`` rounds is
reported.

    python benchmarks/manyhosts.py [-n 20000] [--hosts 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import fanout
from common import (  # type: ignore[import-not-found]
    fast_servers,
    median_and_middle_half,
    pin_to,
    raise_open_files,
    settle_heap,
)
from fanout.runtime import loop_factory

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


async def throughput(urls: list[str], limits: fanout.Limits) -> tuple[float, int]:
    """Requests per second, and the most requests parked at once."""
    ok = peak = 0
    settle_heap()
    start = time.perf_counter()
    async with fanout.Fetcher(limits=limits) as fetcher:
        async for result in fetcher.stream(urls):
            ok += result.ok
            peak = max(peak, fetcher.parked)
    seconds = time.perf_counter() - start
    if ok != len(urls):
        raise SystemExit(f"only {ok} of {len(urls)} requests succeeded")
    return len(urls) / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000, help="requests per run")
    parser.add_argument("--hosts", type=int, default=10_000, help="distinct host:port pairs")
    parser.add_argument("-k", type=int, default=2, help="consecutive requests per host")
    parser.add_argument("--rate", type=float, default=20.0, help="per-host rate, many hosts")
    parser.add_argument("--few", type=int, default=64, help="hosts of the third run")
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    args = parser.parse_args()
    limit = raise_open_files()
    pinning = pin_to(0)
    factory = loop_factory()
    with fast_servers(args.hosts, "--close", hosts=ADDRESSES) as bases:
        many = [bases[(i // args.k) % len(bases)] + f"/m/{i}" for i in range(args.n)]
        one = [bases[0] + f"/o/{i}" for i in range(args.n)]
        c = args.concurrency
        runs = {
            # burst: on uvloop the loop's clock ticks in milliseconds, so one host
            # can start at most `burst` requests per tick, whatever its rate
            "one": (
                one,
                fanout.Limits(concurrency=c, per_host=None, per_host_rate=1e6, burst=1000),
            ),
            "many": (many, fanout.Limits(concurrency=c, per_host=None, per_host_rate=args.rate)),
        }
        few = [bases[i % args.few] + f"/f/{i}" for i in range(args.n)]
        runs["few"] = (few, runs["one"][1])
        rates: dict[str, list[float]] = {"one": [], "few": [], "many": []}
        peaks: list[int] = []
        ratios: dict[str, list[float]] = {"one": [], "few": []}
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(throughput(one[:2000], runs["one"][1]))  # warm up
            for round_number in range(args.repeat):
                order = ["one", "few", "many"][:: 1 if round_number % 2 else -1]
                seconds = dict.fromkeys(order, 0.0)
                for name in order + order[::-1]:
                    rate, peak = runner.run(throughput(*runs[name]))
                    seconds[name] += 1 / rate
                    if name == "many":
                        peaks.append(peak)
                for name, spent in seconds.items():
                    rates[name].append(2 / spent)
                for name in ("one", "few"):
                    ratios[name].append(seconds[name] / seconds["many"])
    one_rate, few_rate, many_rate = (
        statistics.median(rates[name]) for name in ("one", "few", "many")
    )
    print(
        f"# manyhosts: {args.n} requests, {args.hosts} hosts x {args.k} consecutive requests"
        f" at --per-host-rate {args.rate:g} vs 1 host, -c {args.concurrency}, one connection"
        f" per request; {args.repeat} palindromic rounds; {pinning}; {limit}"
    )
    print(f"{1:>6} host:  {one_rate:8.0f} req/s (median)")
    print(f"{args.few:>6} hosts: {few_rate:8.0f} req/s (median)")
    print(f"{args.hosts:>6} hosts: {many_rate:8.0f} req/s (median), peak parked {max(peaks)}")
    print(
        f"ratio {args.hosts} hosts / 1 host: {median_and_middle_half(ratios['one'])} (goal >= 0.8)"
    )
    print(f"ratio {args.hosts} hosts / {args.few} hosts: {median_and_middle_half(ratios['few'])}")


if __name__ == "__main__":
    main()
