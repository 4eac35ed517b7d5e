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

from fanout.journal.export import export
from fanout.journal.lock import lock_path
from fanout.journal.output import JournaledOutput, repair_output
from fanout.journal.schema import SCHEMA_VERSION, State
from fanout.journal.store import InputItem, Journal, JournalCounts, Verdict
from fanout.output.credentials import KeySource, stored_key

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
