"""Writing a command's whole output to stdout, however slowly it is read.

After an event loop has run, a write to a pipe may take only part of what it
is given (seen with uvloop: 65,536 of 122,873 bytes, no error), and Python's
text layer then drops the rest without a word: a report read by a slow
reader came out cut. :func:`write_all` writes until every byte is taken,
waiting for the reader when the pipe is full.
"""

from __future__ import annotations

import os
import select
import sys

__all__ = ["write_all"]


def write_all(text: str) -> None:
    """Write ``text`` (UTF-8) to stdout, all of it, after what is buffered there.
    A reader that went away raises :class:`BrokenPipeError`, as a print would."""
    stdout = sys.stdout
    stdout.flush()
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # not a file (a test's capture, say): its own write
        stdout.write(text)
        stdout.flush()
        return
    view = memoryview(text.encode())
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])  # the reader's pace: as a blocking write would
            continue
        view = view[written:]
