"""robots.txt (RFC 9309), for ``robots=True`` (``--robots``).

Each host's robots.txt (per scheme, host and port) is fetched once, before the
host's first request, through the Fetcher's transport (on aiohttp, its
session: its guard, proxy and connector; on curl, its multi), and parsed
with Protego; URLs are matched against the product token of the User-Agent
(what comes before its first "/"). The rules of at most :data:`MAX_HOSTS`
hosts, from at most :data:`MAX_TOTAL_BYTES` of robots.txt files in all, are
kept, least recently used dropped first (a host dropped is fetched again
when it comes back).

- A 2xx: its rules, from at most :data:`MAX_BYTES` of the file (RFC 9309 §2.5
  asks for at least 500 KiB; what is past it is not read), kept for
  :data:`KEEP_FOR` (§2.4: at most 24 hours).
- A 4xx other than 429: no robots.txt, everything is allowed (§2.3.1.3).
- A 5xx, a 429, or no answer (connection failure, garbage, the deadline of
  :data:`DEADLINE` seconds, or the attempt's total timeout if shorter): the
  host is disallowed as a whole (§2.3.1.4) for :data:`RETRY_AFTER` seconds,
  then robots.txt is fetched again.
- Redirects are followed, up to :data:`MAX_REDIRECTS` (§2.3.1.2); more,
  or one to a host the guard refuses, counts as no robots.txt.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from protego import Protego
from yarl import URL

from fanout.models import ErrorKind, Failure
from fanout.net.transport import REDIRECT_STATUSES, AddressDenied
from fanout.safetext import shown
from fanout.urls import HostKey, parse_url

if TYPE_CHECKING:
    from fanout.net.proxy import Proxy

__all__ = [
    "DEADLINE",
    "KEEP_FOR",
    "MAX_BYTES",
    "MAX_HOSTS",
    "MAX_REDIRECTS",
    "MAX_TOTAL_BYTES",
    "RETRY_AFTER",
    "Get",
    "RobotsCache",
    "Rules",
    "fetch_rules",
    "product_token",
    "robots_url",
    "session_get",
]

MAX_BYTES: Final = 512 * 1024
DEADLINE: Final = 10.0
KEEP_FOR: Final = 24 * 3600.0
RETRY_AFTER: Final = 300.0
MAX_HOSTS: Final = 10_000
# The robots.txt text behind the rules kept, over all hosts: 10,000 files of
# 512 KiB, parsed, would hold gigabytes.
MAX_TOTAL_BYTES: Final = 64 * 1024 * 1024
MAX_REDIRECTS: Final = 5
# A Crawl-delay above this is taken as this: the host is paced, not stopped.
_LONGEST_DELAY: Final = 3600.0


def product_token(user_agent: str) -> str:
    """The product token of a User-Agent: ``fanout`` of ``fanout/1.0 (+url)``."""
    token = user_agent.strip().split("/", 1)[0].split(" ", 1)[0]
    return token or "*"


def robots_url(key: HostKey) -> URL:
    """The robots.txt URL of the host ``key`` (scheme, host, port)."""
    scheme, host, port = key
    return URL.build(scheme=scheme, host=host, port=port, path="/robots.txt")


class Rules:
    """What a host's robots.txt says to fanout's product token, until ``expires``
    (on the Fetcher's clock). ``rate``: the requests per second its
    ``Crawl-delay`` or ``Request-rate`` allow (the stricter), or None;
    ``size``, the bytes of robots.txt they were parsed from."""

    __slots__ = ("_parser", "_refusal", "_token", "expires", "rate", "size", "source")

    def __init__(
        self,
        source: str,
        token: str,
        expires: float,
        parser: Protego | None = None,
        refusal: str | None = None,
        size: int = 0,
    ) -> None:
        self.source = source
        self.size = size
        self.expires = expires
        self._token = token
        self._parser = parser
        self._refusal = refusal  # the whole host is disallowed, and why
        self.rate = None if parser is None else _rate(parser, token)

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        if self._refusal is not None:
            return self._refusal
        parser = self._parser
        if parser is None or parser.can_fetch(url, self._token):
            return None
        return f"disallowed by {self.source} for {self._token}"


def _rate(parser: Protego, token: str) -> float | None:
    rates = []
    delay = parser.crawl_delay(token)
    if delay is not None and math.isfinite(delay) and delay > 0:
        rates.append(1.0 / min(delay, _LONGEST_DELAY))
    request_rate = parser.request_rate(token)
    if request_rate is not None and request_rate.requests > 0 and request_rate.seconds > 0:
        rates.append(max(request_rate.requests / request_rate.seconds, 1.0 / _LONGEST_DELAY))
    return min(rates) if rates else None


class RobotsCache:
    """The rules of at most ``size`` hosts, parsed from at most ``max_bytes``
    of robots.txt in all, least recently used dropped first."""

    __slots__ = ("_bytes", "_max_bytes", "_rules", "_size")

    def __init__(self, size: int = MAX_HOSTS, max_bytes: int = MAX_TOTAL_BYTES) -> None:
        self._rules: OrderedDict[HostKey, Rules] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._rules)

    def get(self, key: HostKey, now: float) -> Rules | None:
        """The rules in force for ``key``, or None when they must be fetched."""
        rules = self._rules.get(key)
        if rules is None:
            return None
        if rules.expires <= now:
            del self._rules[key]
            self._bytes -= rules.size
            return None
        self._rules.move_to_end(key)
        return rules

    def put(self, key: HostKey, rules: Rules) -> None:
        old = self._rules.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._rules[key] = rules
        self._bytes += rules.size
        while len(self._rules) > self._size or (
            self._bytes > self._max_bytes and len(self._rules) > 1
        ):
            self._bytes -= self._rules.popitem(last=False)[1].size


# One GET of a robots.txt URL, redirects not followed: its status, the target
# of a redirect (its Location) or None, and the first MAX_BYTES of its body
# for a 2xx (empty otherwise). Raises what the transport raises.
Get = Callable[[URL], Awaitable[tuple[int, str | None, bytes]]]


def session_get(
    session: aiohttp.ClientSession,
    *,
    headers: Mapping[str, str] | None = None,
    skip_headers: tuple[str, ...] = (),
    proxy_for: Callable[[HostKey], Proxy | None] | None = None,
) -> Get:
    """The :data:`Get` of robots.txt on an aiohttp ``session``: ``headers`` sent,
    the session's ``skip_headers`` not, through the proxy ``proxy_for`` gives."""

    async def get(url: URL) -> tuple[int, str | None, bytes]:
        options: dict[str, Any] = {"allow_redirects": False, "headers": headers}
        if skip_headers:
            options["skip_auto_headers"] = skip_headers
        if proxy_for is not None:
            proxy = proxy_for((url.scheme, url.raw_host or "", url.port or 0))
            if proxy is not None:
                options = proxy.apply(options, url)
        response = await session.get(url, **options)
        try:
            status = response.status
            if status in REDIRECT_STATUSES:
                return status, response.headers.get("Location"), b""
            if not 200 <= status < 300:
                return status, None, b""
            body = bytearray()
            while len(body) < MAX_BYTES:
                chunk = await response.content.read(MAX_BYTES - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) >= MAX_BYTES:
                response.close()  # the rest is not read (RFC 9309 §2.5)
            return status, None, bytes(body)
        finally:
            response.release()

    return get


async def fetch_rules(
    get: Get,
    key: HostKey,
    token: str,
    now: Callable[[], float],
    *,
    deadline: float,
    check_host: Callable[[str], str | None] | None = None,
) -> Rules:
    """Fetch (with ``get``: :func:`session_get`, or the curl transport's) and
    parse the robots.txt of ``key``; never raises but for cancellation.
    ``now`` is the clock the rules' expiry is on; ``check_host`` the guard's
    host check of a redirect's target."""
    source = robots_url(key)
    shown_source = shown(str(source))
    try:
        async with asyncio.timeout(deadline):
            return await _fetch(get, source, token, now, check_host)
    except TimeoutError:
        problem = f"no answer within {deadline:g} s"
    except Exception as exc:  # any failure to fetch it: the host is unreachable for now
        if _denied(exc):
            # the guard refuses the host: its requests will be ``denied``, as without robots
            return Rules(shown_source, token, now() + RETRY_AFTER)
        problem = shown(str(exc) or type(exc).__name__)
    return _unreachable(shown_source, token, now(), problem)


def _denied(exc: Exception) -> bool:
    """Whether ``exc`` is the guard's refusal (aiohttp's, or a transport's ``denied`` Failure)."""
    if isinstance(exc, AddressDenied) or isinstance(getattr(exc, "os_error", None), AddressDenied):
        return True
    failure = getattr(exc, "failure", None)
    return isinstance(failure, Failure) and failure.kind is ErrorKind.DENIED


def _unreachable(source: str, token: str, now: float, problem: str) -> Rules:
    refusal = (
        f"disallowed: {source} could not be fetched ({problem});"
        f" the host is tried again after {RETRY_AFTER:g} s"
    )
    return Rules(source, token, now + RETRY_AFTER, refusal=refusal)


async def _fetch(
    get: Get,
    url: URL,
    token: str,
    now: Callable[[], float],
    check_host: Callable[[str], str | None] | None,
) -> Rules:
    source = shown(str(url))
    allow_all = Rules(source, token, now() + KEEP_FOR)
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = await get(url)
        if location is not None:
            target = _redirect(url, location)
            if target is None or (
                check_host is not None and check_host(target.raw_host or "") is not None
            ):
                return allow_all
            url = target
            continue
        if status == 429 or status >= 500:
            reason = f"HTTP {status}"
            return _unreachable(source, token, now(), reason)
        if status >= 300:  # 4xx, or a 3xx not followed: no robots.txt
            return allow_all
        try:
            parser = Protego.parse(body.decode("utf-8", errors="replace"))
        except Exception:  # a file Protego cannot parse at all says nothing
            return allow_all
        return Rules(source, token, now() + KEEP_FOR, parser, size=len(body))
    return allow_all  # more than MAX_REDIRECTS redirects (RFC 9309 §2.3.1.2)


def _redirect(base: URL, location: str) -> URL | None:
    """Where a robots.txt redirect goes, when it is a fetchable http(s) URL."""
    try:
        target = URL(location)
        if not target.absolute:
            target = base.join(target)
    except (ValueError, TypeError):
        return None
    parsed = parse_url(str(target.with_fragment(None)))
    return None if isinstance(parsed, Failure) else parsed
