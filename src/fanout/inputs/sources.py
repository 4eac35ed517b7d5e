"""Readers that turn inputs (URL lists, JSONL request files, stdin) into Requests.

Every reader is lazy: it reads one line at a time with a bounded
``readline`` and yields as it goes, so memory stays flat however many lines
an input has, and an over-long line costs at most ``max_line`` bytes.

A line that cannot become a request is not an exception: it comes out as a
:class:`Rejected` value carrying its 1-based line number, a safe rendering of
the text and the reason, so a run reports it and goes on.

>>> import io
>>> [type(x).__name__ for x in read_url_lines(io.BytesIO(b"http://a.example/\\nftp://b\\n"))]
['Request', 'Rejected']
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import orjson

from fanout.errors import ConfigError, SourceError
from fanout.httpsyntax import TOKEN_RE
from fanout.models import ErrorKind, Failure, Request
from fanout.safetext import shown
from fanout.urls import parse_request_url, parse_url, redact_text, redact_url

__all__ = [
    "Deduper",
    "Rejected",
    "check_request",
    "check_url",
    "open_input",
    "read_jsonl_requests",
    "read_url_lines",
    "shown_input",
]

_BOM: Final = b"\xef\xbb\xbf"
_DISCARD_CHUNK: Final = 64 * 1024
_SHOWN_CHARS: Final = 200
_INPUT_BUFFER: Final = 256 * 1024


_JSONL_FIELDS: Final = frozenset({"url", "method", "headers", "body", "key", "meta"})
# A credential header's value in a JSONL line, as a rejected line is shown.
_CREDENTIAL_FIELD_RE: Final = re.compile(
    r'("(?:authorization|proxy-authorization|cookie)"\s*:\s*")(?:[^"\\]|\\.)*',
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that cannot become a request.

    ``line`` is 1-based; ``text`` is the line as it may be shown safely (bytes
    that are not UTF-8 and control characters escaped, cut to about 200
    characters); ``kind`` and ``reason`` say why it was refused.

    >>> Rejected(3, "ftp://x", ErrorKind.UNSUPPORTED_SCHEME, "unsupported scheme 'ftp'").line
    3
    """

    line: int
    text: str
    kind: ErrorKind
    reason: str


def shown_input(raw: bytes | str) -> str:
    """Render input text so it is safe to print: escaped and cut to about 200
    characters, the value of an Authorization, Proxy-Authorization or Cookie
    field of a JSONL line hidden. A URL's ``user:password@`` is hidden where
    the text is written (so a journal can still tell passwords apart), but
    before a cut: a cut before a long password's "@" would leave its start
    for all to see."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    text = _CREDENTIAL_FIELD_RE.sub(r"\1***", text)
    bounded = shown(text, _SHOWN_CHARS)
    if "@" in text and bounded.endswith("…"):
        bounded = shown(redact_text(redact_url(text)), _SHOWN_CHARS)
    return bounded


def check_url(text: str) -> Failure | None:
    """Say why ``text`` is not a fetchable URL (see :func:`fanout.urls.parse_url`),
    or return None when it is.

    >>> check_url("https://example.com/a?b=1") is None
    True
    """
    parsed = parse_url(text)
    return parsed if isinstance(parsed, Failure) else None


def check_request(request: Request) -> Failure | None:
    """:func:`check_url` of ``request.url``; the parsed URL is kept on the request
    for the engine, which then does not parse it again."""
    parsed = parse_request_url(request)
    return parsed if isinstance(parsed, Failure) else None


def _lines(stream: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None, bytes]]:
    """Yield ``(number, content, head)`` for each line, without its line ending.

    ``content`` is None when the line is longer than ``max_line`` bytes; then
    ``head`` is what was read of it (about ``max_line`` bytes, for display) and
    the rest was read and thrown away in bounded chunks.
    """
    if max_line < 1:
        raise ConfigError(f"max_line must be >= 1, got {max_line!r}")
    number = 0
    while True:
        # Two bytes over the limit leave room for CRLF after a line of exactly max_line.
        raw = stream.readline(max_line + 2)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        ended = raw.endswith(b"\n")
        if not ended and len(raw) >= max_line + 2:
            while True:
                rest = stream.readline(_DISCARD_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None, raw.rstrip(b"\r")  # all of it: credentials are hidden first
            continue
        content = raw[:-1] if ended else raw
        if content.endswith(b"\r"):
            content = content[:-1]
        if len(content) > max_line:
            yield number, None, content
        else:
            yield number, content, content


def _decode(number: int, content: bytes, kind: ErrorKind) -> str | Rejected:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(
            number,
            shown_input(content),
            kind,
            f"not valid UTF-8 (byte 0x{content[exc.start]:02x} at offset {exc.start})",
        )


def _too_long(number: int, head: bytes, max_line: int, kind: ErrorKind) -> Rejected:
    reason = f"line longer than {max_line} bytes"
    return Rejected(number, shown_input(head), kind, reason)


def _texts(
    stream: BinaryIO, max_line: int, kind: ErrorKind
) -> Iterator[tuple[int, str | Rejected]]:
    """``(number, text)`` of each line of ``stream``, decoded; a line too long
    or not UTF-8 is a :class:`Rejected` of ``kind`` instead of its text."""
    for number, content, head in _lines(stream, max_line):
        if content is None:
            yield number, _too_long(number, head, max_line, kind)
        else:
            yield number, _decode(number, content, kind)


def read_url_lines(stream: BinaryIO, *, max_line: int = 64 * 1024) -> Iterator[Request | Rejected]:
    """Read one URL per line and yield a Request or a Rejected for each.

    Surrounding whitespace is stripped; blank lines and lines starting with
    ``#`` are skipped; a UTF-8 BOM at the start and CRLF line endings are
    accepted. A good line becomes ``Request(url=text, meta={"line": n})``
    (``n`` 1-based); a line that is not UTF-8, is longer than ``max_line``
    bytes or fails :func:`check_url` becomes a :class:`Rejected`. At most
    ``max_line`` + 2 bytes of a line are held in memory.

    >>> import io
    >>> next(read_url_lines(io.BytesIO(b"# list\\n  https://a.example/x \\r\\n")))
    Request(url='https://a.example/x', method='GET', headers=mappingproxy({}), body=None, \
key=None, meta={'line': 2}, idempotent=None, send_credentials=True)
    """
    for number, decoded in _texts(stream, max_line, ErrorKind.INVALID_URL):
        if isinstance(decoded, Rejected):
            yield decoded
            continue
        text = decoded.strip()
        if not text or text.startswith("#"):
            continue
        request = Request(url=text, meta={"line": number})
        failure = check_request(request)
        if failure is None:
            yield request
        else:
            yield Rejected(number, shown_input(text), failure.kind, failure.message)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _parse_headers(value: object) -> Mapping[str, str] | str:
    """Return the headers, or a reason they are refused."""
    if not isinstance(value, dict):
        return f"'headers' must be an object, got {_json_type(value)}"
    headers: dict[str, str] = {}
    for name, field_value in value.items():
        if not TOKEN_RE.fullmatch(name):
            return f"invalid header name {name[:80]!r}"
        if not isinstance(field_value, str):
            return f"header {name!r} must be a string, got {_json_type(field_value)}"
        # RFC 9110 §5.5: CR, LF and NUL in a field value would split or corrupt the message.
        if any(c in field_value for c in "\r\n\x00"):
            return f"header {name!r} contains CR, LF or NUL"
        headers[name] = field_value
    return headers


def _extra_fields(obj: dict[str, Any]) -> tuple[object, str | None]:
    """The line's user data: its ``meta`` value with its unknown fields added
    (None when it has neither); or None and the reason the line is refused."""
    unknown = {name: value for name, value in obj.items() if name not in _JSONL_FIELDS}
    meta = obj.get("meta")
    if not unknown:
        data: object = meta
    elif meta is None:
        data = unknown
    elif not isinstance(meta, dict):
        names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:5])
        got = _json_type(meta)
        return None, f"'meta' must be an object to hold the other field(s) {names}, got {got}"
    elif clash := sorted(unknown.keys() & meta.keys()):
        return None, f"field {clash[0][:40]!r} is given both at the top level and in 'meta'"
    else:
        data = {**meta, **unknown}
    try:  # nested deeper than a record can hold (orjson writes 254 levels; a record adds 2)
        orjson.dumps([[data]])
    except orjson.JSONEncodeError:
        return None, "'meta' is nested too deeply"
    return data, None


def _parse_request(number: int, obj: object) -> Request | str:
    """Build a Request from one decoded JSON value, or return why not."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {_json_type(obj)}"
    if "url" not in obj:
        return "missing required field 'url'"
    url = obj["url"]
    if not isinstance(url, str):
        return f"'url' must be a string, got {_json_type(url)}"
    method = obj.get("method")
    if method is None:
        method = "GET"
    elif not isinstance(method, str) or not TOKEN_RE.fullmatch(method):
        return f"'method' must be an HTTP method token, got {shown_input(repr(method))}"
    headers: Mapping[str, str] = {}
    if obj.get("headers") is not None:
        parsed = _parse_headers(obj["headers"])
        if isinstance(parsed, str):
            return parsed
        headers = parsed
    body: bytes | None = None
    if obj.get("body") is not None:
        text = obj["body"]
        if not isinstance(text, str):
            return f"'body' must be a string, got {_json_type(text)}"
        body = text.encode("utf-8")
    key = obj.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        return "'key' must be a non-empty string"
    extra, refused = _extra_fields(obj)
    if refused is not None:
        return refused
    meta: dict[str, Any] = {"line": number}
    if extra is not None:
        meta["meta"] = extra
    try:
        return Request(url=url, method=method, headers=headers, body=body, key=key, meta=meta)
    except ConfigError as exc:  # a header value with a control character other than CR, LF, NUL
        return str(exc)


def read_jsonl_requests(
    stream: BinaryIO, *, max_line: int = 1024 * 1024
) -> Iterator[Request | Rejected]:
    """Read one JSON request object per line and yield a Request or a Rejected for each.

    Each line is an object with the fields ``url`` (required), ``method``
    (default GET), ``headers`` (an object of strings), ``body`` (a string,
    sent UTF-8 encoded), ``key`` (a string) and ``meta`` (any JSON value);
    ``null`` for an optional field means it is not given. Any other field
    (an ``id``, say) is user data kept with ``meta``: the line's data is its
    ``meta`` with the other fields added (an object of the other fields when
    it has no ``meta``). The Request's meta is ``{"line": n}`` plus
    ``"meta"``: that data, when there is any; it reaches the output record.
    Blank lines are skipped. A line that is malformed JSON, is not an object,
    lacks ``url``, has a field of the wrong type, other fields beside a
    ``meta`` that is not an object (or one in both places), or is not UTF-8
    is rejected with kind ``BAD_INPUT`` and a specific reason; a bad URL is
    rejected with the kind :func:`check_url` gives. The run goes on.

    >>> import io
    >>> line = b'{"url": "http://a.example/", "key": "a", "id": 7}'
    >>> r = next(read_jsonl_requests(io.BytesIO(line)))
    >>> (r.url, r.key, r.meta)
    ('http://a.example/', 'a', {'line': 1, 'meta': {'id': 7}})
    """
    for number, decoded in _texts(stream, max_line, ErrorKind.BAD_INPUT):
        if isinstance(decoded, Rejected):
            yield decoded
            continue
        if not decoded.strip():
            continue
        try:
            obj = orjson.loads(decoded)
        except orjson.JSONDecodeError as exc:
            yield Rejected(
                number, shown_input(decoded), ErrorKind.BAD_INPUT, f"invalid JSON: {exc}"
            )
            continue
        parsed = _parse_request(number, obj)
        if isinstance(parsed, str):
            yield Rejected(number, shown_input(decoded), ErrorKind.BAD_INPUT, parsed)
            continue
        failure = check_request(parsed)
        if failure is None:
            yield parsed
        else:
            yield Rejected(number, shown_input(parsed.url), failure.kind, failure.message)


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """Open an input for reading in binary mode; ``"-"`` means standard input.

    Standard input is not closed at exit. A file that is missing, unreadable
    or a directory raises :class:`~fanout.errors.SourceError` with a one-line
    message naming it.

    >>> with open_input("/nonexistent/urls.txt") as f:  # doctest: +ELLIPSIS
    ...     pass
    Traceback (most recent call last):
    fanout.errors.SourceError: cannot read input file '/nonexistent/urls.txt': No such file...
    """
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb", buffering=_INPUT_BUFFER)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise SourceError(f"cannot read input file {path!r}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


class Deduper:
    """Remembers which request ids were seen in this run, and on which line.

    Keys are compared exactly as written (after the readers strip surrounding
    whitespace): ``http://a.example/x#top`` and ``http://a.example/x``, or
    ``HTTP://A.example/x`` and ``http://a.example/x``, are different keys and
    are both fetched. Each key costs a 16-byte BLAKE2b digest and an int, not
    the string itself: about 120 bytes per distinct key in CPython.

    >>> d = Deduper()
    >>> d.first_line_of("http://a.example/", 1) is None
    True
    >>> d.first_line_of("http://a.example/", 7)
    1
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}

    def __len__(self) -> int:
        """The number of distinct keys seen."""
        return len(self._seen)

    def first_line_of(self, key: str, line: int) -> int | None:
        """Return the line where ``key`` was first seen, or record it and return None."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = self._seen.get(digest)
        if first is None:
            self._seen[digest] = line
        return first
