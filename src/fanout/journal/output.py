"""The journaled output file, kept consistent with the journal: its one
writer (:class:`JournaledOutput`) and its repair on resume."""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

from fanout.errors import JournalError, WriteError
from fanout.journal.problems import _PATH_LIMIT, _WRITE_FAILURES, _named, _problem
from fanout.journal.schema import State
from fanout.journal.store import InputItem, Journal
from fanout.output.line_output import LineOutput
from fanout.output.writer import WriterThread
from fanout.safetext import shown

_BATCH_BYTES: Final = 1 << 20  # a group goes once its lines hold this much (large bodies)
T = TypeVar("T")


def repair_output(path: Path, offset: int, journal: Journal | None = None) -> int:
    """Cut ``path`` back to ``offset`` bytes (the length at the last committed
    batch); return how many bytes were dropped. A missing file is fine when
    nothing was committed; a file shorter than the journal says was changed
    outside fanout (JournalError, telling how to rebuild it from ``journal``).

    With ``journal``, a file of exactly the length ``fanout export`` writes is
    taken as rebuilt by it, and becomes the recorded length: the export has
    one line per key, where the file may have had superseded lines (after
    ``--retry-failed`` or ``--no-dedupe``)."""
    named = f"output '{shown(str(path), _PATH_LIMIT)}'"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if offset:
            raise JournalError(
                f"{named} is missing, but "
                f"{_named(journal.path) if journal else 'the journal'} recorded {offset:,} "
                f"bytes of it{_rebuild_hint(path, journal)}"
            ) from None
        return 0
    if size < offset:
        if journal is not None and size == journal.records_size():
            journal.record([], size)
            return 0
        raise JournalError(
            f"{named} is shorter than the journal recorded ({size:,} < {offset:,} bytes): "
            f"it was changed outside fanout{_rebuild_hint(path, journal)}"
        )
    if size > offset:
        with path.open("r+b") as stream:
            stream.truncate(offset)
    return size - offset


def _rebuild_hint(path: Path, journal: Journal | None) -> str:
    if journal is None:
        return ""
    command = (
        f"fanout export --journal {shlex.quote(str(journal.path))} -o {shlex.quote(str(path))}"
    )
    return f"; rebuild it from the journal with '{shown(command, 2 * _PATH_LIMIT)}', then run again"


class JournaledOutput:
    """The one writer of a journaled run: JSONL lines and journal commits, in
    small groups, on one thread (a :class:`~fanout.output.writer.WriterThread`), in
    the order that keeps the output exact: a group's lines are written (and
    flushed), then one transaction marks its keys done or failed and records
    the output's new length. A key is never marked done before its line was
    written; a group whose lines could not all be written is not committed
    (and its torn lines are cut from a file at once).

    A group is what was added while the previous one was written, at most
    ``group`` results (32) or 1 MiB of lines: so results are committed as
    soon as the thread is free (within milliseconds), and a kill -9 costs at
    most the results of the backlog (``backlog``, 48) besides those in flight.
    :meth:`add` is cheap and never blocks; when :attr:`full`, await
    :meth:`room`. A failure to write the output or the journal raises
    :class:`~fanout.errors.WriteError` naming the file from :meth:`room`,
    :meth:`flush`, :meth:`call` or :meth:`close`; nothing is written after it.
    Without an output path (stdout), lines are written but no offset is kept.
    """

    def __init__(
        self,
        journal: Journal,
        output: BinaryIO,
        *,
        track_offset: bool,
        name: str = "the output",
        group: int = 32,
        backlog: int = 48,
        fsync: bool = False,
    ) -> None:
        self.journal = journal
        self._output = LineOutput(output, name)
        self._track = track_offset
        self._fsync = fsync
        self._writer: WriterThread[_Entry] = WriterThread(
            self._write_and_commit,
            name="fanout-journal",
            group=group,
            backlog=backlog,
            group_bytes=_BATCH_BYTES,
            backlog_bytes=2 * _BATCH_BYTES,
        )

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the journal's thread, after earlier work;
        a failure of SQLite there raises WriteError naming the journal."""
        return await self._writer.call(self._guarded, function, *args)

    def _guarded(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return function(*args)
        except (sqlite3.Error, JournalError) as exc:
            raise self._journal_error(exc) from None

    def add(self, line: bytes, item: InputItem | None, state: State, kind: str | None) -> None:
        """Queue one output line; with its input, the input's journal entry too
        (its key is made on the journal's thread, see :meth:`Journal.key`)."""
        self._writer.put((line, item, state, kind), len(line))

    @property
    def full(self) -> bool:
        """Whether the backlog is at its bound: await :meth:`room` before adding more."""
        return self._writer.full

    async def room(self) -> None:
        """Wait until the backlog has room; raise WriteError if a write failed."""
        await self._writer.room()

    async def flush(self) -> None:
        """Wait until everything added is written and committed."""
        await self._writer.drain()

    def _write_and_commit(self, entries: list[_Entry]) -> None:
        key = self.journal.key
        keys = [None if item is None else key(item) for _, item, _, _ in entries]
        lines = [entry[0] for entry in entries]
        start = self._output.tell() if self._track else None
        try:
            self._output.write(lines)
        except WriteError as exc:
            if exc.broken_pipe:
                self._reopen_unread()
            raise
        if self._fsync:
            self._output.sync()
        offset = self._output.tell() if self._track else None
        stored = [
            (stored_key, state, kind, line)
            for stored_key, (line, _, state, kind) in zip(keys, entries, strict=True)
            if stored_key is not None
        ]
        try:
            self.journal.record(stored, offset)
        except (sqlite3.Error, JournalError) as exc:
            if start is not None:
                self._output.cut(start)  # lines no commit covers (a resumed run would cut them)
            raise self._journal_error(exc) from None
        if self._output.pipe is not None:
            self._output.pipe.wrote(zip(keys, map(len, lines), strict=True))

    def _reopen_unread(self) -> None:
        """The reader of the pipe went away: the records it did not read were
        not delivered, so their keys are made pending again (the next run
        fetches and delivers them)."""
        pipe = self._output.pipe
        if pipe is None:
            return
        keys = [key for key in pipe.unread() if isinstance(key, str)]
        with contextlib.suppress(sqlite3.Error, JournalError):  # the pipe is what is reported
            self.journal.reopen(keys)

    def _journal_error(self, exc: sqlite3.Error | JournalError) -> WriteError | JournalError:
        """What stops a run whose journal failed mid-run: WriteError (exit 1)
        when it could not be written (a full disk, an I/O error, read-only),
        JournalError (exit 2) when it is damaged."""
        cause = exc.__cause__ if isinstance(exc, JournalError) else exc
        if not isinstance(exc, JournalError):
            exc = JournalError(f"{_named(self.journal.path)} {_problem(exc, self.journal.path)}")
        if (getattr(cause, "sqlite_errorname", "") or "").startswith(_WRITE_FAILURES):
            return WriteError(str(exc))
        return exc

    async def close(self) -> None:
        """Write and commit what is left, then stop the writer thread (a failure
        not raised yet is raised here)."""
        await self._writer.close()


_Entry = tuple[bytes, InputItem | None, State, str | None]
