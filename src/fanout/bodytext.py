"""A response body as text: decoded with the charset its Content-Type names.

The charset is used when it names a text encoding Python knows (``utf-8``,
``latin1``, ``cp1252``, ``shift_jis``...); UTF-8 is used for anything else
(no charset, an unknown or over-long label, or a codec that is not a
character encoding, such as ``base64``, ``zlib``, ``rot13``, ``idna`` or
``unicode_escape``). Bytes that do not decode become U+FFFD. Used by the
records' ``text`` body mode and by :meth:`fanout.Result.text`.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import functools
import pkgutil
import re
from typing import Final

__all__ = ["decode_text"]

_CHARSET_RE: Final = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
# No charset label is longer; a longer one is not looked up at all.
_MAX_LABEL: Final = 40
# Codecs Python has that are not character encodings a server could mean: they
# raise on error handling (idna, punycode, undefined) or turn escapes into
# characters, warning on bad ones (the escape codecs).
_NOT_CHARSETS: Final = frozenset(
    {"idna", "punycode", "undefined", "unicode_escape", "raw_unicode_escape"}
)


@functools.cache
def _codec_modules() -> frozenset[str]:
    """The names of the codec modules in the ``encodings`` package."""
    return frozenset(module.name for module in pkgutil.iter_modules(encodings.__path__))


def _codec(label: str) -> codecs.CodecInfo | None:
    """The codec a charset label names, or None when it names no text encoding.

    Only a known name is ever passed to :func:`codecs.lookup`: the codec
    registry caches every name it is asked about, misses included, so looking
    up whatever labels servers send would grow the cache without bound.
    """
    if len(label) > _MAX_LABEL:
        return None
    name = encodings.normalize_encoding(label.lower())
    aliases = encodings.aliases.aliases
    name = aliases.get(name) or aliases.get(name.replace(".", "_")) or name
    if name in _NOT_CHARSETS or name not in _codec_modules():
        return None
    try:
        return codecs.lookup(name)
    except LookupError:  # a module that is no codec here (mbcs off Windows)
        return None


def _charset(content_type: str | None) -> str:
    """The codec name of the charset in a Content-Type, ``utf-8`` if none is usable."""
    if content_type:
        match = _CHARSET_RE.search(content_type)
        if match is not None:
            codec = _codec(match.group(1))
            if codec is not None:
                return codec.name
    return "utf-8"


def decode_text(body: bytes, content_type: str | None) -> str:
    """``body`` decoded as its Content-Type says (see the module docstring).

    >>> decode_text(b"caf\\xe9", "text/plain; charset=latin-1")
    'café'
    >>> decode_text(b"\\xff", "text/plain; charset=base64")
    '\\ufffd'
    """
    try:
        return body.decode(_charset(content_type), "replace")
    except (LookupError, UnicodeError):  # a bytes-to-bytes codec such as base64
        return body.decode("utf-8", "replace")
