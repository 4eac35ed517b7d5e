"""URL templates: ``{a..b}`` ranges expanded lazily (:func:`expand`), and the
``{}`` id templates of the two-step fan-out (:func:`fill`, :func:`check_id_template`)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import quote

from fanout.errors import ConfigError

MAX_EXPANSION: Final = 1_000_000
"""The most URLs one template may expand to."""


_RANGE_RE: Final = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}")


def expand(template: str, *, max_urls: int = MAX_EXPANSION) -> Iterator[str]:
    """The URLs a template stands for, in order, produced lazily.

    ``{a..b}`` is an inclusive integer range (descending when ``a > b``;
    ``{01..10}`` pads with zeros like a shell); several ranges give every
    combination, the leftmost changing slowest. A template with no range is
    one URL. Any other ``{`` or ``}`` is an error: percent-encode literal braces
    (``%7B``, ``%7D``). More than ``max_urls`` URLs is an error too, raised
    here and not half-way through.

    >>> list(expand("http://127.0.0.1:8000/items/{1..3}"))
    ['http://127.0.0.1:8000/items/1', 'http://127.0.0.1:8000/items/2', \
'http://127.0.0.1:8000/items/3']
    >>> list(expand("http://h.test/{a,b}"))
    Traceback (most recent call last):
    fanout.errors.ConfigError: bad URL template 'http://h.test/{a,b}': '{' is not a range \
like {1..10} (write a literal brace as %7B)
    """
    parts = _RANGE_RE.split(template)
    literals = parts[0::3]
    for literal in literals:
        if "{}" in literal:
            raise ConfigError(
                f"bad URL template {template!r}: '{{}}' stands for an id only in a --from template"
            )
        for brace, code in (("{", "%7B"), ("}", "%7D")):
            if brace in literal:
                raise ConfigError(
                    f"bad URL template {template!r}: {brace!r} is not a range like {{1..10}}"
                    f" (write a literal brace as {code})"
                )
    ranges = [_range(a, b) for a, b in zip(parts[1::3], parts[2::3], strict=True)]
    count = math.prod(len(r) for r, _ in ranges)
    if count > max_urls:
        raise ConfigError(
            f"URL template {template!r} stands for {count:,} URLs, more than {max_urls:,}"
        )
    return _expanded(literals, ranges)


def _range(first: str, last: str) -> tuple[range, int]:
    a, b = int(first), int(last)
    padded = any(t.lstrip("-").startswith("0") and len(t.lstrip("-")) > 1 for t in (first, last))
    width = max(len(first), len(last)) if padded else 0
    return (range(a, b + 1) if a <= b else range(a, b - 1, -1)), width


def _expanded(literals: list[str], ranges: list[tuple[range, int]]) -> Iterator[str]:
    if not ranges:
        yield literals[0]
        return
    widths = [w for _, w in ranges]
    for combination in itertools.product(*(r for r, _ in ranges)):
        out = [literals[0]]
        for number, width, literal in zip(combination, widths, literals[1:], strict=True):
            out.append(f"{number:0{width}d}" if width else str(number))
            out.append(literal)
        yield "".join(out)


def fill(template: str, value: object) -> str | None:
    """``template`` with every ``{}`` replaced by the id ``value``, or None when the
    id cannot be one: integers (and whole floats) as they are, non-empty strings
    percent-encoded; booleans, other numbers, null, lists and objects are refused.

    >>> fill("http://127.0.0.1:8000/v0/item/{}.json", 8863)
    'http://127.0.0.1:8000/v0/item/8863.json'
    >>> fill("http://h.test/users/{}", "a b/c"), fill("http://h.test/{}", None)
    ('http://h.test/users/a%20b%2Fc', None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str) and value:
        text = quote(value, safe="")
    else:
        return None
    return template.replace("{}", text)


def check_id_template(template: str) -> None:
    """Raise :class:`ConfigError` unless ``template`` has ``{}`` and no other brace.

    >>> check_id_template("http://h.test/item/{}.json")
    >>> check_id_template("http://h.test/item/{id}")
    Traceback (most recent call last):
    fanout.errors.ConfigError: bad id template 'http://h.test/item/{id}': it needs '{}' \
where each id goes
    """
    if "{}" not in template:
        raise ConfigError(f"bad id template {template!r}: it needs '{{}}' where each id goes")
    rest = template.replace("{}", "")
    if "{" in rest or "}" in rest:
        raise ConfigError(
            f"bad id template {template!r}: only '{{}}' may be in braces"
            " (write a literal brace as %7B or %7D)"
        )
