"""Many hosts on loopback: one aiohttp server listening on many ports of several
127.0.0.x addresses, in a process of its own (its sockets are not the client's).

Each host:port is a distinct host to fanout. Every response's body is the
client's port as the server saw it, so a test can tell a reused connection
(same port) from a new one; the path /big answers 4 MiB.

    with ManyHosts(200) as hosts:   # hosts.urls: 200 base URLs
        ...

    python tests/many_hosts.py --ports 200   # prints the URLs as one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


async def _serve(count: int) -> None:
    from aiohttp import web

    async def peer_port(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if request.path == "/big":  # still arriving when its headers are read
            return web.Response(body=b"x" * (4 << 20))
        return web.Response(text=str(peer[1] if peer else 0))

    app = web.Application()
    app.router.add_get("/{tail:.*}", peer_port)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    urls = []
    for index in range(count):
        address = ADDRESSES[index % len(ADDRESSES)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, 0))
        sock.listen(128)
        await web.SockSite(runner, sock).start()
        urls.append(f"http://{address}:{sock.getsockname()[1]}")
    sys.stdout.write(json.dumps(urls) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


class ManyHosts:
    """The server process and its base URLs (``urls``), one per port."""

    def __init__(self, process: subprocess.Popen[str], urls: list[str]) -> None:
        self.process = process
        self.urls = urls


@contextmanager
def many_hosts(count: int) -> Iterator[ManyHosts]:
    """Run the server with ``count`` ports in a subprocess; stop it at the end."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = 2 * count + 256  # its listening sockets and the connections accepted
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"ulimit -n {hard} is too low for {count} ports")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--ports", str(count)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _raise_soft_limit(needed),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the many-hosts server did not start")
        yield ManyHosts(process, json.loads(line))
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def _raise_soft_limit(needed: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def open_sockets(pid: int | str = "self") -> int:
    """The sockets process ``pid`` has open, from /proc."""
    count = 0
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(entry.path).startswith("socket:"):
                count += 1
        except OSError:  # closed meanwhile
            pass
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", type=int, required=True)
    asyncio.run(_serve(parser.parse_args().ports))
