"""Many hosts: peak RSS of `fanout fetch` with a per-host rate, 100,000 URLs
over 20,000 and over 100,000 distinct hosts, and 1,000,000 URLs over 100,000.

Each URL is http://127.x.y.z:PORT/ on an address of its own where nothing
listens: the connection is refused at once, so a run is quick and what grows
with the hosts is fanout's per-host state. Every run is `fanout fetch -c 64
--per-host-rate 1 --retries 0` (and `--host-errors 0`, where the revision
has it) in a fresh process, pinned to CPU 0, output to /dev/null; its peak
RSS is the kernel's (wait4). The URLs take the hosts in turn (URL i on host
i mod H), so each host's next URL comes long after its rate allows. The
first two runs fetch as many URLs, so that what grows between them is what
fanout keeps per host, not per URL (the de-duplication of a run's URLs
costs about 120 bytes per URL).
With ``--against REV`` the same runs are made with the fanout of git
revision REV (installed as benchmarks/writes.py does) for the figures before.

    python benchmarks/hosts.py [--hosts 20000 100000] [-n 100000] [--big 1000000] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import pin_to  # type: ignore[import-not-found]
from writes import fanout_command, revision_source  # type: ignore[import-not-found]


def refused_port() -> int:
    """A port that nothing listens on (checked on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def address(i: int) -> str:
    """The i-th loopback address from 127.0.0.1: 127.x.y.z, distinct up to 16 million."""
    n = i + 1
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def write_urls(path: Path, hosts: int, urls: int, port: int) -> None:
    with path.open("w") as out:
        for i in range(urls):
            out.write(f"http://{address(i % hosts)}:{port}/{i}\n")


def has_host_errors(command: list[str]) -> bool:
    done = subprocess.run([*command, "fetch", "--help"], capture_output=True, text=True)
    return "--host-errors" in done.stdout


def peak_rss(command: list[str], urls: Path, extra: list[str]) -> tuple[float, float, int]:
    """One run in a fresh process: (peak RSS in MB, wall seconds, records written)."""
    args = [*command, "fetch", "-i", str(urls), "-o", "-", "-q", "-c", "64"]
    args += ["--per-host-rate", "1", "--retries", "0", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None
    assert stderr is not None
    records = 0
    while chunk := stdout.read(1 << 16):  # the records, counted and dropped
        records += chunk.count(b"\n")
    error = stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if code not in (0, 1):  # 1: the requests failed, as they must
        sys.exit(f"fanout failed ({code}): {error.decode(errors='replace')[-500:]}")
    return usage.ru_maxrss / 1000, wall, records  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, nargs=2, default=[20_000, 100_000])
    parser.add_argument("-n", type=int, default=100_000, help="URLs over each host count")
    parser.add_argument(
        "--big", type=int, default=1_000_000, help="URLs over the larger host count (0: none)"
    )
    parser.add_argument("--against", metavar="REV", help="git revision for the figures before")
    parser.add_argument(
        "--no-dedupe", action="store_true", help="pass --no-dedupe: no per-URL memory"
    )
    args = parser.parse_args()
    pinning = pin_to(0)
    few, many = args.hosts
    port = refused_port()
    runs = [(few, args.n), (many, args.n)] + ([(many, args.big)] if args.big else [])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        versions = {"current": fanout_command(None)}
        if args.against:
            versions[args.against] = fanout_command(revision_source(args.against, workdir / "rev"))
        print(f"# hosts: peak RSS of fanout fetch, fresh process per run; {pinning}")
        peaks: dict[tuple[str, int, int], float] = {}
        for hosts, n in runs:
            urls = workdir / f"urls-{hosts}-{n}.txt"
            write_urls(urls, hosts, n, port)
            for version, command in versions.items():
                extra = ["--host-errors", "0"] if has_host_errors(command) else []
                if args.no_dedupe:
                    extra.append("--no-dedupe")
                peak, wall, records = peak_rss(command, urls, extra)
                if records != n:
                    sys.exit(f"{version}: {records} records for {n} URLs")
                peaks[(version, hosts, n)] = peak
                print(
                    f"{version:>10} {hosts:>7,} hosts, {n:>9,} URLs: peak RSS {peak:6.0f} MB"
                    f" ({wall:5.1f} s, {n / wall:6.0f} URLs/s)",
                    flush=True,
                )
            urls.unlink()
        for version in versions:
            ratio = peaks[(version, many, args.n)] / peaks[(version, few, args.n)]
            line = (
                f"{version:>10} growth {few:,} -> {many:,} hosts: {ratio:.2f}x (goal within 1.25x)"
            )
            if args.big:
                big = peaks[(version, many, args.big)]
                line += f"; {args.big:,} URLs: {big:.0f} MB (goal under 200 MB)"
            print(line)


if __name__ == "__main__":
    main()
