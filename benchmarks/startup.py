"""Start-up cost: `fanout --help` and `fanout fetch` of one URL against
`python -c 'import aiohttp'`, each the best of R runs of a fresh process.

    python benchmarks/startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import compile_fanout, fast_server  # type: ignore[import-not-found]


def best_of(command: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    python = sys.executable
    compiled = compile_fanout()
    baseline = best_of([python, "-c", "import aiohttp"], args.repeat)
    help_time = best_of([python, "-m", "fanout", "--help"], args.repeat)
    with fast_server(1) as base:
        fetch_time = best_of([python, "-m", "fanout", "fetch", f"{base}/x", "-q"], args.repeat)
    print(f"# start-up, best of {args.repeat} fresh processes; {compiled}")
    print(f"python -c 'import aiohttp': {baseline * 1000:7.1f} ms")
    print(f"fanout --help:              {help_time * 1000:7.1f} ms = {help_time / baseline:.2f}x")
    print(f"fanout fetch (one URL):     {fetch_time * 1000:7.1f} ms = {fetch_time / baseline:.2f}x")
    print("goal: each <= 1.3x")


if __name__ == "__main__":
    main()
