"""``fanout fetch --workers``: 1 process against 2 on a workload the client's CPU limits.

The server is benchmarks/fastserver.py on ``--hosts`` ports with ``--latency``
per answer: each answer is a timer, so at high concurrency the server's CPU
stays small and the client's CPU is the limit. Each trial runs the real
command (``fanout fetch -i urls.txt -o /dev/null -q --workers N``) in a fresh
process and times it; its CPU (the parent and its workers, from
``RUSAGE_CHILDREN``) and the server's (from /proc) are read around it. Each
round runs every worker count as a palindrome (a shuffled order, then
reversed), so a drift of the shared machine's speed cancels out of the
ratios, taken within a round; their median over ``--repeat`` rounds is
reported with the middle half.

    python benchmarks/workers.py [-n 20000] [-c 512] [--per-host 64] [--hosts 16]
        [--latency 0.05] [--workers 1 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import HERE, compile_fanout, median_and_middle_half  # type: ignore[import-not-found]


@contextmanager
def server(ports: int, latency: float) -> Iterator[tuple[list[str], int]]:
    """fastserver.py on ``ports`` ports of 127.0.0.1; yield its bases and pid."""
    command = [sys.executable, str(HERE / "fastserver.py"), "--ports", str(ports)]
    command += ["--latency", str(latency)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        bases = [f"http://{pair}" for pair in process.stdout.readline().split()]
        yield bases, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def trial(urls: Path, workers: int, args: argparse.Namespace, server_pid: int) -> dict[str, float]:
    command = [sys.executable, "-m", "fanout", "fetch", "-i", str(urls), "-o", os.devnull, "-q"]
    command += ["-c", str(args.concurrency), "--per-host", str(args.per_host)]
    command += ["--workers", str(workers)]
    client_before, server_before = children_cpu(), cpu_of(server_pid)
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=600)
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "rate": args.n / wall,
        "client_cpu": children_cpu() - client_before,
        "server_share": (cpu_of(server_pid) - server_before) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000, help="URLs per trial")
    parser.add_argument("-c", "--concurrency", type=int, default=512)
    parser.add_argument("--per-host", type=int, default=64)
    parser.add_argument("--hosts", type=int, default=16, help="server ports (hosts)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    args = parser.parse_args()
    print(compile_fanout())
    limits = f"-c {args.concurrency}, --per-host {args.per_host}"
    print(f"{os.cpu_count()} CPUs; {args.n:,} URLs over {args.hosts} hosts,"
          f" latency {args.latency * 1000:g} ms, {limits}")  # fmt: skip
    bound = args.n / (min(args.concurrency, args.hosts * args.per_host) / args.latency)
    print(f"lower bound set by the latency: {bound:.2f} s")
    rng = random.Random(0)
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
    ratios: dict[int, list[float]] = {n: [] for n in args.workers[1:]}
    with server(args.hosts, args.latency) as (bases, pid), tempfile.TemporaryDirectory() as tmp:
        urls = Path(tmp) / "urls.txt"
        urls.write_text("".join(f"{bases[i % len(bases)]}/item/{i}\n" for i in range(args.n)))
        trial(urls, args.workers[0], args, pid)  # warm-up: caches, byte code
        for _ in range(args.repeat):
            order = list(args.workers)
            rng.shuffle(order)
            results: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
            for workers in [*order, *reversed(order)]:
                results[workers].append(trial(urls, workers, args, pid))
            for workers, pair in results.items():
                runs[workers].extend(pair)
            base_rate = statistics.mean(r["rate"] for r in results[args.workers[0]])
            for workers in args.workers[1:]:
                rate = statistics.mean(r["rate"] for r in results[workers])
                ratios[workers].append(rate / base_rate)
    for workers, trials in runs.items():
        rate = statistics.median(r["rate"] for r in trials)
        cpu = statistics.median(r["client_cpu"] for r in trials)
        share = statistics.median(r["server_share"] for r in trials)
        wall = statistics.median(r["wall"] for r in trials)
        print(f"--workers {workers}: {rate:,.0f} req/s ({wall:.2f} s), client CPU {cpu:.2f} s"
              f" ({cpu / wall:.0%} of one core), server CPU {share:.0%} of one core")  # fmt: skip
    for workers, values in ratios.items():
        print(f"throughput --workers {workers} / --workers {args.workers[0]}:"
              f" {median_and_middle_half(values)}")  # fmt: skip


if __name__ == "__main__":
    main()
