"""URL checks shared by the engine and the input readers."""

from __future__ import annotations

from yarl import URL

from fanout.models import ErrorKind, Failure

__all__ = ["FETCHABLE_SCHEMES", "parse_url"]

FETCHABLE_SCHEMES = frozenset({"http", "https"})
_FORBIDDEN = frozenset(" \t\r\n\x00\x0b\x0c\x7f")


def parse_url(text: str) -> URL | Failure:
    """Parse ``text`` as a fetchable URL, or say why it is not one.

    >>> parse_url("python://x").kind
    <ErrorKind.UNSUPPORTED_SCHEME: 'unsupported_scheme'>
    """
    if not text:
        return Failure(ErrorKind.INVALID_URL, "empty URL")
    if not _FORBIDDEN.isdisjoint(text) or any(ord(c) < 0x20 for c in text):
        return Failure(ErrorKind.INVALID_URL, "URL contains whitespace or control characters")
    try:
        url = URL(text)
        scheme = url.scheme.lower()
        host = url.host
        port = url.port
    except (ValueError, TypeError, UnicodeError) as exc:
        return Failure(ErrorKind.INVALID_URL, f"cannot parse URL: {exc}")
    if not scheme:
        return Failure(ErrorKind.INVALID_URL, "URL has no scheme (expected http:// or https://)")
    if scheme not in FETCHABLE_SCHEMES:
        return Failure(
            ErrorKind.UNSUPPORTED_SCHEME, f"unsupported scheme {scheme!r} (only http and https)"
        )
    if not host:
        return Failure(ErrorKind.INVALID_URL, "URL has no host")
    if port is None or not 0 < port < 65536:
        return Failure(ErrorKind.INVALID_URL, "URL has an invalid port")
    return url
