"""What HTTP allows in a method and in a header field: one definition, shared
by the CLI's options, the JSONL reader and :class:`fanout.Request`.

Each check returns None when the text is allowed, else a sentence that names
the field and shows the offending text escaped (see :func:`fanout.safetext.shown`).

>>> method_problem("GET") is None
True
>>> method_problem("GE T")
"method must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), got 'GE T'"
>>> header_problem("X-Token", "a\\x01b")
"header 'X-Token' value holds a control character ('\\\\x01'); only tab is allowed"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from fanout.safetext import shown

__all__ = [
    "TOKEN_RE",
    "header_problem",
    "headers_problem",
    "is_token",
    "method_problem",
    "value_problem",
]

# RFC 9110 §5.6.2: token = 1*tchar, used for methods and field names.
TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: a field value holds visible characters, spaces and tabs; no other
# control character (CTL), so no CR, LF or NUL that would split the message.
_CTL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TCHARS: Final = "letters, digits and !#$%&'*+-.^_`|~"
_SHOWN: Final = 80

# Tokens already found good. Requests repeat a few methods and header names, and
# a set lookup costs a tenth of the regular expression (Request checks on every
# construction). Bounded, so hostile input cannot grow it.
_known_tokens: set[str] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
_KNOWN_TOKENS_MAX: Final = 1024


def is_token(text: str) -> bool:
    """Whether ``text`` is an HTTP token (RFC 9110 §5.6.2), as a method or a
    header name must be.

    >>> is_token("X-Request-Id"), is_token("X Request"), is_token("")
    (True, False, False)
    """
    if text in _known_tokens:
        return True
    if TOKEN_RE.fullmatch(text) is None:
        return False
    if len(_known_tokens) < _KNOWN_TOKENS_MAX:
        _known_tokens.add(text)
    return True


def method_problem(method: object) -> str | None:
    """Why ``method`` cannot be an HTTP method, or None when it can."""
    if not isinstance(method, str):
        return f"method must be a str, got {type(method).__name__}"
    if not is_token(method):
        return f"method must be an HTTP token ({_TCHARS}), got '{shown(method, _SHOWN)}'"
    return None


def value_problem(what: str, value: object) -> str | None:
    """Why ``value`` cannot be the value of a header field (``what`` names it
    in the sentence: "header 'X'", "--user-agent"), or None when it can."""
    fault = _value_fault(value)
    return None if fault is None else f"{what} value {fault}"


def header_problem(name: object, value: object) -> str | None:
    """Why ``name: value`` cannot be a header field, or None when it can."""
    if not isinstance(name, str):
        return f"header names must be str, got {type(name).__name__}"
    if not is_token(name):
        return f"header name '{shown(name, _SHOWN)}' is not an HTTP token ({_TCHARS})"
    fault = _value_fault(value)
    return None if fault is None else f"header '{name}' value {fault}"


def _value_fault(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    if value.isprintable():  # the common case, and much cheaper than the search
        return None
    control = _CTL_RE.search(value)
    if control is None:
        return None
    return f"holds a control character ('{shown(control.group())}'); only tab is allowed"


def headers_problem(headers: object) -> str | None:
    """:func:`header_problem` of the first bad field of a mapping, or None."""
    if type(headers) is not dict and not isinstance(headers, Mapping):
        return f"headers must be a mapping of names to values, got {type(headers).__name__}"
    known = _known_tokens
    for name, value in headers.items():
        if name in known and type(value) is str and value.isprintable():
            continue  # the common case, without the calls below
        problem = header_problem(name, value)
        if problem is not None:
            return problem
    return None
