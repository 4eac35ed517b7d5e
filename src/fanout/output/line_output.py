"""Whole lines to a file, standard output or a pipe, for a writer thread
(:mod:`fanout.output.writer`): written with ``writev``, a file cut back after a
failed write, and what a pipe's reader never read."""

from __future__ import annotations

import array
import contextlib
import io
import os
import select
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO, Final

from fanout.errors import WriteError
from fanout.safetext import shown

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover (Windows)
    fcntl = termios = None  # type: ignore[assignment]

__all__ = ["LineOutput", "PipeTail", "output_name", "write_all"]

_IOV_MAX: Final = 512  # buffers per writev call (Linux allows 1024)


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
