"""Open sockets over many hosts: `fanout fetch` over 3,000 distinct hosts under
`ulimit -n 1024`, against another revision's in the same run.

A server process (fastserver.py's protocol, pinned to CPU 1) listens on
--hosts ports spread over eight 127.0.0.x addresses: each host:port is a
distinct host to fanout. `fanout fetch -c 64` (pinned to CPU 0) fetches one
URL of each, in a fresh process whose soft RLIMIT_NOFILE is set to 1024
(resource.setrlimit in the child), while this script counts the sockets it
has open (/proc/PID/fd, sampled every few milliseconds). The promise (issue
18): every request ok, and at most 2 x concurrency sockets open at once,
whatever the number of hosts. With --against REV the fanout of that git
revision runs the same fetch, for the figure before the change.

    python benchmarks/sockets.py [--hosts 3000] [-c 64] [--nofile 1024] [--against REV]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import pin_to  # type: ignore[import-not-found]
from writes import fanout_command, revision_source  # type: ignore[import-not-found]

ADDRESSES = tuple(f"127.0.0.{last}" for last in range(1, 9))


def serve(count: int, cpu: int) -> None:
    """The server process: ``count`` listening ports, their URLs printed as one JSON line."""
    from fastserver import _Http  # type: ignore[import-not-found]

    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # listeners + connections

    async def main() -> None:
        loop = asyncio.get_running_loop()
        urls = []
        for index in range(count):
            address = ADDRESSES[index % len(ADDRESSES)]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((address, 0))
            sock.listen(64)
            await loop.create_server(_Http, sock=sock)
            urls.append(f"http://{address}:{sock.getsockname()[1]}")
        sys.stdout.write(json.dumps(urls) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until terminated

    asyncio.run(main())


def open_sockets(pid: int) -> int:
    """The sockets process ``pid`` has open (0 once it is gone)."""
    count = 0
    try:
        entries = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
    for entry in entries:
        try:
            if os.readlink(entry.path).startswith("socket:"):
                count += 1
        except OSError:  # closed meanwhile
            pass
    return count


@dataclasses.dataclass
class Figures:
    ok: int
    records: int
    errors: collections.Counter[str]
    peak: int
    wall: float
    stderr: str


def run(command: list[str], workdir: Path, concurrency: int, nofile: int) -> Figures:
    """One fetch in a fresh process under ``ulimit -n nofile``: its figures."""

    def limited() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    out = workdir / "out.jsonl"
    args = [*command, "fetch", "-i", "urls.txt", "-o", str(out), "-c", str(concurrency), "-q"]
    args += ["--per-host", "8", "--retries", "0"]
    start = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=workdir, stderr=subprocess.PIPE, text=True, preexec_fn=limited
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, open_sockets(process.pid))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _, stderr = process.communicate(timeout=600)
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - start
    if process.returncode not in (0, 1):  # 1: some requests failed
        sys.exit(f"fanout failed ({process.returncode}): {stderr[-500:]}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    errors = collections.Counter(r["error"]["kind"] for r in records if not r["ok"])
    ok = sum(1 for r in records if r["ok"])
    return Figures(ok, len(records), errors, peak, wall, stderr.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--nofile", type=int, default=1024, help="the client's ulimit -n")
    parser.add_argument("--against", metavar="REV", help="git revision to compare with")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, 1)
        return
    pinning = pin_to(0)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.hosts)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            sys.exit("the server did not start")
        urls = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "urls.txt").write_text("".join(f"{url}/s\n" for url in urls))
            versions = {"current": fanout_command(None)}
            if args.against:
                source = revision_source(args.against, workdir / "rev")
                versions[args.against] = fanout_command(source)
            figures = {
                name: run(command, workdir, args.concurrency, args.nofile)
                for name, command in versions.items()
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    bound = 2 * args.concurrency
    print(
        f"# sockets: {args.hosts} hosts (distinct host:port), one request each,"
        f" -c {args.concurrency}, client under ulimit -n {args.nofile}; {pinning}"
    )
    for name, found in figures.items():
        errors = ", ".join(f"{kind} x{n}" for kind, n in sorted(found.errors.items()))
        print(
            f"{name:<10} {found.ok}/{found.records} ok"
            f"{' (' + errors + ')' if errors else ''}, peak sockets {found.peak}"
            f" (bound 2 x c = {bound}), {found.wall:.2f} s"
        )
        if found.stderr:
            print(f"{'':<10} stderr: {found.stderr.splitlines()[0]}")
    current = figures["current"]
    verdict = current.ok == args.hosts and current.peak <= bound
    print(f"current: every request ok and peak <= 2 x c: {'yes' if verdict else 'NO'}")


if __name__ == "__main__":
    main()
