"""The journal's cost: `fanout fetch` with and without `--journal`, same run,
and the peak RSS of a journaled run over a million URLs.

    python benchmarks/journal.py [-n 20000] [--big 1000000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fast_server, pin_to  # type: ignore[import-not-found]


def fetch(workdir: Path, urls: Path, *extra: str) -> float:
    """Run the CLI once in a fresh process; return its wall time."""
    for leftover in ("out.jsonl", "run.db", "run.db-wal", "run.db-shm"):
        (workdir / leftover).unlink(missing_ok=True)
    command = [sys.executable, "-m", "fanout", "fetch", "-i", str(urls), "-o", "out.jsonl"]
    command += ["-c", "64", "--per-host", "64", "-q", *extra]
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pinning = pin_to(0)
    with fast_server(1) as base, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        urls = workdir / "urls.txt"
        urls.write_text("".join(f"{base}/j/{i}\n" for i in range(args.n)))
        plain = journaled = float("inf")
        for _ in range(args.repeat):
            plain = min(plain, fetch(workdir, urls))
            journaled = min(journaled, fetch(workdir, urls, "--journal", "run.db"))
        print(
            f"# journal cost: n={args.n}, CLI in a fresh process, best of {args.repeat}; {pinning}"
        )
        print(f"without --journal: {args.n / plain:8.0f} req/s")
        print(f"with --journal:    {args.n / journaled:8.0f} req/s")
        print(f"ratio: {plain / journaled:.3f} (goal >= 0.85)")
        if args.big:
            urls.write_text("".join(f"{base}/b/{i}\n" for i in range(args.big)))
            wall = fetch(workdir, urls, "--journal", "run.db")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(
                f"journaled run over {args.big:,} URLs: {wall:.0f} s, peak RSS {peak:.0f} MB "
                "(goal < 200 MB)"
            )


if __name__ == "__main__":
    main()
