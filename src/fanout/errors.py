"""Exceptions fanout raises: only for the caller's mistakes and broken edges.

A failed *request* is never an exception; it is a :class:`fanout.Result` whose
``error`` says what went wrong. Exceptions are kept for configuration mistakes
and for sinks or journals that cannot do their job::

    FanoutError
     ├── ConfigError     a policy or option has a bad value (also a ValueError)
     ├── SourceError     the input cannot be read
     ├── SinkError       an output cannot be written
     │    └── WriteError  ... and a run stopped because of it
     ├── JournalError    a journal cannot be opened or used
     ├── QueueError      a Redis queue cannot be reached or used
     └── BodyError       Result.text()/json() with no body, or a body not JSON
                         (also a ValueError)
"""

from __future__ import annotations

__all__ = [
    "BodyError",
    "ConfigError",
    "FanoutError",
    "JournalError",
    "QueueError",
    "SinkError",
    "SourceError",
    "WriteError",
]


class FanoutError(Exception):
    """Base class of every exception fanout raises on purpose."""


class ConfigError(FanoutError, ValueError):
    """A policy or option has a bad value; the message names the field."""


class SourceError(FanoutError):
    """The input (a file, stdin, an iterable) cannot be read."""


class SinkError(FanoutError):
    """An output (JSONL file, directory of pages) cannot be written."""


class JournalError(FanoutError):
    """A journal cannot be opened or used."""


class QueueError(FanoutError):
    """A Redis queue (``fanout.redisq``) cannot be used: Redis cannot be
    reached (or was lost for longer than a worker waits), is older than 7, or
    the queue was made by a newer fanout."""


class WriteError(SinkError):
    """The JSONL output or the journal could not be written while a run was
    going (disk full, an I/O error, a reader that went away): the run stopped.
    Every record the journal marks done was written before it failed.

    ``broken_pipe`` is True when the reader of a pipe (standard output) went
    away, which is no fault of the output itself."""

    def __init__(self, message: str, *, broken_pipe: bool = False) -> None:
        super().__init__(message)
        self.broken_pipe = broken_pipe


class BodyError(FanoutError, ValueError):
    """:meth:`fanout.Result.text` or :meth:`fanout.Result.json` cannot answer:
    the result has no body (the request failed before one arrived, or bodies
    were not kept), or the body is not JSON."""
