"""One worker process of ``fanout fetch --workers N``: ``python -m fanout.jobs.worker``.

The parent (:mod:`fanout.jobs.workers`) starts it with pipes on its standard
input and output and speaks in frames: a 4-byte big-endian length, then a
pickle. Parent to worker: ``("setup", dict)`` first, then ``("req", [request
tuples])`` batches, then ``("end",)`` (no more requests: finish those taken)
or, at any time, ``("stop",)`` (stop now: drop what is in flight, send back
what is done). Worker to parent: ``("res", [result tuples])`` batches, each
result's JSONL record already encoded, and ``("end", dns_stats, host_stats)``
last.

The worker runs one :class:`~fanout.Fetcher`, unchanged, and saves bodies
under ``--out-dir`` itself, atomically, as one process does. It ignores
SIGINT, SIGTERM and SIGHUP: the parent stops it. End of file on its standard
input before the parent said ``end`` or ``stop`` means the parent is gone:
the worker exits at once, so no worker outlives its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import stat
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Final

from fanout.config import FetcherConfig
from fanout.engine import Fetcher
from fanout.errors import FanoutError
from fanout.models import Request, Result
from fanout.output.body_saver import _Saver
from fanout.output.records import BodyMode, json_line, result_record

__all__ = [
    "RequestTuple",
    "ResultTuple",
    "decode_request",
    "encode_request",
    "frame",
    "read_frame",
]

_HEADER: Final = struct.Struct(">I")

# A request as it crosses the pipe: index, url, method, headers (None: none),
# body, key, meta, idempotent, send_credentials.
RequestTuple = tuple[
    int, str, str, dict[str, str] | None, bytes | None, str | None, Any, bool | None, bool
]
# A result: index, its JSONL line, then what the run's counters need: ok,
# status, error kind, attempts, size, elapsed.
ResultTuple = tuple[int, bytes, bool, int | None, str | None, int, int, float]

# Results go back in batches of at most this many, or this many bytes.
_BATCH, _BATCH_BYTES = 512, 1 << 20
# Past this many bytes waiting in the pipe, the worker waits for the parent.
_HIGH_WATER: Final = 4 << 20


def frame(message: object) -> bytes:
    """``message`` as one frame: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's message; asyncio.IncompleteReadError at end of file."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))  # our own parent's or child's


def encode_request(index: int, request: Request) -> RequestTuple:
    """``request`` as it crosses the pipe, numbered ``index``."""
    headers = request.headers
    return (
        index,
        request.url,
        request.method,
        dict(headers) if headers else None,
        request.body,
        request.key,
        request.meta,
        request.idempotent,
        request.send_credentials,
    )


def decode_request(item: RequestTuple) -> Request:
    """The :class:`Request` of a tuple from :func:`encode_request`."""
    _, url, method, headers, body, key, meta, idempotent, credentials = item
    if headers is None:
        return Request(url, method, body=body, key=key, meta=meta, idempotent=idempotent,
                       send_credentials=credentials)  # fmt: skip
    return Request(url, method, headers, body, key, meta, idempotent, credentials)


class _Outbox:
    """Result tuples on their way to the parent, sent in batches: when a batch
    is full, else once the event loop has run what is ready."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.batch: list[ResultTuple] = []
        self.size = 0
        self.scheduled = False

    def add(self, item: ResultTuple) -> None:
        self.batch.append(item)
        self.size += len(item[1])
        if len(self.batch) >= _BATCH or self.size >= _BATCH_BYTES:
            self.send()
        elif not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.send)

    def send(self) -> None:
        self.scheduled = False
        if self.batch:
            self.write(("res", self.batch))
            self.batch, self.size = [], 0

    def write(self, message: object) -> None:
        try:
            if self.writer.transport.is_closing():
                raise ConnectionResetError
            self.writer.write(frame(message))
        except (ConnectionError, RuntimeError):  # uvloop: RuntimeError on a closed pipe
            os._exit(3)  # the parent is gone: nobody to send results to

    @property
    def full(self) -> bool:
        """Whether the parent is behind: await :meth:`drain`."""
        transport = self.writer.transport
        return transport.get_write_buffer_size() > _HIGH_WATER

    async def drain(self) -> None:
        await self.writer.drain()


class _Worker:
    """The state of the worker process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.out = _Outbox(writer)
        self.inbox: asyncio.Queue[list[RequestTuple] | None] = asyncio.Queue()
        self.index_of: dict[int, int] = {}  # id(request) -> its index in the parent
        self.finished = False  # the last frame is sent: end of file is expected now
        self.body: BodyMode = "none"

    async def requests(self) -> AsyncIterator[Request]:
        index_of = self.index_of
        while (batch := await self.inbox.get()) is not None:
            for item in batch:
                request = decode_request(item)
                index_of[id(request)] = item[0]
                yield request

    def record(self, result: Result, path: str | None = None) -> None:
        line = json_line(result_record(result, path=path, body_mode=self.body))
        error = result.error
        self.out.add(
            (
                self.index_of.pop(id(result.request)),
                line,
                result.ok,
                result.status,
                None if error is None else str(error.kind),
                result.attempts,
                result.size,
                result.elapsed,
            )
        )

    async def listen(self, pump: asyncio.Task[None]) -> None:
        """Read the parent's frames into the inbox; cancel ``pump`` on ``stop``."""
        while True:
            try:
                message = await read_frame(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                if self.finished:
                    return
                os._exit(3)  # the parent is gone: nobody to send results to
            if message[0] == "req":
                self.inbox.put_nowait(message[1])
            elif message[0] == "end":
                self.inbox.put_nowait(None)
            elif message[0] == "stop":
                pump.cancel()
                return

    async def pump(self, fetcher: Fetcher, saver: _Saver | None) -> None:
        out = self.out
        stream = fetcher.stream(self.requests())
        try:
            async with contextlib.aclosing(stream):
                async for result in stream:
                    if saver is not None:
                        saver.add(result)
                        if saver.full:
                            await saver.room()
                    else:
                        self.record(result)
                    if out.full:
                        await out.drain()
        finally:
            if saver is not None:
                await saver.drain()

    async def run(self) -> None:
        kind, setup = await read_frame(self.reader)
        assert kind == "setup"
        config = FetcherConfig(**setup["config"])
        self.body = setup["body"]
        out_dir: Path | None = setup["out_dir"]
        saver = None if out_dir is None else _Saver(out_dir, setup["staging"], self.record)
        listener: asyncio.Task[None] | None = None
        try:
            async with Fetcher(config, keep_body=setup["keep_body"]) as fetcher:
                pump = asyncio.create_task(self.pump(fetcher, saver))
                listener = asyncio.create_task(self.listen(pump))
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                dns, hosts = fetcher.dns_stats, fetcher.host_stats()
        finally:
            if saver is not None:
                saver.close()
        self.out.send()
        self.out.write(("end", dns, hosts))
        self.finished = True
        await self.out.drain()
        if listener is not None:
            listener.cancel()


async def _main(frames_in: BinaryIO, frames_out: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), frames_in)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, frames_out
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        await _Worker(reader, writer).run()
    except (ConnectionError, asyncio.IncompleteReadError):
        os._exit(3)  # the parent is gone (before its setup arrived, or while writing)


def main() -> None:
    """Run one worker until the parent says it is done (or is gone)."""
    modes = [os.fstat(fd).st_mode for fd in (0, 1)]
    if not all(stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) for mode in modes):
        # libuv aborts on a file or terminal where it expects a pipe (asyncio's are sockets)
        sys.stderr.write("fanout: a worker is started by 'fanout fetch --workers N', on pipes\n")
        sys.exit(2)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the parent stops the workers
    # The frames get descriptors of their own; 0 and 1 become /dev/null and
    # stderr, so nothing else can read a frame or write into one.
    frames_in, frames_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    from fanout.runtime import run

    with open(frames_in, "rb", buffering=0) as inbound, open(frames_out, "wb", buffering=0) as out:
        try:
            run(_main(inbound, out))
        except FanoutError as exc:  # a config the parent checked, refused here (a file gone)
            sys.stderr.write(f"fanout: worker {os.getpid()}: {exc}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
