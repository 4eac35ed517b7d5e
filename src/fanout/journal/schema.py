"""The journal's tables, the states of a key, and opening, checking and
migrating the schema."""

from __future__ import annotations

import secrets
import sqlite3
from enum import IntEnum
from typing import Final

import orjson

from fanout.errors import JournalError
from fanout.output.credentials import SALT_BYTES, KeySource, stored_key

SCHEMA_VERSION: Final = 2
"""2: keys hold no URL credentials (1 stored them as given; migrated on open for a run)."""


class State(IntEnum):
    """The state of a key in the journal."""

    PENDING = 0
    DONE = 1
    FAILED = 2


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
