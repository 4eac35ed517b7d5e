"""ThreadedReader: a blocking iterator read in a thread, handed to the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import fanout
from fanout.demo import DemoServer
from fanout.errors import SourceError
from fanout.inputs.blocking_input import ThreadedReader, reads_block


async def test_items_arrive_in_order_then_the_end() -> None:
    reader = ThreadedReader(iter(range(500)), ahead=7)
    assert [item async for item in reader] == list(range(500))
    with pytest.raises(StopAsyncIteration):
        await anext(reader)


async def test_an_error_comes_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise SourceError("cannot read input file 'x': Input/output error")

    got: list[int] = []

    async def take_all() -> None:
        async for item in ThreadedReader(items()):
            got.append(item)

    with pytest.raises(SourceError, match="Input/output error"):
        await take_all()
    assert got == [1, 2]


async def test_the_loop_runs_while_a_read_waits() -> None:
    """The second item waits on the producer (the gate); the loop does not: it
    is the loop that opens the gate."""
    gate = threading.Event()

    def items() -> Iterator[str]:
        yield "first"
        if not gate.wait(timeout=30):  # only reached if the loop were blocked
            yield "the loop was blocked"
        yield "second"

    reader = ThreadedReader(items())
    assert await anext(reader) == "first"
    pending = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)
    assert not pending.done()  # the gate is closed: "second" cannot have come
    gate.set()
    assert await pending == "second"


async def test_never_reads_more_than_ahead_of_what_was_taken() -> None:
    read = 0

    def items() -> Iterator[int]:
        nonlocal read
        for i in range(200):
            read += 1
            yield i

    reader = ThreadedReader(items(), ahead=5)
    taken = 0
    async for _ in reader:
        taken += 1
        assert read <= taken + 5
    assert taken == read == 200


async def test_close_stops_the_thread_and_closes_the_iterator() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    reader = ThreadedReader(endless(), ahead=4)
    assert [await anext(reader) for _ in range(3)] == [0, 1, 2]
    await reader.aclose()
    assert closed.wait(timeout=30)
    thread = reader._thread
    assert thread is not None
    await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive()


def test_ahead_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ahead"):
        ThreadedReader(iter(()), ahead=0)


def test_reads_block_on_pipes_and_fifos_not_on_files(tmp_path: Path) -> None:
    regular = tmp_path / "urls.txt"
    regular.write_text("http://127.0.0.1/\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not reads_block(str(regular))
    assert reads_block(str(fifo))
    assert not reads_block(str(tmp_path / "missing.txt"))  # its reader names it


async def test_a_fetcher_streams_from_it_and_closes_it(server: DemoServer) -> None:
    """As a library user would: a blocking iterator wrapped for Fetcher.stream;
    leaving the stream early closes the reader and its iterator."""
    closed = threading.Event()

    def urls() -> Iterator[str]:
        try:
            for i in range(1_000_000):
                yield f"{server.url}/items/{i % 50 + 1}"
        finally:
            closed.set()

    async with fanout.Fetcher(limits=fanout.Limits(concurrency=4)) as fetcher:
        stream = fetcher.stream(ThreadedReader(urls(), ahead=16))
        async with contextlib.aclosing(stream):
            statuses = [result.status async for result in _first(stream, 30)]
    assert statuses == [200] * 30
    assert closed.wait(timeout=30)


async def _first(results: AsyncIterator[fanout.Result], n: int) -> AsyncIterator[fanout.Result]:
    async for result in results:
        yield result
        n -= 1
        if n == 0:
            return
