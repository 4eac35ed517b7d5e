"""Writes off the event loop: `fanout fetch` throughput against another
revision's, in the same run.

The current fanout (this checkout) and the one of git revision REV (say the
last one that wrote on the event loop, before issue 17) fetch the same N
small responses from benchmarks/fastserver.py (pinned to CPU 1, the clients
to CPU 0), each in a fresh process, in four ways: JSONL to a file, the same
with --journal, JSONL to a pipe (read by this script) and with --out-dir.
Each round runs every pair, in an order that alternates; the best wall time
of each over the rounds gives its rate, and the ratio current/REV is printed
(above 1: the current one is faster).

    python benchmarks/writes.py --against REV [-n 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import HERE, fast_server, pin_to  # type: ignore[import-not-found]

MODES = {
    "-o file": ["-o", "out.jsonl"],
    "-o file --journal": ["-o", "out.jsonl", "--journal", "run.db"],
    "stdout to a pipe": [],
    "--out-dir": ["-o", "out.jsonl", "--out-dir", "pages"],
}


def revision_source(revision: str, into: Path) -> Path:
    """Extract src/fanout of git ``revision`` of this repository under ``into``;
    return the directory to put on sys.path."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True
    )
    if top.returncode != 0:
        sys.exit(f"not in a git checkout: {top.stderr.strip()}")
    archive = subprocess.run(
        ["git", "archive", revision, "src/fanout"], cwd=top.stdout.strip(), capture_output=True
    )
    if archive.returncode != 0:
        sys.exit(f"cannot read revision {revision!r}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def fanout_command(source: Path | None) -> list[str]:
    """The command that runs fanout: this checkout's, or the one under ``source``."""
    if source is None:
        return [sys.executable, "-m", "fanout"]
    code = f"import sys; sys.path.insert(0, {str(source)!r}); from fanout.cli import main; main()"
    return [sys.executable, "-c", code]


def fetch(command: list[str], workdir: Path, extra: list[str]) -> float:
    """One run in a fresh process; its wall time."""
    for leftover in ("out.jsonl", "run.db", "run.db-wal", "run.db-shm"):
        (workdir / leftover).unlink(missing_ok=True)
    shutil.rmtree(workdir / "pages", ignore_errors=True)
    args = [*command, "fetch", "-i", "urls.txt", "-c", "64", "--per-host", "64", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=workdir, capture_output=True)  # stdout: read by a pipe
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"fanout failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", required=True, metavar="REV", help="git revision")
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pinning = pin_to(0)
    with tempfile.TemporaryDirectory() as tmp, fast_server(1) as base:
        workdir = Path(tmp)
        versions = {"current": fanout_command(None)}
        versions[args.against] = fanout_command(revision_source(args.against, workdir / "rev"))
        (workdir / "urls.txt").write_text("".join(f"{base}/w/{i}\n" for i in range(args.n)))
        best: dict[tuple[str, str], float] = {}
        for round_ in range(args.repeat):
            for mode, extra in MODES.items():
                order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
                for version in order:
                    wall = fetch(versions[version], workdir, extra)
                    key = (mode, version)
                    best[key] = min(best.get(key, wall), wall)
        print(f"# writes: n={args.n}, fresh processes, best of {args.repeat}; {pinning}")
        for mode in MODES:
            current, other = args.n / best[(mode, "current")], args.n / best[(mode, args.against)]
            print(
                f"{mode:<18} current {current:7.0f} req/s, {args.against} {other:7.0f} req/s,"
                f" ratio {current / other:.3f}"
            )


if __name__ == "__main__":
    main()
