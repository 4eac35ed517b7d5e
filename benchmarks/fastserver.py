"""A minimal keep-alive HTTP/1.1 server for benchmarks: it must never be the bottleneck.

It answers every request with the same small response, parses nothing but
the end of the headers, and runs on uvloop when installed. ``--latency``
delays each answer (a timer, no thread); ``--status 429 --retry-after 1``
makes a throttled host. Run it pinned to one core, the client on the other:

    python benchmarks/fastserver.py --port 0 --cpu 1   # prints its port

``--ports N`` listens on N ports (spread over the comma-separated ``--host``
addresses) and prints one line of ``host:port`` pairs: many hosts for
benchmarks/manyhosts.py. ``--close`` answers with ``Connection: close``, so a
client needs no idle socket per host; the client closes the connection
first, so the TIME_WAIT entries are the client's, which Linux reuses on
loopback (net.ipv4.tcp_tw_reuse=2): when the server closed first, its
TIME_WAIT entries piled up under its listening port and a new connection to
that port could hit one (1 port measured 40 % slower than 64). Either
raises the soft limit of open files to the hard one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

BODY = b"x" * 128


def response(status: int, retry_after: int | None, close: bool = False) -> bytes:
    reason = {200: b"OK", 429: b"Too Many Requests", 503: b"Service Unavailable"}[status]
    extra = b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after
    if close:
        extra += b"Connection: close\r\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n%sContent-Length: %d\r\n\r\n"
        % (status, reason, extra, len(BODY))
        + BODY
    )


RESPONSE = response(200, None)
LATENCY = 0.0


class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            assert self.transport is not None
            if LATENCY:
                asyncio.get_running_loop().call_later(LATENCY, self._write, RESPONSE * count)
            else:
                self.transport.write(RESPONSE * count)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, host, port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def _serve_many(hosts: list[str], ports: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for i in range(ports):
        servers.append(await loop.create_server(_Http, hosts[i % len(hosts)], 0, backlog=256))
    pairs = (s.sockets[0].getsockname()[:2] for s in servers)
    print(" ".join(f"{host}:{port}" for host, port in pairs), flush=True)
    await asyncio.Event().wait()


def _raise_open_files() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--status", type=int, default=200, choices=[200, 429, 503])
    parser.add_argument("--retry-after", type=int, default=None)
    parser.add_argument("--ports", type=int, default=None, help="listen on this many ports")
    parser.add_argument("--close", action="store_true", help="one request per connection")
    args = parser.parse_args()
    global RESPONSE, LATENCY
    RESPONSE = response(args.status, args.retry_after, args.close)
    LATENCY = args.latency
    if args.ports is not None or args.close:
        _raise_open_files()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        if args.ports is not None:
            runner(_serve_many(args.host.split(","), args.ports))
        else:
            runner(_serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
