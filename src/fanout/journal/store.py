"""The :class:`Journal`: a run's state in SQLite, one row per input key."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

from fanout.errors import JournalError
from fanout.inputs.sources import Rejected
from fanout.journal.lock import _RunLock
from fanout.journal.problems import _PATH_LIMIT, _named, _problem
from fanout.journal.schema import SCHEMA_VERSION, State, _prepare
from fanout.models import Request
from fanout.output.credentials import KeySource, stored_key
from fanout.safetext import shown

_CHUNK: Final = 500  # keys per IN (...) query, under SQLite's variable limit
_CHECK_PROBLEMS: Final = 10  # the most problems `status --check` lists
STDOUT: Final = "-"
T = TypeVar("T")
P = ParamSpec("P")


InputItem = Request | Rejected
"""An input as read: its key (:meth:`Journal.key`) is the request's key, or its
URL, or a rejected line's text."""


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


HOST_SAMPLE: Final = 100_000
"""Keys read by :meth:`Journal.host_counts`."""


@dataclass(frozen=True, slots=True)
class HostCount:
    """Keys of one host in a journal, by state."""

    host: str
    done: int
    failed: int
    pending: int

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return {
            "host": self.host,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
        }


def _key_host(key: str) -> str | None:
    """``host:port`` of a stored key that is an http(s) URL, else None."""
    try:
        parts = urlsplit(key)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or parts.scheme not in ("http", "https"):
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    def host_counts(self, top: int = 10, sample: int = HOST_SAMPLE) -> tuple[list[HostCount], int]:
        """Keys done, failed and pending by host (``host:port``), the ``top``
        hosts with most keys, over the first ``sample`` keys (by when they
        were first taken: a scan of the whole table over millions of keys
        would take seconds); and how many keys were read. Keys that are
        not http(s) URLs (given in JSONL input) are left out."""
        counts: dict[str, list[int]] = {}
        read = 0
        for key, state in self._db.execute(
            "SELECT key, state FROM entries ORDER BY id LIMIT ?", (sample,)
        ):
            read += 1
            host = _key_host(key)
            if host is None:
                continue
            row = counts.get(host)
            if row is None:
                row = counts[host] = [0, 0, 0]
            row[0 if state == State.DONE else 1 if state == State.FAILED else 2] += 1
        busiest = sorted(counts.items(), key=lambda item: (-sum(item[1]), item[0]))[:top]
        return [HostCount(host, *row) for host, row in busiest], read

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
