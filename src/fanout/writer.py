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

import array
import asyncio
import contextlib
import io
import os
import queue
import select
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO, Final, Generic, TypeVar

from fanout.errors import WriteError
from fanout.safetext import shown

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover (Windows)
    fcntl = termios = None  # type: ignore[assignment]

__all__ = ["LineOutput", "PipeTail", "WriterThread", "output_name", "write_all"]

E = TypeVar("E")
T = TypeVar("T")

_IOV_MAX: Final = 512  # buffers per writev call (Linux allows 1024)


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


class LineOutput:
    """Whole lines to a binary stream, for a writer thread.

    A stream with a file descriptor (a file, standard output, a pipe) is
    written with ``os.writev``, not through Python's buffer, so a failed write
    leaves nothing behind to be written later; a regular file is then cut back
    to its length before the failed group, so it never ends in a torn line.
    A failure raises :class:`~fanout.errors.WriteError` naming the output
    (``broken_pipe`` set when its reader went away).
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.name = name
        self._stream = stream
        self._fd = _fileno(stream)
        self._regular = False
        self.pipe: PipeTail | None = None
        """For a pipe: what of the lines written its reader has not read."""
        if self._fd is not None:
            stream.flush()  # what Python buffered goes first
            mode = os.fstat(self._fd).st_mode
            self._regular = stat.S_ISREG(mode)
            if stat.S_ISFIFO(mode):
                self.pipe = PipeTail(self._fd)

    def write(self, lines: Sequence[bytes]) -> None:
        """Write every line, or raise WriteError having written none (a regular file)."""
        fd = self._fd
        start = os.lseek(fd, 0, os.SEEK_CUR) if fd is not None and self._regular else None
        try:
            if fd is None:
                self._stream.writelines(lines)
                self._stream.flush()
            else:
                write_all(fd, lines)
        except OSError as exc:
            if start is not None:
                self.cut(start)
            broken = isinstance(exc, BrokenPipeError)
            reason = "its reader went away (broken pipe)" if broken else exc.strerror or str(exc)
            raise WriteError(f"cannot write {self.name}: {reason}", broken_pipe=broken) from None

    def cut(self, length: int) -> None:
        """Cut a regular file back to ``length`` bytes (lines that must not stay);
        anything else is left as it is."""
        if self._fd is not None and self._regular:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, length)
                os.lseek(self._fd, length, os.SEEK_SET)

    def tell(self) -> int:
        """The position after the last line written."""
        if self._fd is None:
            return self._stream.tell()
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def sync(self) -> None:
        """Flush the written lines to the disk (``fsync``), where there is one."""
        if self._fd is not None and self._regular:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise WriteError(f"cannot write {self.name}: {exc.strerror or exc}") from None


class PipeTail:
    """The lines last written to a pipe, as many bytes of them as it can hold
    unread, each with what it stands for (a journal key, say): after a broken
    pipe, :meth:`unread` tells which its reader never read (Linux; elsewhere
    none is known), so that they are not taken as delivered."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._capacity = _pipe_size(fd)
        self._lines: deque[tuple[object, int]] = deque()
        self._bytes = 0

    def wrote(self, lines: Iterable[tuple[object, int]]) -> None:
        """Note lines written, oldest first: ``(what, size)`` of each."""
        held = self._lines
        for line in lines:
            held.append(line)
            self._bytes += line[1]
        while held and self._bytes - held[0][1] >= self._capacity:
            self._bytes -= held.popleft()[1]

    def unread(self) -> list[object]:
        """What the lines still (even partly) in the pipe stand for, newest first."""
        if not sys.platform.startswith("linux"):  # FIONREAD on a pipe's writing end
            return []
        try:
            count = array.array("i", [0])
            fcntl.ioctl(self._fd, termios.FIONREAD, count)
        except OSError:
            return []
        unread, seen, found = count[0], 0, []
        for what, size in reversed(self._lines):
            if seen >= unread:
                break
            seen += size
            found.append(what)
        return found


def _pipe_size(fd: int) -> int:
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except (AttributeError, OSError):
        return 1 << 20  # the most Linux gives a pipe by default


_F_GETPIPE_SZ: Final = 1032  # Linux


def output_name(path: str) -> str:
    """How messages name an output: ``standard output`` or the quoted path."""
    return "standard output" if path == "-" else f"'{shown(path, 200)}'"


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def write_all(fd: int, chunks: Sequence[bytes]) -> None:
    """Write every byte of ``chunks`` to ``fd`` in as few system calls as it
    takes: short writes are carried on, and a descriptor left non-blocking by
    another program is waited for."""
    pending: list[bytes | memoryview] = [chunk for chunk in chunks if chunk]
    index = 0
    while index < len(pending):
        batch = pending[index : index + _IOV_MAX]
        try:
            written = _WRITEV(fd, batch) if _WRITEV else os.write(fd, b"".join(batch))
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        while written:
            size = len(pending[index])
            if written >= size:
                written -= size
                index += 1
            else:
                pending[index] = memoryview(pending[index])[written:]
                written = 0


_WRITEV: Final[Callable[[int, Sequence[bytes | memoryview]], int] | None] = getattr(
    os, "writev", None
)
