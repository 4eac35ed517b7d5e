"""Parsing of the rate-limit headers a server advertises its quota with.

Three families are read, the first present winning:

- ``RateLimit`` and ``RateLimit-Policy`` of draft-ietf-httpapi-ratelimit-headers
  (structured fields: ``RateLimit: "default";r=0;t=5`` is the remaining quota
  and the seconds until it resets, ``RateLimit-Policy: "default";q=100;w=60``
  the quota of each window); several policies: the one with least remaining.
  The combined form of the older drafts (``RateLimit: limit=100, remaining=0,
  reset=5``) is read too.
- ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``, the
  separate headers of the older drafts.
- ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
  (GitHub, X, Reddit and many others).

A reset above 10^9 is a Unix timestamp (GitHub's), below it a delay in
seconds. Pure functions of the header values: a value too long, or that is not
what the family says, is ignored (None), never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from multidict import istr

__all__ = ["EPOCH_THRESHOLD", "TRIGGERS", "RateHint", "has_rate_limit_headers", "parse_rate_limit"]

EPOCH_THRESHOLD: Final = 1e9
"""A reset value above this is a Unix timestamp; at or below it, seconds from now."""

MAX_FIELD: Final = 1024
"""The longest header value read; a longer one is ignored."""

_MAX_ITEMS: Final = 16  # policies in one RateLimit field; more: the field is ignored
_MAX_NUMBER: Final = 10**12  # a remaining quota or limit above this is taken as garbage

TRIGGERS: Final = (istr("RateLimit"), istr("RateLimit-Remaining"), istr("X-RateLimit-Remaining"))
"""The header names that announce a hint: the engine parses only when one is
there. As ``istr``, a response's headers find them without lowering them again."""


@dataclass(frozen=True, slots=True)
class RateHint:
    """What a response says of its host's quota: ``remaining`` requests until
    ``reset`` seconds from now (None when it does not say), of ``limit`` per
    window (None when unknown)."""

    remaining: int
    reset: float | None
    limit: int | None


def has_rate_limit_headers(headers: Mapping[str, str]) -> bool:
    """True when ``headers`` holds a header this module reads (a cheap test)."""
    first, second, third = TRIGGERS
    return first in headers or second in headers or third in headers


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateHint | None:
    """The quota ``headers`` advertise, or None when none is readable.

    ``now`` is the time in Unix seconds, against which a reset given as a
    timestamp becomes a delay (a timestamp in the past: 0).

    >>> parse_rate_limit({"RateLimit": '"default";r=0;t=5',
    ...                   "RateLimit-Policy": '"default";q=100;w=60'}, now=0.0)
    RateHint(remaining=0, reset=5.0, limit=100)
    >>> parse_rate_limit({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "1700000030"},
    ...                  now=1700000000.0)
    RateHint(remaining=7, reset=30.0, limit=None)
    >>> parse_rate_limit({"X-RateLimit-Remaining": "lots"}, now=0.0) is None
    True
    """
    value = headers.get("RateLimit")
    if value is not None:
        return _structured(value, headers.get("RateLimit-Policy"), now)
    for prefix in ("RateLimit-", "X-RateLimit-"):
        remaining = _integer(headers.get(prefix + "Remaining"))
        if remaining is not None:
            reset = _reset(headers.get(prefix + "Reset"), now)
            return RateHint(remaining, reset, _integer(headers.get(prefix + "Limit")))
    return None


def _structured(value: str, policy: str | None, now: float) -> RateHint | None:
    """The ``RateLimit`` field (with its ``RateLimit-Policy``), in the draft's
    current syntax or the older drafts' ``limit=, remaining=, reset=``."""
    items = _items(value)
    if items is None:
        return None
    if items and all(name in ("limit", "remaining", "reset") for name, _ in items):
        old = {name: params.get("") for name, params in items}
        remaining = _integer(old.get("remaining"))
        if remaining is None:
            return None
        return RateHint(remaining, _reset(old.get("reset"), now), _integer(old.get("limit")))
    best: tuple[int, str, float | None] | None = None
    for name, params in items:
        remaining = _integer(params.get("r"))
        if remaining is None:
            continue
        if best is None or remaining < best[0]:
            best = (remaining, name, _reset(params.get("t"), now))
    if best is None:
        return None
    remaining, name, reset = best
    limit = None
    if policy is not None:
        for policy_name, params in _items(policy) or ():
            if policy_name == name:
                limit = _integer(params.get("q"))
                break
    return RateHint(remaining, reset, limit)


def _items(value: str) -> list[tuple[str, dict[str, str]]] | None:
    """A structured-field list (RFC 8941) read loosely: each member's name
    (its string or token, unquoted) and its parameters; a bare ``key=value``
    member is that key with the value as parameter ``""``. None for a field
    too long or with too many members."""
    if len(value) > MAX_FIELD:
        return None
    members = value.split(",")
    if len(members) > _MAX_ITEMS:
        return None
    items = []
    for member in members:
        name, *params = member.split(";")
        name = name.strip()
        parsed: dict[str, str] = {}
        if "=" in name and not name.startswith('"'):
            name, _, bare = name.partition("=")
            name = name.strip()
            parsed[""] = bare.strip()
        else:
            name = name.strip('"')
        for param in params:
            key, _, item = param.partition("=")
            parsed[key.strip()] = item.strip()
        items.append((name, parsed))
    return items


def _integer(value: str | None) -> int | None:
    """A non-negative integer header value, or None."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 13:
        return None
    number = int(text)
    return number if number <= _MAX_NUMBER else None


def _reset(value: str | None, now: float) -> float | None:
    """A reset as seconds from ``now``: a delay, or a Unix timestamp above 10^9."""
    if value is None:
        return None
    text = value.strip()
    if len(text) > 32 or not text.isascii():
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds > EPOCH_THRESHOLD:
        seconds -= now
    return max(seconds, 0.0)
