"""Instructions per request: fanout's ``stream`` against raw aiohttp, counted by callgrind.

The wall-clock ratios of throughput.py move by several per cent from one run
to the next on a shared machine; the user-space instructions a request costs
do not (callgrind counts the same total for the same work, whatever else the
machine does), so this figure can check a change to the hot path that is
too small for the clock. Each contender runs under ``valgrind
--tool=callgrind`` at two sizes against the fast server, and the figure is
(I(N2) - I(N1)) / (N2 - N1), in which start-up and imports cancel. The
kernel's work (the sockets' system calls), the same for both, is not
counted, so the wall-clock ratio lies nearer 1 than this one.

    python benchmarks/instructions.py [--sizes 1000 3000] [--loops asyncio uvloop run]
        [--contenders raw_aiohttp fanout_stream fanout_curl_stream]

``fanout_curl_stream`` is ``stream`` on the curl transport (pycurl installed).

``run`` is :func:`fanout.runtime.run` (uvloop, the collector's threshold
raised for the run), where raw aiohttp runs the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import fast_server  # type: ignore[import-not-found]

CONTENDERS = ("raw_aiohttp", "fanout_stream", "fanout_curl_stream")


def child(contender: str, loop_name: str, n: int, base: str) -> None:
    """Run one contender once, in this process (the one valgrind watches)."""
    import fanout.runtime
    import throughput  # type: ignore[import-not-found]
    from fanout.runtime import loop_factory

    job = getattr(throughput, contender)
    if loop_name == "run":  # fanout's own run: uvloop, the collector's threshold raised
        done = fanout.runtime.run(job(base, n, 64))
    else:
        factory = loop_factory() if loop_name == "uvloop" else None
        with asyncio.Runner(loop_factory=factory) as runner:
            done = runner.run(job(base, n, 64))
    if done != n:
        raise SystemExit(f"{contender}: only {done} of {n} succeeded")


def instructions(contender: str, loop_name: str, n: int, base: str) -> int:
    """Instructions callgrind counted for a whole process running ``contender`` once."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--child", contender, loop_name, str(n), base]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{contender} on {loop_name} under callgrind failed:\n{done.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 3000], metavar="N")
    parser.add_argument("--loops", nargs="+", default=["asyncio", "uvloop"])
    parser.add_argument(
        "--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS[:2]), metavar="NAME"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, loop_name, n, base = args.child
        child(contender, loop_name, int(n), base)
        return
    if shutil.which("valgrind") is None:
        print("skipped: counting instructions needs valgrind (Debian package valgrind)")
        return
    small, large = sorted(args.sizes)
    print(f"# instructions per request: callgrind, N = {small} and {large}, concurrency 64")
    per_request: dict[tuple[str, str], float] = {}
    with fast_server(cpu=1) as base, concurrent.futures.ThreadPoolExecutor(2) as pool:
        for loop_name in args.loops:
            for contender in args.contenders:
                # The two sizes run at once, one per core: callgrind counts, not times.
                count = functools.partial(instructions, contender, loop_name, base=base)
                low, high = pool.map(count, (small, large))
                per_request[contender, loop_name] = (high - low) / (large - small)
                print(
                    f"{contender} on {loop_name}: {per_request[contender, loop_name]:,.0f}"
                    " instructions per request"
                )
    for loop_name in args.loops:
        if ("raw_aiohttp", loop_name) not in per_request:
            continue
        raw = per_request["raw_aiohttp", loop_name]
        for contender in (name for name in args.contenders if name != "raw_aiohttp"):
            fan = per_request[contender, loop_name]
            print(f"ratio raw/{contender} instructions per request on {loop_name}: {raw / fan:.3f}")


if __name__ == "__main__":
    main()
