"""One run at a time: the exclusive lock on ``<journal>.lock`` a run holds."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from fanout.errors import JournalError
from fanout.journal.problems import _PATH_LIMIT, _named
from fanout.safetext import shown

if sys.platform != "win32":
    import fcntl


def lock_path(journal: str | os.PathLike[str]) -> Path:
    """The file a run locks to have ``journal`` to itself: ``<journal>.lock``."""
    where = Path(journal)
    return where.with_name(where.name + ".lock")


class _RunLock:
    """An exclusive lock on a journal's lock file, held while its descriptor is
    open. ``flock`` (``msvcrt.locking`` on Windows) locks belong to the open
    file, so the kernel drops them when the process ends, however it ends."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, journal: Path) -> _RunLock:
        """Lock ``journal`` for this process, or raise JournalError at once
        (naming the process that holds it when its lock file says)."""
        where = lock_path(journal)
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot write {_named(journal)}: cannot open its lock file "
                f"'{shown(str(where), _PATH_LIMIT)}': {exc.strerror or exc}"
            ) from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise JournalError(
                f"cannot lock {_named(journal)} (its lock file "
                f"'{shown(str(where), _PATH_LIMIT)}'): {exc.strerror or exc}"
            ) from None
        if not locked:
            holder = _holder(fd)
            os.close(fd)
            by = f" (process {holder})" if holder is not None else ""
            raise JournalError(
                f"{_named(journal)} is in use by another fanout run{by}: one run at a "
                "time per journal; wait for it to end, or give another journal"
            )
        if sys.platform != "win32":
            with contextlib.suppress(OSError):  # the process id is only for the message
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        """Drop the lock (closing its descriptor); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if sys.platform != "win32":
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no stale process id for the next reader
            os.close(fd)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if another holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> int | None:
    """The process id a lock file holds, if it holds one."""
    if sys.platform == "win32":
        return None  # the locked byte cannot be read there
    try:
        text = os.pread(fd, 32, 0)
    except OSError:
        return None
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        return None
    return pid if pid > 0 else None


# The SQLite errors of a journal that cannot be written (rather than damaged).
