"""Keys that tell credentials apart without holding them.

A URL's ``user:password@`` must not reach anything fanout writes, yet two URLs
that differ only in their password are two different requests: a journal
must not take one for the other, and ``--out-dir`` must not save them under
one name. :func:`stored_key` gives such a URL a key that shows it with
``***@`` and ends with a slow, salted digest of what was hidden.
"""

from __future__ import annotations

import functools
import hashlib
from enum import IntEnum
from typing import Final

from fanout.urls import REDACTED, redact_text, redact_url

__all__ = ["SALT_BYTES", "KeySource", "stored_key"]

SALT_BYTES: Final = 16
"""The size of a salt: per journal, random."""


class KeySource(IntEnum):
    """Where an input key comes from, which says how it is stored."""

    GIVEN = 0
    """The user's own key (a JSONL request's ``key``): stored as it is."""
    URL = 1
    """A request's URL: its credentials are hidden."""
    LINE = 2
    """A rejected input line's text: every URL credential in it is hidden."""


# scrypt's interactive cost (RFC 7914 §2): about 50 ms and 16 MiB per distinct
# credential, paid once per journal thanks to the cache.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_DIGEST_BYTES: Final = 16
# parse_url refuses control characters and a rejected line's text has them
# escaped, so no key made from an input holds this mark by chance.
_MARK: Final = "\x00"


@functools.lru_cache(maxsize=1024)
def _digest(salt: bytes, secret: str) -> str:
    data = secret.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=1, dklen=_DIGEST_BYTES).hex()


def stored_key(text: str, source: KeySource, salt: bytes) -> str:
    """The key the journal stores for an input key: the key itself, unless
    it is a URL (or a rejected line) holding credentials.

    Then it is the text as records show it (``***@`` for each ``user:password@``),
    a NUL and the hex of scrypt over what was hidden (the userinfo of a URL, the
    whole text of a line), salted with the journal's salt. Cheap for keys
    without an ``@``; scrypt runs once per distinct credential and salt.

    >>> stored_key("http://h.example/a", KeySource.URL, b"salt")
    'http://h.example/a'
    >>> key = stored_key("http://bob:pw@h.example/a", KeySource.URL, b"salt")
    >>> shown, _, digest = key.partition(chr(0))
    >>> shown, len(digest)
    ('http://***@h.example/a', 32)
    """
    if source is KeySource.GIVEN or "@" not in text:
        return text
    if source is KeySource.URL:
        shown = redact_url(text)
        if shown == text:
            return text
        # redact_url swaps text[begin:at + 1] for REDACTED; the rest is alike on both sides.
        begin = shown.index(REDACTED)
        rest = len(shown) - begin - len(REDACTED)
        secret = "u" + text[begin : len(text) - rest - 1]
    else:
        shown = redact_text(redact_url(text))
        if shown == text:
            return text
        secret = "t" + text
    return shown + _MARK + _digest(salt, secret)
