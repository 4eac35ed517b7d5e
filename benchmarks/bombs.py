"""Bombs: peak RSS of `fanout fetch --body text` over N bombs, against N small pages.

Each run is a fresh `fanout fetch` process whose peak RSS comes from wait4.
The bombs are the demo server's /gzip-bomb, /br-bomb and /zstd-bomb (gzip,
brotli and zstd; --encoding picks some): kept ones inflate to exactly
--max-bytes of zeros (the largest body that is kept, and the costliest record:
a NUL byte is 6 bytes of JSON text), cut ones to 1 GiB (stopped at the cap).
The baseline fetches as many small pages. The goal: a bomb costs a small
multiple of max_bytes, whatever it inflates to.

    python benchmarks/bombs.py [--bombs 6] [--max-bytes 8MiB] [--body text] [--journal]
        [--encoding gzip --encoding br ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fanout.cli.units import parse_size
from fanout.demo import ServerThread

MB = 1e6
MIB = 1024 * 1024
ENCODINGS = ("gzip", "br", "zstd")


def peak_rss(urls: list[str], max_bytes: int, body: str, journal: Path | None) -> int:
    """Peak RSS in bytes of one `fanout fetch` process over ``urls``."""
    command = [sys.executable, "-m", "fanout", "fetch", "-q", "--body", body]
    command += ["--max-bytes", str(max_bytes), "-o", os.devnull, *urls]
    if journal is not None:
        command += ["--journal", str(journal)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode not in (0, 1):  # 1: some URLs failed (a cut bomb is too_large)
        raise SystemExit(f"fanout fetch failed ({process.returncode}): {errors}")
    return int(usage.ru_maxrss) * 1024  # KiB on Linux


def measure(urls: list[str], args: argparse.Namespace, journal: Path) -> int:
    return peak_rss(urls, args.max_bytes, args.body, journal if args.journal else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bombs", type=int, default=6)
    parser.add_argument("--max-bytes", type=parse_size, default=8 * MIB)
    parser.add_argument("--body", choices=["none", "text", "json", "base64"], default="text")
    parser.add_argument("--journal", action="store_true", help="Fetch with --journal too.")
    parser.add_argument(
        "--encoding",
        action="append",
        choices=ENCODINGS,
        help="A Content-Encoding of the bombs (repeatable; all three by default).",
    )
    args = parser.parse_args()
    encodings = args.encoding or list(ENCODINGS)
    cap = args.max_bytes
    journal = " --journal" if args.journal else ""
    print(
        f"# bombs: peak RSS of fanout fetch --body {args.body}{journal}, fresh process per run,"
        f" --max-bytes {cap / MIB:g} MiB, {args.bombs} at once"
    )
    with ServerThread() as server, tempfile.TemporaryDirectory() as tmp:
        runs = range(args.bombs)
        pages = [f"{server.url}/pages/{n}" for n in runs]
        baseline = measure(pages, args, Path(tmp, "pages.db"))
        print(f"{f'baseline, {args.bombs} small pages:':39} {baseline / MB:8.1f} MB")
        for encoding in encodings:
            bomb = f"{server.url}/{encoding}-bomb"
            kept_bombs = [f"{bomb}?size={cap}&n={n}" for n in runs]
            cut_bombs = [f"{bomb}?size={1024**3}&n={n}" for n in runs]
            kept = measure(kept_bombs, args, Path(tmp, f"kept-{encoding}.db"))
            cut = measure(cut_bombs, args, Path(tmp, f"cut-{encoding}.db"))
            for label, peak in (
                (f"of {cap / MIB:g} MiB, kept", kept),
                ("of 1 GiB, cut at the cap", cut),
            ):
                extra = peak - baseline
                what = f"{args.bombs} {encoding} bombs {label}"
                print(
                    f"{what:39} {peak / MB:8.1f} MB:"
                    f" {peak / baseline:.2f}x the baseline, +{extra / MB:.1f} MB ="
                    f" {extra / cap:.1f} x max_bytes ({extra / cap / args.bombs:.2f} per bomb)"
                )


if __name__ == "__main__":
    main()
