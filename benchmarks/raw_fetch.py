"""The raw aiohttp worker pool as a program, the baseline for ``fanout fetch``:
read URLs from a file, fetch them at concurrency C on the loop the CLI uses
(uvloop when installed), write nothing. Timing it as a fresh process, like the
CLI, counts the same interpreter start-up and aiohttp import on both sides.

    python benchmarks/raw_fetch.py URLS_FILE [-c 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from throughput import raw_aiohttp_on  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", type=Path)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    args = parser.parse_args()
    urls = args.urls.read_text().split()
    try:
        import uvloop
    except ImportError:
        done = asyncio.run(raw_aiohttp_on(urls, args.concurrency))
    else:
        done = uvloop.run(raw_aiohttp_on(urls, args.concurrency))
    if done != len(urls):
        sys.exit(f"only {done} of {len(urls)} succeeded")


if __name__ == "__main__":
    main()
