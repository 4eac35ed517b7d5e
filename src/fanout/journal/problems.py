"""How a journal's messages name it, and what its SQLite errors say about it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from fanout.safetext import shown

_PATH_LIMIT: Final = 200  # characters of a path in a message


def _named(path: Path | str) -> str:
    """``journal 'PATH'``, for a message."""
    return f"journal '{shown(str(path), _PATH_LIMIT)}'"


_WRITE_FAILURES: Final = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_PERM",
)


def _problem(exc: sqlite3.Error, journal: Path) -> str:
    """What a SQLite error says about a journal, to follow ``journal 'PATH'``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = shown(str(exc), 200)
    if name.startswith("SQLITE_NOTADB"):
        return "is not a fanout journal (not a SQLite database)"
    if name.startswith("SQLITE_CORRUPT"):
        return f"is damaged ({text}): 'fanout status --check' lists its problems"
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) and _disk_full(journal):
        # SQLite says "disk I/O error" when it cannot grow its -shm file
        return f"cannot be written: the disk holding it is full ({text})"
    if name.startswith("SQLITE_FULL"):
        return f"cannot be written: the disk is full ({text})"
    if name.startswith("SQLITE_IOERR"):
        return f"cannot be read or written: an I/O error ({text})"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return f"cannot be written: {text}"
    return f"cannot be used: {text}"


def _disk_full(journal: Path) -> bool:
    try:
        space = os.statvfs(journal.parent)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return space.f_bavail == 0
