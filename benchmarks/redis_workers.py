"""Redis mode: 1, 2 and 3 `fanout worker` processes on one queue, and a kill -9.

A latency-bound workload: a server on 127.0.0.1 (in this process, a thread
of its own) answers every request after --latency, counting the requests of
each URL. For each number of workers: submit -n URLs to a fresh queue, start
the workers (`-c C --per-host 1000 --exit-when-done`), time them to the end,
and count the Redis calls they report (take, acquire, commit, heartbeat...)
per request. Then the kill: two workers, one killed with SIGKILL once a third
of the queue is done; the other finishes (--reclaim-after 2s). Reported: the
requests sent more than once, and the time to completion.

Needs redis-server on the PATH (apt-get install redis-server).

    python benchmarks/redis_workers.py [-n 3000] [-c 32] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

FANOUT = [sys.executable, "-m", "fanout"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """An aiohttp server in a thread: every answer after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.counts: collections.Counter[str] = collections.Counter()
        self.port = _free_port()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(30)

    def _run(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.counts[request.path_qs] += 1
            await asyncio.sleep(self.latency)
            return web.Response(text="x" * 100)

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start()
            self.ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0"


def submit(url: str, queue: str, base: str, count: int, tag: str) -> None:
    urls = "".join(f"{base}/{tag}/{n}\n" for n in range(count)).encode()
    subprocess.run(
        [*FANOUT, "submit", "--redis", url, "--queue", queue, "-q", "-i", "-"],
        input=urls,
        check=True,
    )


def worker(url: str, queue: str, concurrency: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [*FANOUT, "worker", "--redis", url, "--queue", queue, "-c", str(concurrency)]
    command += ["--per-host", "1000", "--exit-when-done", *extra]
    return subprocess.Popen(command, stderr=subprocess.PIPE)


def calls_of(stderr: bytes) -> int:
    match = re.search(rb"([\d,]+) Redis calls", stderr)
    return int(match.group(1).replace(b",", b"")) if match else 0


def done_count(url: str, queue: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return int(client.hlen(f"fanout:{{{queue}}}:results"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-c", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    server = Server(args.latency)
    base = f"http://127.0.0.1:{server.port}"
    with tempfile.TemporaryDirectory() as directory:
        redis_process, url = start_redis(Path(directory))
        try:
            bound = args.c / args.latency
            print(
                f"{args.n} URLs, -c {args.c} per worker, {args.latency * 1000:.0f} ms latency"
                f" (one worker's bound: {bound:.0f}/s); {os.cpu_count()} CPUs"
            )
            for workers in (1, 2, 3):
                queue = f"bench{workers}"
                submit(url, queue, base, args.n, queue)
                start = time.perf_counter()
                running = [worker(url, queue, args.c) for _ in range(workers)]
                errors = [process.communicate()[1] for process in running]
                took = time.perf_counter() - start
                calls = sum(calls_of(stderr) for stderr in errors)
                sent = sum(n for path, n in server.counts.items() if path.startswith(f"/{queue}/"))
                print(
                    f"  {workers} worker(s): {args.n / took:7.0f} requests/s ({took:.2f} s),"
                    f" {calls / args.n:.2f} Redis calls per request, {sent - args.n} sent twice"
                )
            queue = "kill"
            submit(url, queue, base, args.n, queue)
            start = time.perf_counter()
            doomed = worker(url, queue, args.c, "--reclaim-after", "2s")
            other = worker(url, queue, args.c, "--reclaim-after", "2s")
            while done_count(url, queue) < args.n // 3:
                time.sleep(0.01)
            doomed.kill()
            doomed.wait()
            other.communicate()
            took = time.perf_counter() - start
            twice = sum(n - 1 for path, n in server.counts.items() if path.startswith("/kill/"))
            print(
                f"  kill -9 of 1 of 2 workers at a third done (--reclaim-after 2s):"
                f" {twice} requests sent twice (-c {args.c}), done in {took:.2f} s,"
                f" {done_count(url, queue)} results"
            )
        finally:
            redis_process.kill()
            redis_process.wait()


if __name__ == "__main__":
    main()
