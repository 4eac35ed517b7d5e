"""Inputs whose reads can block (a pipe, a terminal, a FIFO), read off the event loop.

A regular file is read on the event loop, between results: each read returns
at once. Standard input fed by a program that pauses (``producer | fanout
fetch -i -``) is different: a read waits until the producer writes, and on
the event loop that wait would hold up every request in flight (their
responses unread, their deadlines running). :class:`ThreadedReader` moves
those reads, and the parsing of what they return, to a daemon thread.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

__all__ = ["ThreadedReader", "reads_block"]

T = TypeVar("T")
_END: Final = object()


def reads_block(path: str) -> bool:
    """Whether reading ``path`` (``"-"``: standard input) can wait on another
    program: true for pipes, FIFOs, terminals and other character devices and
    sockets; false for regular files, and for a path that is missing or a
    directory (its reader reports those)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path == "-" else os.stat(path).st_mode
    except (OSError, ValueError, AttributeError):  # missing, or stdin closed or replaced
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


class ThreadedReader(Generic[T]):
    """The items of a blocking iterator as an async iterator.

    A daemon thread runs the iterator, never more than ``ahead`` items ahead
    of those taken, and hands each item to the event loop as it comes, so a slow
    producer delays only what it has not written yet. An exception the
    iterator raises is raised by ``__anext__`` after the items before it.
    :meth:`close` stops the thread at its next item; a thread waiting on a
    read that never returns (a terminal nobody types in) is a daemon and does
    not keep the process alive.
    """

    def __init__(self, items: Iterator[T], *, ahead: int = 1024) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead!r}")
        self._items = items
        self._ahead = ahead
        self._room = threading.Semaphore(ahead)
        self._ready: deque[T] = deque()
        self._end: BaseException | None = None  # StopAsyncIteration, or the iterator's error
        self._waiter: asyncio.Future[None] | None = None
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __aiter__(self) -> ThreadedReader[T]:
        return self

    async def __anext__(self) -> T:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._read, name="fanout-input", daemon=True)
            self._thread.start()
        while not self._ready:
            if self._end is not None:
                raise self._end
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._room.release()
        return self._ready.popleft()

    @property
    def ready(self) -> bool:
        """Whether an item can be taken now, without waiting for the input."""
        return bool(self._ready)

    def close(self) -> None:
        """Stop reading: the thread ends at its next item (or read's return)."""
        self._closed.set()
        self._room.release(self._ahead)  # wakes a thread waiting for room

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing`` and the engine."""
        self.close()

    def _read(self) -> None:  # the thread
        end: BaseException = StopAsyncIteration()
        try:
            while True:
                self._room.acquire()  # read no further ahead than allowed
                if self._closed.is_set():
                    break
                item = next(self._items, _END)
                if item is _END or not self._hand_over(self._arrive, item):
                    break
        except Exception as exc:  # raised on the loop, where the caller is
            end = exc
        finally:
            close = getattr(self._items, "close", None)
            if callable(close):
                close()  # a generator's finally (its open file) runs in this thread
        self._hand_over(self._finish, end)

    def _hand_over(self, callback: Callable[[Any], None], value: object) -> bool:
        """Call ``callback(value)`` on the loop; False once the loop is closed."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, value)
        except RuntimeError:  # the loop closed while this thread was reading
            return False
        return True

    def _arrive(self, item: T) -> None:  # on the loop
        self._ready.append(item)
        self._wake()

    def _finish(self, end: BaseException) -> None:  # on the loop
        self._end = end
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
