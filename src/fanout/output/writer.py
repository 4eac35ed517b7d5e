"""Writing off the event loop: one thread per output, in groups, with a bounded backlog.

A run's records (and, with a journal, its commits) are written by a
:class:`WriterThread`, so a slow disk or a slow reader of standard output
never blocks the event loop, and so never delays the socket reads of the
requests in flight. The loop hands entries over without waiting
(:meth:`WriterThread.put`) and waits only when the backlog is full
(:meth:`WriterThread.room`): that holds back new requests, never the ones
in flight, and keeps memory bounded when the reader is slow.

The thread writes entries in groups: a group is what waits when the thread
comes for it (what arrived while it wrote the previous group), at most
``group`` entries or about ``group_bytes`` bytes. So an entry is written as
soon as the thread is free, and groups grow with the throughput.

The first failure stops the writer: nothing queued after it is written, and
it is raised on the loop by the next :meth:`~WriterThread.room`,
:meth:`~WriterThread.call`, :meth:`~WriterThread.drain` or
:meth:`~WriterThread.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["WriterThread"]

E = TypeVar("E")
T = TypeVar("T")


class _Call:
    """A function to run on the writer's thread, after every entry put before it."""

    __slots__ = ("args", "function", "future", "loop")

    def __init__(
        self,
        function: Callable[..., Any] | None,  # None: stop the thread
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.function = function
        self.args = args
        self.loop = loop
        self.future = future


def _settle(future: asyncio.Future[Any], value: object, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class WriterThread(Generic[E]):
    """Runs ``write(group)`` on a thread of its own for every group of entries
    :meth:`put` on the event loop, in order.

    Entries put in one iteration of the loop (the results that came together)
    are handed to the thread at once, at the end of the iteration, or
    ``hand_over_after`` seconds after the first of them (or once they make a
    group): so the thread wakes once per burst, not per entry, and a delay
    makes fewer, larger writes where promptness matters less.

    ``backlog`` and ``backlog_bytes`` bound what is put and not yet written
    (the group being written included): :attr:`full` says when they are
    reached, and :meth:`room` waits until they are not. One entry larger than
    ``backlog_bytes`` is let through alone.
    """

    def __init__(
        self,
        write: Callable[[list[E]], None],
        *,
        name: str,
        group: int,
        backlog: int,
        group_bytes: int = 1 << 20,
        backlog_bytes: int = 4 << 20,
        hand_over_after: float = 0.0,
    ) -> None:
        self._write = write
        self._delay = hand_over_after
        self._group = group
        self._group_bytes = group_bytes
        self._backlog = backlog
        self._backlog_bytes = backlog_bytes
        self._queue: queue.SimpleQueue[list[tuple[E, int]] | _Call] = queue.SimpleQueue()
        self._pending: list[tuple[E, int]] = []  # put in this iteration of the loop
        self._handing_over = False
        # Each counter has one writer: the loop counts what it put, the thread what it wrote.
        self._submitted = self._submitted_bytes = 0
        self._completed = self._completed_bytes = 0
        self._error: BaseException | None = None
        self._raised = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []  # tasks in room(): the consumer, a feeder
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- the loop's side

    def put(self, entry: E, size: int) -> None:
        """Queue one entry of ``size`` bytes; never blocks, never raises."""
        self._submitted += 1
        self._submitted_bytes += size
        pending = self._pending
        pending.append((entry, size))
        if len(pending) >= self._group:
            self._hand_over()
        elif not self._handing_over:
            try:
                loop = self._loop or asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test): the thread takes it now
                self._hand_over()
                return
            self._loop = loop
            self._handing_over = True
            if self._delay:
                loop.call_later(self._delay, self._hand_over)
            else:
                loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._handing_over = False
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []

    @property
    def full(self) -> bool:
        """Whether the caller should await :meth:`room`: the backlog is at its
        bound, or a write failed (then :meth:`room` raises)."""
        if self._error is not None:
            return True
        waiting = self._submitted - self._completed
        if waiting >= self._backlog:
            return True
        return waiting > 0 and self._submitted_bytes - self._completed_bytes >= self._backlog_bytes

    @property
    def failed(self) -> bool:
        """Whether a write failed (nothing more is written)."""
        return self._error is not None

    async def room(self) -> None:
        """Wait until the backlog is below its bound; raise the writer's failure."""
        while self.full and self._error is None:
            self._hand_over()
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._loop = loop
            self._waiters.append(waiter)
            try:
                if self.full and self._error is None:  # checked again once the thread can see it
                    await waiter
            finally:
                self._waiters.remove(waiter)
        self._check()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the writer's thread once every entry put
        before is written; return its value (raise what it raises). Raises the
        writer's failure instead when a write failed."""
        self._check()
        return await self._call(function, args)

    async def _call(self, function: Callable[..., T] | None, args: tuple[Any, ...]) -> T:
        self._hand_over()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(function, args, loop, future))
        return await future

    async def drain(self) -> None:
        """Wait until every entry put is written; raise the writer's failure."""
        await self.call(_nothing)

    async def close(self) -> None:
        """Write what is queued, then stop the thread. The writer's failure is
        raised, unless it was raised before."""
        if self._closed:
            return
        self._closed = True
        await self._call(None, ())
        self._thread.join()
        if self._error is not None and not self._raised:
            self._check()

    def _check(self) -> None:
        error = self._error
        if error is not None:
            self._raised = True
            raise error

    # ------------------------------------------------------------- the thread's side

    def _main(self) -> None:
        entries: deque[tuple[E, int]] = deque()
        while True:
            call = self._collect(entries)
            while entries:
                self._write_group(entries)
                if call is None:
                    break  # take what came meanwhile into the next group
            if call is not None and self._run(call):
                return

    def _collect(self, entries: deque[tuple[E, int]]) -> _Call | None:
        """Move what waits in the queue to ``entries``, up to a group's worth,
        waiting for it when there is nothing; return a call met (to be run
        once ``entries`` are written)."""
        while True:
            try:
                item = self._queue.get_nowait() if entries else self._queue.get()
            except queue.Empty:
                return None
            if isinstance(item, _Call):
                return item
            entries.extend(item)
            del item  # no entry outlives its group: memory stays bounded
            if len(entries) >= self._group:
                return None

    def _write_group(self, entries: deque[tuple[E, int]]) -> None:
        group: list[E] = []
        size = 0
        while entries and len(group) < self._group and size < self._group_bytes:
            entry, entry_size = entries.popleft()
            group.append(entry)
            size += entry_size
        if self._error is None:
            try:
                self._write(group)
            except BaseException as exc:  # raised on the loop, where the run can stop
                self._error = exc
        self._completed_bytes += size
        self._completed += len(group)
        del group
        loop = self._loop
        if self._waiters and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _run(self, call: _Call) -> bool:
        """Run one call and hand its outcome to its loop; True to stop the thread."""
        value: object = None
        error: BaseException | None = None
        if call.function is not None:
            if self._error is not None:
                error = self._error
            else:
                try:
                    value = call.function(*call.args)
                except BaseException as exc:  # raised in the caller's task
                    error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            call.loop.call_soon_threadsafe(_settle, call.future, value, error)
        return call.function is None


def _nothing() -> None:
    return None
