"""Exceptions fanout raises: only for the caller's mistakes and broken edges.

A failed *request* is never an exception; it is a :class:`fanout.Result` whose
``error`` says what went wrong. Exceptions are kept for configuration mistakes
and for sinks or journals that cannot do their job::

    FanoutError
     ├── ConfigError     a policy or option has a bad value (also a ValueError)
     ├── SourceError     the input cannot be read
     ├── SinkError       an output cannot be written
     └── JournalError    a journal cannot be opened or used
"""

from __future__ import annotations

__all__ = ["ConfigError", "FanoutError", "JournalError", "SinkError", "SourceError"]


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
