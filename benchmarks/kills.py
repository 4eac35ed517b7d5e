"""Refetches per kill -9: the requests a resumed journaled run sends again.

Each trial runs `fanout fetch --journal` over N URLs of a fast server that
counts the requests of every URL, kills it (SIGKILL) once its output holds a
random number of records, resumes it to the end, and counts the URLs the
server saw more than once: the refetches of that kill. The bound (issue 17)
is 2 x concurrency + 64 per kill, at any throughput. With --against REV, the
fanout of that git revision runs the same trials in the same run.

    python benchmarks/kills.py [-n 20000] [--kills 5] [-c 8 64] [--against REV]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

from common import HERE, pin_to  # type: ignore[import-not-found]
from fastserver import RESPONSE  # type: ignore[import-not-found]
from writes import fanout_command, revision_source  # type: ignore[import-not-found]


class _Counting(asyncio.Protocol):
    """fastserver's answer to every request, each request's target counted;
    GET /counts answers the targets asked for more than once, as JSON."""

    counts: ClassVar[collections.Counter[str]] = collections.Counter()  # one server, one count

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *heads, self.buffer = self.buffer.split(b"\r\n\r\n")
        assert self.transport is not None
        for head in heads:
            target = head.split(b" ", 2)[1].decode()
            if target == "/counts":
                twice = {t: n for t, n in self.counts.items() if n > 1}
                body = json.dumps(twice).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            else:
                self.counts[target] += 1
                self.transport.write(RESPONSE)


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Counting, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _twice(base: str, prefix: str) -> int:
    with urllib.request.urlopen(f"{base}/counts") as answer:
        counts: dict[str, int] = json.load(answer)
    return sum(n - 1 for target, n in counts.items() if target.startswith(prefix))


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def trial(command: list[str], workdir: Path, base: str, prefix: str, n: int, c: int) -> int:
    """One kill and its resume; the refetches it cost."""
    (workdir / "urls.txt").write_text("".join(f"{base}{prefix}{i}\n" for i in range(n)))
    for leftover in ("out.jsonl", "run.db", "run.db-wal", "run.db-shm"):
        (workdir / leftover).unlink(missing_ok=True)
    args = [*command, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    args += ["-c", str(c), "--per-host", str(c), "-q"]
    threshold = random.randrange(n // 10, n * 9 // 10)
    process = subprocess.Popen(args, cwd=workdir)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if _lines(workdir / "out.jsonl") >= threshold:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    process.wait()
    subprocess.run(args, cwd=workdir, check=False)
    return _twice(base, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("-c", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--against", metavar="REV", help="also measure this git revision")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    pinning = pin_to(0)
    server_cmd = [sys.executable, str(HERE / "kills.py"), "--serve"]
    if (os.cpu_count() or 1) > 1:
        server_cmd = ["taskset", "-c", "1", *server_cmd]
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{int(server.stdout.readline())}"
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            versions = {"current": fanout_command(None)}
            if args.against:
                source = revision_source(args.against, workdir / "rev")
                versions[args.against] = fanout_command(source)
            print(f"# refetches per kill -9: n={args.n}, {args.kills} kills each; {pinning}")
            for c in args.c:
                for version, command in versions.items():
                    costs = [
                        trial(command, workdir, base, f"/{version}/{c}/{k}/", args.n, c)
                        for k in range(args.kills)
                    ]
                    print(
                        f"-c {c:<3} {version:<10} refetches per kill: mean"
                        f" {sum(costs) / len(costs):6.1f}, max {max(costs):4d}"
                        f" (bound 2c+64 = {2 * c + 64}); each: {costs}"
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
