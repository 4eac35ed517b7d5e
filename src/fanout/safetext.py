"""Text that comes from outside (a server, an input line) made safe to show.

Servers choose their reason phrases, header values and error bodies, and
input files hold whatever bytes they hold. Before such text reaches a
record, a log or a terminal it is escaped (control characters, terminal
escapes, bidi overrides and undecodable bytes become backslash escapes) and
bounded, so one hostile response cannot flood an output or a screen.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MESSAGE_LIMIT", "shown"]

MESSAGE_LIMIT: Final = 500
"""The most characters of an error message, before its ellipsis."""


def shown(raw: bytes | str, limit: int = MESSAGE_LIMIT) -> str:
    """``raw`` escaped and cut to ``limit`` characters (plus "…" when cut).

    >>> shown("HTTP 400 \\x1b[31mred")
    'HTTP 400 \\\\x1b[31mred'
    >>> len(shown("x" * 10_000))
    501
    """
    if isinstance(raw, bytes):
        # 4 bytes per character at most: enough to fill the shown length.
        text = raw[: limit * 4].decode("utf-8", "backslashreplace")
    else:
        text = raw[: limit * 4]
    if not text.isprintable():
        # Terminal escapes, bidi overrides and line breaks must not reach a screen raw.
        text = "".join(
            c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
            for c in text
        )
    if len(text) > limit or len(raw) > limit * 4:
        return text[:limit] + "…"
    return text
