"""Parsing of the Retry-After header (RFC 9110 §10.2.3)."""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = ["MAX_RETRY_AFTER", "parse_retry_after"]

MAX_RETRY_AFTER: Final = 1e9
"""The longest wait a Retry-After header is read as (about 31 years); more is this."""

# Digits past this many (leading zeros aside) always mean more than MAX_RETRY_AFTER.
_MAX_DIGITS: Final = len(str(int(MAX_RETRY_AFTER)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait that ``value`` asks for, or None when it is absent or garbage.

    Both forms are accepted: delta-seconds (``"120"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), the latter against ``now`` in Unix
    seconds. A date in the past means 0. Whatever the header holds, the
    result is None or a number from 0 to :data:`MAX_RETRY_AFTER`: a value of
    400 digits or a date in the year 9999 is that maximum.

    >>> parse_retry_after("3", now=0.0)
    3.0
    >>> parse_retry_after("9" * 400, now=0.0)
    1000000000.0
    >>> parse_retry_after("soon", now=0.0) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0")
        if len(digits) >= _MAX_DIGITS:  # int() of thousands of digits is slow, then refused
            return MAX_RETRY_AFTER
        return min(float(int(digits or "0")), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is taken as such
        return None
    try:
        seconds = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
