"""The exit statuses of the ``fanout`` command, in one place.

=====  ==========================================================
0      every request succeeded (``aggregate``: the report printed)
1      some requests failed, or the output or journal could not be
       written (one line names the file)
2      usage error: one line on stderr, nothing fetched or written
129    SIGHUP (the terminal or SSH session closed)
130    SIGINT (Ctrl-C)
141    the reader of standard output went away (a broken pipe)
143    SIGTERM (``timeout``, systemd, Docker, Kubernetes)
=====  ==========================================================

On a signal or a broken pipe, every result already fetched is written (or,
with a journal, left pending so that the next run fetches it) before exiting.
"""

from __future__ import annotations

import signal
from typing import Final

__all__ = [
    "BROKEN_PIPE",
    "FAILURES",
    "OK",
    "USAGE",
    "for_signal",
]

OK: Final = 0
FAILURES: Final = 1
USAGE: Final = 2
BROKEN_PIPE: Final = 128 + signal.SIGPIPE


def for_signal(signum: int) -> int:
    """The status of a run ended by signal ``signum``: 128 + its number, as a
    shell reports a process killed by it (SIGINT 130, SIGHUP 129, SIGTERM 143).

    >>> for_signal(signal.SIGTERM)
    143
    """
    return 128 + signum
