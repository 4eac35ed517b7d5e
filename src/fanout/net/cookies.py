"""The opt-in cookie jar (``FetcherConfig.cookies``, ``--cookies``): one per
Fetcher, kept per origin.

A cookie an origin (scheme, host, port) sets goes back to that origin only:
stricter than a browser, which shares cookies across ports, and with
subdomains when a cookie names its domain. fanout fetches URLs it did not
choose, many of them from servers it does not trust, so one origin never
reads what another set. Within an origin aiohttp's :class:`aiohttp.CookieJar`
applies its rules (path, expiry, Max-Age, Secure) and its limits on how many
cookies it keeps; at most :data:`MAX_ORIGINS` origins keep cookies, and at
most :data:`MAX_COOKIES` cookies over all of them (aiohttp bounds one jar only),
the origin used least recently dropped first. Hosts that are IP addresses keep cookies
too (``unsafe=True``: safe here, as no origin shares them).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from http.cookies import BaseCookie, Morsel, SimpleCookie
from types import MappingProxyType
from typing import Final

import aiohttp
from aiohttp.abc import AbstractCookieJar, ClearCookiePredicate
from aiohttp.typedefs import LooseCookies
from yarl import URL

from fanout.urls import HostKey, host_key

__all__ = ["MAX_COOKIES", "MAX_ORIGINS", "OriginCookieJar"]

MAX_ORIGINS: Final = 10_000
# aiohttp keeps a cookie of at most 4 KiB (name and value): about 100 MiB at worst.
MAX_COOKIES: Final = 20_000
_NO_URL: Final = URL()


class OriginCookieJar(AbstractCookieJar):
    """An aiohttp cookie jar that holds one :class:`aiohttp.CookieJar` per origin
    and hands each request the cookies of its own origin only (see the module)."""

    def __init__(self, max_origins: int = MAX_ORIGINS, max_cookies: int = MAX_COOKIES) -> None:
        super().__init__()
        self._max_origins = max_origins
        self._max_cookies = max_cookies
        self._jars: OrderedDict[HostKey, aiohttp.CookieJar] = OrderedDict()
        self._held = 0  # the cookies of all jars, kept as they change (summing is O(origins))

    @property
    def origins(self) -> int:
        """How many origins have a jar now."""
        return len(self._jars)

    @property
    def unsafe(self) -> bool:
        return True

    @property
    def quote_cookie(self) -> bool:
        return True

    @property
    def cookies(self) -> MappingProxyType[tuple[str, str], SimpleCookie]:
        merged: dict[tuple[str, str], SimpleCookie] = {}
        for jar in self._jars.values():
            for key, cookie in jar.cookies.items():
                merged.setdefault(key, SimpleCookie()).update(cookie)
        return MappingProxyType(merged)

    @property
    def host_only_cookies(self) -> frozenset[tuple[str, str, str]]:
        return frozenset().union(*(jar.host_only_cookies for jar in self._jars.values()))

    def __len__(self) -> int:
        return sum(len(jar) for jar in self._jars.values())

    def __iter__(self) -> Iterator[Morsel[str]]:
        return itertools.chain.from_iterable(self._jars.values())

    def clear(self, predicate: ClearCookiePredicate | None = None) -> None:
        for jar in self._jars.values():
            jar.clear(predicate)
        self._held = len(self)

    def clear_domain(self, domain: str) -> None:
        for jar in self._jars.values():
            jar.clear_domain(domain)
        self._held = len(self)

    def update_cookies(self, cookies: LooseCookies, response_url: URL = _NO_URL) -> None:
        """Keep the cookies ``response_url``'s origin set, in its own jar."""
        jar = self._jar(response_url)
        if jar is not None:
            before = len(jar)
            jar.update_cookies(cookies, response_url)
            self._bound(len(jar) - before)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: URL) -> None:
        """Keep the cookies of a response's Set-Cookie headers, in its origin's jar."""
        if headers:
            jar = self._jar(response_url)
            if jar is not None:
                before = len(jar)
                jar.update_cookies_from_headers(headers, response_url)
                self._bound(len(jar) - before)

    def filter_cookies(self, request_url: URL) -> BaseCookie[str]:
        """The cookies to send to ``request_url``: its origin's, by their rules."""
        key = host_key(request_url) if request_url.raw_host else None
        jar = None if key is None else self._jars.get(key)
        if jar is None:
            return SimpleCookie()
        self._jars.move_to_end(key)  # type: ignore[arg-type]
        before = len(jar)
        cookies = jar.filter_cookies(request_url)
        self._held += len(jar) - before  # expired ones were dropped
        return cookies

    def _jar(self, url: URL) -> aiohttp.CookieJar | None:
        """The jar of ``url``'s origin, made if need be (dropping the one used
        least recently past the bound); None for a URL with no origin."""
        if not url.absolute or not url.raw_host:
            return None
        key = host_key(url)
        jar = self._jars.get(key)
        if jar is not None:
            self._jars.move_to_end(key)
            return jar
        jar = self._jars[key] = aiohttp.CookieJar(unsafe=True)
        if len(self._jars) > self._max_origins:
            self._held -= len(self._jars.popitem(last=False)[1])
        return jar

    def _bound(self, added: int) -> None:
        """Count ``added`` cookies more, and drop the origins used least recently
        while the jars hold more than ``max_cookies`` in all (the last one used,
        just updated, stays)."""
        self._held += added
        while self._held > self._max_cookies and len(self._jars) > 1:
            self._held -= len(self._jars.popitem(last=False)[1])
