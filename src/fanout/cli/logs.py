"""Logs that hide URL credentials: whatever the command line logs goes through here.

Light on purpose (only :mod:`logging` at import): every ``fanout`` command
calls :func:`redact_logs` at start-up.
"""

from __future__ import annotations

import logging

__all__ = ["RedactingFormatter", "redact_logs"]


class RedactingFormatter(logging.Formatter):
    """Formats a record with another formatter, then replaces every URL's
    ``user:password@`` in the whole text (the message, and any traceback or
    exception message, where libraries print URLs as they were) by ``***@``.

    >>> import logging
    >>> record = logging.makeLogRecord({"msg": "GET %s", "args": ("http://bob:pw@h.example/",)})
    >>> RedactingFormatter(logging.Formatter("%(message)s")).format(record)
    'GET http://***@h.example/'
    """

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's text, credentials hidden."""
        from fanout.urls import redact_text  # only once something is logged

        return redact_text(self._inner.format(record))


def redact_logs() -> None:
    """Make what :mod:`logging` writes hide URL credentials: through every
    handler of the root logger (``--debug``), each keeping its own format, and
    through the last-resort handler that prints warnings and errors to stderr
    when no handler is configured."""
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))
