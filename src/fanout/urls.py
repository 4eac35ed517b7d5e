"""The one check of what is a fetchable URL, shared by the engine and the input
readers, and the redaction of the credentials URLs carry (``user:password@``),
shared by every output."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

from yarl import URL

from fanout.models import ErrorKind, Failure, Request

__all__ = [
    "REDACTED",
    "HostKey",
    "canonical_host",
    "host_key",
    "parse_request_url",
    "parse_url",
    "redact_text",
    "redact_url",
]

HostKey = tuple[str, str, int]
"""A host as limits see it: (scheme, canonical host, port)."""

_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_HOST_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?")
_BAD_URL_CHAR_RE: Final = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
# WHATWG URL §3.5 "ends in a number": a last label that is an IPv4 part.
_NUMBER_LABEL_RE: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")


@functools.lru_cache(maxsize=4096)
def canonical_host(raw_host: str) -> str:
    """One spelling per host: an IPv6 address in its standard form (an
    IPv4-mapped one as its IPv4 address), a name without its final dot. yarl
    has already lower-cased the name. The legacy IPv4 forms (``127.1``,
    ``0x7f.0.0.1``, ``2130706433``) never get here: :func:`parse_url` refuses
    them, as aiohttp would not connect to them as addresses.

    >>> canonical_host("::ffff:7f00:1"), canonical_host("0:0::1"), canonical_host("a.example.")
    ('127.0.0.1', '::1', 'a.example')
    """
    if ":" in raw_host:
        try:
            address = ipaddress.IPv6Address(raw_host)
        except ValueError:  # a zone ("fe80::1%eth0") or garbage: as written
            return raw_host
        mapped = address.ipv4_mapped
        return str(address) if mapped is None else str(mapped)
    return raw_host.rstrip(".")


def host_key(url: URL) -> HostKey:
    """The :data:`HostKey` of a parsed URL: its scheme, canonical host and port
    (the scheme's default port when none is written)."""
    host = url.raw_host or ""
    if ":" in host or host.endswith("."):  # else already its one spelling
        host = canonical_host(host)
    return (url.scheme, host, url.port or 0)


@functools.lru_cache(maxsize=4096)  # hosts repeat across millions of URLs
def _check_host(host: str) -> str | None:
    """Return a reason when an (ASCII, IDNA-encoded) host name is malformed."""
    if ":" in host:  # an IPv6 literal; yarl validated it between the brackets
        return None
    name = host[:-1] if host.endswith(".") else host
    if not name:
        return "no host"
    if len(name) > 253:
        return "host name longer than 253 characters"
    for label in name.split("."):
        if not label:
            return f"empty label in host {host!r}"
        if len(label) > 63:
            return f"host label longer than 63 characters in {host[:80]!r}"
        if not _HOST_LABEL_RE.fullmatch(label):
            return f"invalid character in host {host[:80]!r}"
    if _NUMBER_LABEL_RE.fullmatch(name.rsplit(".", 1)[-1]) and not _is_dotted_quad(host):
        # A browser reads 127.1 or 0x7f.0.0.1 as 127.0.0.1; aiohttp refuses the
        # first and asks DNS for the second. Either way not the host it looks like.
        return f"host {host[:80]!r} ends in a number but is not an IPv4 address a.b.c.d"
    return None


def _is_dotted_quad(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)  # four decimal parts, no leading zero
    except ValueError:
        return False
    return True


def _check_scheme(text: str) -> Failure | None:
    """Why the scheme part of ``text`` is wrong, or None (http and https in any case)."""
    scheme_match = _SCHEME_RE.match(text)
    # "localhost:8080/x" is a host and a port, not the scheme "localhost".
    if scheme_match is None or text[scheme_match.end() :][:1].isdigit():
        return Failure(ErrorKind.INVALID_URL, "missing scheme (expected 'http://' or 'https://')")
    scheme = scheme_match.group(1).lower()
    if scheme not in ("http", "https"):
        return Failure(
            ErrorKind.UNSUPPORTED_SCHEME,
            f"unsupported scheme {scheme[:40]!r} (only http and https)",
        )
    if not text.startswith("//", scheme_match.end()):
        return Failure(ErrorKind.INVALID_URL, f"missing '//' after '{scheme}:'")
    return None


def parse_request_url(request: Request) -> URL | Failure:
    """:func:`parse_url` of ``request.url``, remembered on the request, so the
    input reader that checks a URL and the engine that fetches it parse it once."""
    memo = request._parsed
    if memo is not None and request._parsed_from is request.url:
        return memo
    parsed = request._parsed = parse_url(request.url)
    request._parsed_from = request.url
    return parsed


def parse_url(text: str) -> URL | Failure:
    """Parse ``text`` as a fetchable URL, or say why it is not one.

    A fetchable URL is absolute, has the scheme http or https, a host and a
    valid port, and no whitespace or control character anywhere. The check
    is pure and cheap (one yarl parse), so it can run for every request.

    >>> parse_url("https://example.com/a?b=1")
    URL('https://example.com/a?b=1')
    >>> parse_url("ftp://example.com/").kind
    <ErrorKind.UNSUPPORTED_SCHEME: 'unsupported_scheme'>
    >>> parse_url("example.com/a").message
    "missing scheme (expected 'http://' or 'https://')"
    """
    if not text:
        return Failure(ErrorKind.INVALID_URL, "empty URL")
    # The common case, printable ASCII with no space, skips the (slower) search.
    if not (text.isascii() and text.isprintable() and " " not in text):
        bad = _BAD_URL_CHAR_RE.search(text)
        if bad is not None:
            return Failure(
                ErrorKind.INVALID_URL,
                f"whitespace or control character {bad.group()!r} at position {bad.start()}",
            )
    if not text.startswith(("http://", "https://")):  # else the common case, checked
        failure = _check_scheme(text)
        if failure is not None:
            return failure
    try:
        url = URL(text)
        host = url.raw_host
        port = url.explicit_port
    except ValueError as exc:  # also UnicodeError from IDNA encoding
        return Failure(ErrorKind.INVALID_URL, f"cannot parse URL: {exc}")
    if not host:
        return Failure(ErrorKind.INVALID_URL, "no host")
    if port == 0:
        return Failure(ErrorKind.INVALID_URL, "port 0 cannot be connected to")
    reason = _check_host(host)
    if reason is not None:
        return Failure(ErrorKind.INVALID_URL, reason)
    return url


REDACTED: Final = "***@"

# Userinfo is everything up to the *last* "@" of the authority (WHATWG URL
# §4.4 authority state), so "u:p@ss@host" hides "p@ss" too. The authority is
# taken to end only at "/" (not at "?" or "#"): a sloppy password holding "?"
# or "#" is still hidden, at the price of over-redacting "http://h?a@b".
# Any number of slashes (or backslashes) may follow the scheme: "http:/u:pw@h/" is
# a typo whose password must still be hidden. A run that mixes them must end in
# "/", so a backslash that opens the user name ("http://\A:pw@h/") is not taken
# for part of the "//".
_URL_START_RE: Final = re.compile(r"\s*(?:(?:[A-Za-z][A-Za-z0-9+.\-]{0,31}:)?(?:[/\\]*/|\\+))?")
_SCHEME_SEP_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
_AUTHORITY_END_RE: Final = re.compile(r"[\s/]")


def redact_url(url: str) -> str:
    """Replace the credentials of a URL (``user:password@``) with ``***@``.

    Works on any string, valid URL or not: whatever stands before the last
    ``@`` of the authority-like start of the string is hidden. Typos are
    allowed for: any number of slashes after the scheme, and a "/" in the
    password when what precedes it cannot be a host and port.

    >>> redact_url("https://bob:s3cret@api.example/v1?x=1")
    'https://***@api.example/v1?x=1'
    >>> redact_url("http:/bob:pw@api.example/"), redact_url("http://bob:p/w@api.example/")
    ('http:/***@api.example/', 'http://***@api.example/')
    >>> redact_url("https://api.example/@bob")
    'https://api.example/@bob'
    """
    if "@" not in url:
        return url
    start = _URL_START_RE.match(url)
    begin = 0 if start is None else start.end()
    end = url.find("/", begin)
    at = url.rfind("@", begin, len(url) if end < 0 else end)
    if at < 0 and end >= 0 and _not_host_port(url[begin:end]):
        # "http://u:pa/ss@host/": a "/" in a password. The URL is invalid (its
        # port would be "pa"); hide up to the "@" that ends the userinfo.
        first = url.find("@", end)
        if first >= 0:
            stop = url.find("/", first)
            at = url.rfind("@", begin, len(url) if stop < 0 else stop)
    return url if at < 0 else url[:begin] + REDACTED + url[at + 1 :]


def _not_host_port(authority: str) -> bool:
    """Whether an authority without "@" cannot be ``host[:port]``: its port
    part is there and is not a number."""
    _, colon, port = authority.rpartition("]")[2].rpartition(":")
    return bool(colon and port) and not (port.isascii() and port.isdigit())


def redact_text(text: str) -> str:
    """Replace the credentials of every URL found in a free text with ``***@``.

    >>> redact_text("Cannot connect to 'http://bob:pw@host:81/x' (refused)")
    "Cannot connect to 'http://***@host:81/x' (refused)"
    """
    if "@" not in text:
        return text
    parts: list[str] = []
    copied = 0
    pos = 0
    while (match := _SCHEME_SEP_RE.search(text, pos)) is not None:
        begin = match.end()
        stop = _AUTHORITY_END_RE.search(text, begin)
        end = len(text) if stop is None else stop.start()
        at = text.rfind("@", begin, end)
        if at >= 0:
            parts += (text[copied:begin], REDACTED)
            copied = pos = at + 1
        else:
            # No "@" up to `end`; a URL starting inside this one can only have its
            # "://" at `end`, so its scheme starts at most 32 characters before.
            pos = max(begin, end - 32)
    parts.append(text[copied:])
    return "".join(parts)
