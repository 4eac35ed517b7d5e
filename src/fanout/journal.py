"""The journal: durable state that lets a run survive Ctrl-C, kill -9 and reboots.

A SQLite database in WAL mode (https://sqlite.org/wal.html) holds one row per
input key::

    entries(id, key UNIQUE, state, run, line, kind, record)
        state: 0 pending (classified to be fetched by run `run`, no result
                          recorded yet: queued, in flight, or its result not
                          yet committed when that run stopped)
               1 done    (record = its JSONL record)
               2 failed  (kind = its error kind, record = its JSONL record)
    meta(name, value): schema_version, key_scheme, key_salt, runs,
                       output_offset, output_dirty, output

``output`` is where the journal's records go: ``-`` for standard output, else
the file's path relative to the journal's directory (so a directory holding
both can be moved). Once the journal holds a record, a run that asks for
another output is refused (see :meth:`Journal.check_output`).

One run at a time: a run holds an exclusive ``flock`` on ``<journal>.lock``
(a file of its own next to the journal, holding the run's process id) from
:meth:`Journal.open` until :meth:`Journal.close`; a second run fails at once
with JournalError. The kernel drops the lock when the process ends, however
it ends (kill -9 included). The lock is on a separate file because SQLite
keeps POSIX record locks on the database file, and closing any descriptor of
that file drops them all. Reading (``status``, ``export``) takes no lock: WAL
lets them read while a run writes.

Every SQLite error of a query (a file that is not SQLite, a page overwritten
by garbage that only a query reaching it finds, an I/O error, a full disk) is
raised as JournalError naming the file (see :func:`_problem`), never as a
``sqlite3`` exception.

A key never holds a URL's credentials (see :func:`stored_key`): a URL with
``user:password@`` is stored as the URL with ``***@`` in their place, a NUL
and 32 hex digits of scrypt over the credentials, salted per journal. Two URLs
that differ only in their password are two keys; the password is not stored.
A journal of schema 1, whose keys were stored as read, is migrated when a run
opens it (see :func:`_migrate`); ``status`` and ``export`` read it unchanged.

How a run stays exact (one output line per key, nothing fetched twice):

1. Input keys are classified in batches (:meth:`Journal.classify`): new keys
   and keys left pending by an interrupted run are fetched; keys done or failed
   in an earlier run are skipped (their line is already in the output); a key
   seen earlier in this run is a duplicate. Fetched keys are marked pending
   with this run's id, so duplicates are found in SQLite, not in memory.
2. Results go out in small groups from one writer thread (:class:`JournaledOutput`):
   the group's JSONL lines are appended to the output file, and only then one
   transaction marks the group done or failed and records the output file's
   new length. A crash between the two leaves lines past the recorded length
   whose keys are still pending; a failed write or commit stops the run with
   nothing marked done that was not written. Written to a pipe whose reader
   goes away, the lines it never read have their keys made pending again
   (:meth:`Journal.reopen`).
3. On resume, the output file is cut back to the recorded length
   (:func:`repair_output`), dropping those lines and any torn last line; their
   keys are fetched again and written once.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import secrets
import shlex
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, BinaryIO, Concatenate, Final, ParamSpec, TypeVar

import orjson

from fanout.credentials import SALT_BYTES, KeySource, stored_key
from fanout.errors import JournalError, WriteError
from fanout.models import Request
from fanout.safetext import shown
from fanout.sources import Rejected
from fanout.writer import LineOutput, WriterThread

if sys.platform != "win32":
    import fcntl

__all__ = [
    "SCHEMA_VERSION",
    "InputItem",
    "Journal",
    "JournalCounts",
    "JournaledOutput",
    "KeySource",
    "State",
    "Verdict",
    "export",
    "lock_path",
    "repair_output",
    "stored_key",
]

SCHEMA_VERSION: Final = 2
"""2: keys hold no URL credentials (1 stored them as given; migrated on open for a run)."""
_CHUNK: Final = 500  # keys per IN (...) query, under SQLite's variable limit
_BATCH_BYTES: Final = 1 << 20  # a group goes once its lines hold this much (large bodies)
_CHECK_PROBLEMS: Final = 10  # the most problems `status --check` lists
_PATH_LIMIT: Final = 200  # characters of a path in a message
STDOUT: Final = "-"
T = TypeVar("T")
P = ParamSpec("P")


InputItem = Request | Rejected
"""An input as read: its key (:meth:`Journal.key`) is the request's key, or its
URL, or a rejected line's text."""


class State(IntEnum):
    """The state of a key in the journal."""

    PENDING = 0
    DONE = 1
    FAILED = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one input key: ``fetch`` it, ``skip`` it (recorded by an
    earlier run), or it is a ``duplicate`` of ``first_line`` in this run."""

    action: str  # "fetch" | "skip" | "duplicate"
    first_line: int | None = None


FETCH: Final = Verdict("fetch")
SKIP: Final = Verdict("skip")


@dataclass(frozen=True, slots=True)
class JournalCounts:
    """What a journal holds: for ``fanout status``."""

    pending: int
    done: int
    failed: dict[str, int]
    runs: int
    key_scheme: str
    schema_version: int = SCHEMA_VERSION
    plain_keys: int = 0
    """Keys of a schema 1 journal that may hold credentials (an ``@``): the next
    ``fetch --journal`` run rewrites them."""
    output: str | None = None
    """Where the records went, as :meth:`Journal.output` shows it: a path,
    ``-`` for standard output, None when no run recorded it (an older fanout)."""
    output_bytes: int = 0
    """The output file's length at the last committed batch."""

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return {
            "pending": self.pending,
            "done": self.done,
            "failed": sum(self.failed.values()),
            "failed_by_kind": self.failed,
            "runs": self.runs,
            "key_scheme": self.key_scheme,
            "schema_version": self.schema_version,
            "plain_keys": self.plain_keys,
            "output": self.output,
            "output_bytes": self.output_bytes,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    run INTEGER NOT NULL,
    line INTEGER,
    kind TEXT,
    record BLOB
);
"""


def _named(path: Path | str) -> str:
    """``journal 'PATH'``, for a message."""
    return f"journal '{shown(str(path), _PATH_LIMIT)}'"


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


def _translated(
    method: Callable[Concatenate[Journal, P], T],
) -> Callable[Concatenate[Journal, P], T]:
    """Raise a SQLite error of ``method`` as JournalError naming the journal."""

    @functools.wraps(method)
    def wrapper(self: Journal, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._errors():
            return method(self, *args, **kwargs)

    return wrapper


class Journal:
    """A run's journal in SQLite. Not thread-safe: use it from one thread
    (:class:`JournaledOutput` gives it one). Open with :meth:`open`.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run.db")
    >>> with Journal.open(path, key_scheme="url") as journal:
    ...     run = journal.begin_run()
    ...     [v.action for v in journal.classify([("http://a/", 1), ("http://a/", 2)], run)]
    ['fetch', 'duplicate']
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        key_scheme: str,
        salt: bytes | None = None,
        lock: _RunLock | None = None,
    ) -> None:
        self.path = path
        self._db = connection
        self.key_scheme = key_scheme
        self._salt = salt
        self._lock = lock
        self.commits = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, key_scheme: str, create: bool = True) -> Journal:
        """Open (or create) the journal at ``path``; a bad one raises JournalError
        naming the file. ``key_scheme`` says how input keys are made ("url",
        "jsonl"); a journal made with another scheme is refused.

        Opened for a run (``create``), the journal is locked for this run until
        :meth:`close` (see :func:`lock_path`): a journal in use by another run
        raises JournalError at once. A journal of schema 1 is then migrated:
        its keys holding URL credentials are rewritten as :func:`stored_key`
        makes them (see :func:`_migrate`). Opened to read (``create=False``,
        for ``status`` and ``export``), nothing is locked or changed."""
        where = Path(path)
        name = _named(where)
        if not create and not where.exists():
            raise JournalError(f"{name} does not exist")
        if where.is_dir():
            raise JournalError(f"{name} is a directory")
        lock = _RunLock.take(where) if create else None
        try:
            try:
                connection = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise JournalError(f"{name} {_problem(exc, where)}") from exc
            try:
                scheme, salt = _prepare(connection, key_scheme, create=create)
            except sqlite3.DatabaseError as exc:
                connection.close()
                raise JournalError(f"{name} {_problem(exc, where)}") from exc
            except JournalError as exc:
                connection.close()
                raise JournalError(f"{name} {exc}") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(where, connection, scheme, salt, lock)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database, then let another run have the journal."""
        try:
            with self._errors():
                self._db.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Raise a SQLite error as JournalError naming this journal."""
        try:
            yield
        except sqlite3.ProgrammingError:
            raise  # a bug in fanout (a closed database, a bad query): not the file's fault
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{_named(self.path)} {_problem(exc, self.path)}") from exc

    # ------------------------------------------------------------- writing

    def key(self, item: InputItem) -> str:
        """The stored key of an input: its key if given, else its URL (a
        rejected line: its text), with any credentials hidden (see
        :func:`stored_key`). Slow the first time a credential is seen: call it
        on the journal's thread."""
        if isinstance(item, Rejected):
            text, source = item.text, KeySource.LINE
        elif item.key is not None:
            return item.key
        else:
            text, source = item.url, KeySource.URL
        if "@" not in text:
            return text
        if self._salt is None:
            raise JournalError(f"{_named(self.path)} was opened to read, not for a run")
        return stored_key(text, source, self._salt)

    @_translated
    def begin_run(self) -> int:
        """Record the start of a run; return its id (1, 2, ...)."""
        with self._transaction():
            value = self._meta("runs")
            run = int(value or 0) + 1
            self._set_meta("runs", str(run))
        return run

    @_translated
    def classify(
        self,
        items: Sequence[tuple[str, int]],
        run: int,
        retry_failed: frozenset[str] | None = None,
    ) -> list[Verdict]:
        """Decide for each ``(key, line)`` whether to fetch, skip or call it a
        duplicate, and mark the fetched ones pending for ``run``. Failed keys of
        earlier runs are fetched again when their kind is in ``retry_failed``
        (an empty set means every kind)."""
        known: dict[str, tuple[int, int, int | None, str | None]] = {}
        keys = list(dict.fromkeys(key for key, _ in items))
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, state, run, line, kind FROM entries WHERE key IN ({marks})", chunk
            )
            for key, state, row_run, line, kind in rows:
                known[key] = (state, row_run, line, kind)
        verdicts: list[Verdict] = []
        pending: list[tuple[str, int, int]] = []
        for key, line in items:
            row = known.get(key)
            if row is None:
                verdict = FETCH
            else:
                state, row_run, first_line, kind = row
                if row_run == run:
                    verdict = Verdict("duplicate", first_line)
                elif state == State.PENDING:
                    verdict = FETCH  # in flight when an earlier run stopped
                elif (
                    state == State.FAILED
                    and retry_failed is not None
                    and (not retry_failed or kind in retry_failed)
                ):
                    verdict = FETCH
                else:
                    verdict = SKIP
            if verdict is FETCH:
                known[key] = (State.PENDING, run, line, None)
                pending.append((key, run, line))
            verdicts.append(verdict)
        if pending:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO entries (key, state, run, line) VALUES (?, 0, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET state = 0, run = excluded.run, "
                    "line = excluded.line",
                    pending,
                )
        return verdicts

    def classify_inputs(
        self,
        items: Sequence[tuple[InputItem, int]],
        run: int,
        retry_failed: frozenset[str] | None = None,
    ) -> list[Verdict]:
        """:meth:`classify` of inputs as read, by their stored keys (:meth:`key`)."""
        key = self.key
        return self.classify([(key(item), line) for item, line in items], run, retry_failed)

    @_translated
    def record(
        self,
        entries: Sequence[tuple[str, State, str | None, bytes]],
        output_offset: int | None,
    ) -> None:
        """Mark ``(key, state, kind, record)`` entries done or failed, and store the
        output file's length after their lines, in one transaction."""
        with self._transaction():
            self._db.executemany(
                "UPDATE entries SET state = ?, kind = ?, record = ? WHERE key = ?",
                [(int(state), kind, record, key) for key, state, kind, record in entries],
            )
            if output_offset is not None:
                self._set_meta("output_offset", str(output_offset))
        self.commits += 1

    @_translated
    def check_output(self, output: str) -> None:
        """Raise JournalError if this journal's records went to another output
        than ``output`` (a path, or ``-`` for standard output). Its output holds
        one line per key over all its runs, and ``output_offset`` is that file's
        length: a run writing elsewhere would split the records in two, and
        would cut the other file to this one's length. Until the journal holds a
        record, a run may change it (see :meth:`claim_output`)."""
        recorded = self._meta("output")
        if recorded is None or recorded == _output_key(output, self.path):
            return
        if not self._has_records():
            return
        asked = "standard output" if output == STDOUT else _quoted(output)
        if recorded == STDOUT:
            was, resume = "standard output", "without -o"
        else:
            path = _output_shown(recorded, self.path)
            was, resume = _quoted(path), f"with -o {shlex.quote(path)}"
        raise JournalError(
            f"{_named(self.path)} wrote to {was}; this run asks for {asked}: a journal's "
            f"records go to one output (resume {resume}, or give another journal; 'fanout "
            f"export --journal {shlex.quote(str(self.path))} -o FILE' writes every record "
            "it holds)"
        )

    @_translated
    def claim_output(self, output: str) -> None:
        """Record that this run writes its records to ``output``, once
        :meth:`check_output` has allowed it."""
        wanted = _output_key(output, self.path)
        if self._meta("output") != wanted:
            with self._transaction():
                self._set_meta("output", wanted)

    @_translated
    def reopen(self, keys: Sequence[str]) -> None:
        """Make done or failed ``keys`` pending again: their records were
        written to a pipe whose reader went away before reading them."""
        if not keys:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE entries SET state = 0, kind = NULL, record = NULL WHERE key = ?",
                [(key,) for key in keys],
            )

    @_translated
    def output_offset(self) -> int:
        """The output file's length at the last committed batch (0 if none)."""
        return int(self._meta("output_offset") or 0)

    @_translated
    def set_output_dirty(self, dirty: bool) -> None:
        """Note that the output holds superseded lines (a --retry-failed run
        appends new records for old keys) and must be rewritten."""
        with self._transaction():
            self._set_meta("output_dirty", "1" if dirty else "0")

    @property
    @_translated
    def output_dirty(self) -> bool:
        """Whether the output must be rewritten from the journal."""
        return self._meta("output_dirty") == "1"

    # ------------------------------------------------------------- reading

    @_translated
    def counts(self) -> JournalCounts:
        """How many keys are pending, done, and failed by kind."""
        pending = done = 0
        failed: dict[str, int] = {}
        for state, kind, count in self._db.execute(
            "SELECT state, kind, COUNT(*) FROM entries GROUP BY state, kind ORDER BY kind"
        ):
            if state == State.PENDING:
                pending += count
            elif state == State.DONE:
                done += count
            else:
                failed[kind or "unknown"] = count
        runs = int(self._meta("runs") or 0)
        version = int(self._meta("schema_version") or 0)
        plain = 0
        if version < 2:
            (plain,) = self._db.execute(
                "SELECT COUNT(*) FROM entries WHERE instr(key, '@') > 0"
            ).fetchone()
        return JournalCounts(
            pending,
            done,
            failed,
            runs,
            self.key_scheme,
            version,
            plain,
            output=self.output(),
            output_bytes=self.output_offset(),
        )

    @_translated
    def output(self) -> str | None:
        """Where the records go: the output file's path (from here, if the
        journal's path is relative), ``-`` for standard output, or None when no
        run recorded it (a journal of an older fanout)."""
        recorded = self._meta("output")
        if recorded is None or recorded == STDOUT:
            return recorded
        return _output_shown(recorded, self.path)

    @_translated
    def records_size(self) -> int:
        """The length of every recorded line, as ``export`` writes them."""
        (size,) = self._db.execute(
            "SELECT COALESCE(SUM(length(record) + (substr(record, -1) != x'0a')), 0) "
            "FROM entries WHERE state != 0 AND record IS NOT NULL"
        ).fetchone()
        return int(size)

    def check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` (every page, row and index entry;
        about half a second per GB): an empty list when the file is sound, else
        its first problems. A check that SQLite stops halfway (a page too
        damaged to read) reports why as its last problem."""
        problems: list[str] = []
        try:
            for (text,) in self._db.execute(f"PRAGMA integrity_check({_CHECK_PROBLEMS})"):
                problems += [line for line in str(text).splitlines() if not line.startswith("***")]
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            problems.append(f"the check stopped: {exc}")
        return [] if problems == ["ok"] else problems[:_CHECK_PROBLEMS]

    def records(self) -> Iterator[bytes]:
        """Every recorded JSONL record (done and failed), in first-seen order."""
        with self._errors():  # a damaged page may be met halfway
            cursor = self._db.execute(
                "SELECT record FROM entries WHERE state != 0 AND record IS NOT NULL ORDER BY id"
            )
            for (record,) in cursor:
                yield bytes(record)

    # ------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error):
            # the error that got here is the one to tell
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def _has_records(self) -> bool:
        row = self._db.execute("SELECT EXISTS (SELECT 1 FROM entries WHERE state != 0)")
        return bool(row.fetchone()[0])

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


def _quoted(path: str) -> str:
    return f"'{shown(path, _PATH_LIMIT)}'"


def _output_key(output: str, journal: Path) -> str:
    """How the journal records ``output``: ``-``, or the path from the
    journal's directory (absolute if there is none, as across Windows drives)."""
    if output == STDOUT:
        return STDOUT
    target = os.path.abspath(output)
    try:
        relative = os.path.relpath(target, os.path.abspath(journal.parent))
    except ValueError:
        return target
    return os.path.join(".", relative) if relative == STDOUT else relative


def _output_shown(recorded: str, journal: Path) -> str:
    """A recorded output path as the user would give it (from the current
    directory when the journal's path is relative)."""
    return os.path.normpath(os.path.join(journal.parent, recorded))


def _prepare(db: sqlite3.Connection, key_scheme: str, *, create: bool) -> tuple[str, bytes | None]:
    """Check or create the schema (migrating schema 1 when ``create``); return
    the journal's key scheme and its key salt (None when opened to read a
    journal that has none yet)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        if not create:
            raise JournalError("is empty (not a fanout journal)")
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?), "
            "('key_scheme', ?), ('key_salt', ?)",
            (str(SCHEMA_VERSION), key_scheme, secrets.token_hex(SALT_BYTES)),
        )
    elif not {"meta", "entries"} <= tables:
        raise JournalError("is a SQLite database but not a fanout journal")
    else:
        db.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a process crash; a power cut may lose
    # the last commits, which are then refetched (https://sqlite.org/pragma.html#pragma_synchronous)
    db.execute("PRAGMA synchronous = NORMAL")
    row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"was made by a newer fanout (schema {version}; this one reads {SCHEMA_VERSION})"
        )
    row = db.execute("SELECT value FROM meta WHERE name = 'key_scheme'").fetchone()
    scheme = str(row[0]) if row else key_scheme
    if create and scheme != key_scheme:
        raise JournalError(
            f"was made with input keys by {scheme}; this run keys by {key_scheme} "
            "(use the same kind of input, or another journal)"
        )
    # A write probe: a read-only file or directory must fail now, not mid-run.
    if create:
        db.execute("BEGIN IMMEDIATE")
        db.execute("COMMIT")
        if version < SCHEMA_VERSION:
            _migrate(db)
    row = db.execute("SELECT value FROM meta WHERE name = 'key_salt'").fetchone()
    try:
        salt = None if row is None else bytes.fromhex(str(row[0]))
    except ValueError:
        raise JournalError("has a damaged key salt (not hex)") from None
    if salt is None and create:
        raise JournalError("has no key salt (a damaged fanout journal)")
    return scheme, salt


_MIGRATE_BATCH: Final = 1000


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a schema 1 journal to schema 2: no key holds URL credentials.

    Schema 1 stored every key as it was read. A done or failed key's record
    says what the key was: a rejected line's record has a null key, a key its
    record shows unchanged was the user's own (or a URL without credentials),
    any other key was a URL. Those of a line or a URL are rewritten by
    :func:`stored_key` with a new salt, so resume skips exactly what it
    skipped before. Pending keys with an ``@`` are deleted: the next run
    fetches a pending key anyway, row or no row. When a key changed, freed
    space is zeroed, the file rebuilt (VACUUM) and the WAL emptied, so the old
    keys are gone from the files, not only from the table.
    """
    salt = secrets.token_bytes(SALT_BYTES)
    changed = 0
    db.execute("PRAGMA secure_delete = ON")
    db.execute("BEGIN IMMEDIATE")
    try:
        last = 0
        while True:
            rows = db.execute(
                "SELECT id, key, state, record FROM entries "
                "WHERE id > ? AND instr(key, '@') > 0 ORDER BY id LIMIT ?",
                (last, _MIGRATE_BATCH),
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for row_id, key, state, record in rows:
                if state == State.PENDING:
                    db.execute("DELETE FROM entries WHERE id = ?", (row_id,))
                    changed += 1
                    continue
                new = stored_key(key, _source_of(key, record), salt)
                if new != key:
                    db.execute("UPDATE entries SET key = ? WHERE id = ?", (new, row_id))
                    changed += 1
        db.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', ?), ('key_salt', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION), salt.hex()),
        )
    except sqlite3.IntegrityError as exc:
        db.execute("ROLLBACK")
        raise JournalError(f"cannot be migrated to schema {SCHEMA_VERSION}: {exc}") from None
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if changed:
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _source_of(key: str, record: bytes | None) -> KeySource:
    """What a schema 1 key was, from the record stored with it."""
    try:
        data = orjson.loads(record) if record is not None else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return KeySource.URL  # unknown: hiding too much beats keeping a password
    shown = data.get("key")
    if shown is None:
        return KeySource.LINE
    return KeySource.GIVEN if shown == key else KeySource.URL


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
    small groups, on one thread (a :class:`~fanout.writer.WriterThread`), in
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


def export(journal: Journal, out: IO[bytes], fmt: str = "jsonl") -> int:
    """Write every recorded result to ``out`` as JSONL or CSV; return the count."""
    count = 0
    if fmt == "jsonl":
        for record in journal.records():
            out.write(record if record.endswith(b"\n") else record + b"\n")
            count += 1
        return count
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    columns = [
        "url", "key", "line", "ok", "status", "final_url", "attempts", "elapsed_ms",
        "bytes", "content_type", "sha256", "path", "error_kind", "error_message",
    ]  # fmt: skip
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in journal.records():
        data = orjson.loads(record)
        error = data.get("error") or {}
        data["error_kind"] = error.get("kind")
        data["error_message"] = error.get("message")
        writer.writerow(data)
        count += 1
    text.detach()
    return count
