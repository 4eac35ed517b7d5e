"""What an extracted JSON value counts as: a number for the statistics
(:func:`_number`), a group key (:func:`_group_key`, ordered by :func:`_group_tag`),
a value the top list can hold (:func:`_writable`).

The rules, which ``docs/aggregate.md`` states for users too:

- **Values.** A field's value counts when it is a JSON number. ``null`` or an
  absent key counts as ``missing``; anything else (a string, a boolean, an
  object, a JMESPath error on that data, such as one too deep for it)
  counts as ``wrong_type``. Integers past 64 bits count as floats, as the
  JSON parser reads them; a number past the float range (``"1e400"`` via
  ``to_number``, a 400-digit string) is ``wrong_type``. A field whose value
  is a list contributes each element (one level; an empty list is
  ``missing``), so ``items[].price`` works without ``each``.
- **Numbers in strings** are not numbers by default (``"12"`` is
  ``wrong_type``, so a schema drift shows up). With ``coerce_numbers=True`` a
  string that is a whole JSON-style decimal number (``"12"``, ``" -3.5e2 "``)
  counts as that number; ``"0x10"``, ``"1_000"``, ``"nan"`` and ``"inf"`` never do.
- **Groups.** ``group_by`` is evaluated on each record: strings, numbers and
  booleans are the group key as they are (``1`` and ``1.0`` are one group),
  a list or object becomes its compact JSON text (a string, keys sorted), and
  null or absent is the group ``None`` (shown as ``(missing)``), and so is
  a value that cannot be a key (nested past 254 levels, a number past the
  float range). Groups are
  sorted: numbers, then strings, then booleans, and ``(missing)`` last.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final, TypeAlias

import orjson

GroupKey: TypeAlias = str | int | float | bool | None
"""A group's key: the group-by value, compact JSON text for a list or object, None if missing."""

Number: TypeAlias = int | float

# A decimal number as JSON writes it, with an optional + and surrounding blanks.
_NUMBER_RE: Final = re.compile(r"\s*[-+]?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*")
# The integers orjson writes (and reads) as integers: past them, floats.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
# Levels of a report's JSON above a top record's values, with room to spare.
_VALUE_DEPTH: Final = 8

_MISSING_TAG: Final = 3


def _group_tag(key: GroupKey) -> tuple[int, Any]:
    """A sortable, hashable identity of a group key: numbers first, then strings,
    booleans, and missing last (``True`` and ``1`` are different groups)."""
    if key is None:
        return (_MISSING_TAG, 0)
    if isinstance(key, bool):
        return (2, key)
    if isinstance(key, int | float):
        return (0, key)
    return (1, key)


def _number(value: object, coerce: bool) -> Number | None:
    """``value`` as a finite number, or None when it is not one (see the module docs)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _from_int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if coerce and isinstance(value, str):
        match = _NUMBER_RE.fullmatch(value)
        if match is None:
            return None
        # int() of a long string is slow, and refused past 4300 digits.
        if match.group(1) is None and match.group(2) is None and len(value) <= 40:
            return _from_int(int(value))
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _from_int(value: int) -> Number | None:
    """An integer as the JSON parser would give it: a float past 64 bits, None
    past the float range (JMESPath functions can make such integers)."""
    if _INT_MIN <= value <= _INT_MAX:
        return value
    try:
        return float(value)
    except OverflowError:
        return None


def _writable(value: object) -> object:
    """A value for the top list: numbers as :func:`_number` makes them, and None
    for a list or object too deep for the report's JSON."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value, False)
    if not isinstance(value, list | dict):
        return value
    nested: object = value
    for _ in range(_VALUE_DEPTH):
        nested = [nested]
    try:
        orjson.dumps(nested)
    except orjson.JSONEncodeError:
        return None
    return value


def _group_key(value: object) -> GroupKey:
    """The group of a group-by value (JSONEncodeError, a TypeError, when too deep)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        return _number(value, False)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
