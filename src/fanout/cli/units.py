"""Parsing of human-friendly durations ("50ms", "2s") and sizes ("10MB", "512KiB")."""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "parse_size"]

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds, or with a unit ms, s, m or h.

    >>> parse_duration("250ms"), parse_duration("1.5"), parse_duration("2m")
    (0.25, 1.5, 120.0)
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 500ms, 2s, 1.5, 1m)")
    value = float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]
    if not math.isfinite(value):
        raise ValueError(f"not a finite duration: {text!r}")
    return value


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional unit, decimal (kB, MB, GB, TB:
    powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of 1024).

    >>> parse_size("10MB"), parse_size("512KiB"), parse_size("1000")
    (10000000, 524288, 1000)
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 1000, 10MB, 512KiB)")
    unit = (match.group(2) or "b").lower()
    if unit == "b":
        factor = 1
    else:
        power = "kmgt".index(unit[0]) + 1
        factor = (1024 if "i" in unit else 1000) ** power
    value = float(match.group(1)) * factor
    if not math.isfinite(value):
        raise ValueError(f"not a finite size: {text!r}")
    return int(value)
