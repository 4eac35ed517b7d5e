"""A minimal keep-alive HTTP/1.1 server for benchmarks: it must never be the bottleneck.

It answers every request with the same small response, parses nothing but
the end of the headers, and runs on uvloop when installed. ``--latency``
delays each answer (a timer, no thread); ``--status 429 --retry-after 1``
makes a throttled host. Run it pinned to one core, the client on the other:

    python benchmarks/fastserver.py --port 0 --cpu 1   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

BODY = b"x" * 128


def response(status: int, retry_after: int | None) -> bytes:
    reason = {200: b"OK", 429: b"Too Many Requests", 503: b"Service Unavailable"}[status]
    extra = b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--status", type=int, default=200, choices=[200, 429, 503])
    parser.add_argument("--retry-after", type=int, default=None)
    args = parser.parse_args()
    global RESPONSE, LATENCY
    RESPONSE = response(args.status, args.retry_after)
    LATENCY = args.latency
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(_serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
