"""Links to a next page: the ``rel="next"`` target of ``Link`` headers
(RFC 8288), and whether a next page shares the first page's origin (then,
and only then, the first page's credentials go along)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from yarl import URL

from fanout.models import Failure
from fanout.urls import host_key, parse_url

_LINK_RE: Final = re.compile(r"<([^>]*)>([^<]*)")
_REL_RE: Final = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def _same_origin(first: URL | Failure, second: str) -> bool:
    """Whether a request's parsed URL and another URL have one origin (scheme,
    canonical host and port)."""
    other = parse_url(second)
    if isinstance(first, Failure) or isinstance(other, Failure):
        return False
    return host_key(first) == host_key(other)


def _link_next(headers: Mapping[str, str], base: str) -> str | None:
    """The target of the first ``rel="next"`` link in the Link headers (RFC 8288 §3)."""
    getall = getattr(headers, "getall", None)
    values: list[str] = list(getall("Link", [])) if callable(getall) else []
    if not values:
        value = headers.get("Link") or headers.get("link")
        values = [value] if value else []
    for value in values:
        for target, params in _LINK_RE.findall(value):
            for quoted, bare in _REL_RE.findall(params):
                if "next" in (quoted or bare).lower().split():
                    try:
                        return str(URL(base).join(URL(target.strip())))
                    except ValueError:
                        return None
    return None
