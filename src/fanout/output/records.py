"""The JSONL output: one record per input line.

Schema (stable; new fields may be added, none are renamed or removed). Every
record has every field, in this order::

    url           str    the requested URL, credentials replaced by "***@"
    key           str    the request's key (its URL unless one was given);
                         null for a rejected input line
    line          int    1-based input line number, or null (library use)
    ok            bool   true when a response below 400 arrived; false on any
                         failure; null for a duplicate (nothing was fetched)
    status        int    the final HTTP status, or null when none arrived
    final_url     str    the URL after redirects (credentials redacted), or null
    attempts      int    HTTP exchanges started (0 when nothing was sent)
    elapsed_ms    float  milliseconds from first attempt to end, to 0.1 ms
    bytes         int    body size in bytes (decoded)
    content_type  str    the Content-Type header as received, or null
    sha256        str    hex SHA-256 of the body, or null
    path          str    where the body was saved (under --out-dir), or null
    error         obj    null, or {"kind": <ErrorKind value>, "message": str,
                         "cause": str or null}: cause is the type name of
                         the exception behind the failure, such as
                         "ClientConnectorError" or "TimeoutError" (null
                         when none was: an HTTP status, a bad URL...)
    duplicate_of  int    for a duplicate input line, the line of its first
                         occurrence (then ok is null); else null
    meta          any    the user data of a --jsonl-input line (its "meta"
                         with its other unknown fields added), or null
    body          any    only when a body mode is chosen: the body as text
                         ("text"), as a JSON value ("json"), or as base64
                         ("base64"); null when no whole body was read (a
                         failure such as connect or too_large), and see
                         below for "json"

For example::

    {"url":"https://a.example/x","key":"https://a.example/x","line":1,"ok":true,
     "status":200,"final_url":"https://a.example/x","attempts":1,"elapsed_ms":12.3,
     "bytes":1234,"content_type":"text/html; charset=utf-8","sha256":"9f86…",
     "path":"a.example/x-3fa9c2e1b04d5a67.html","error":null,"duplicate_of":null,
     "meta":null}

What ``body`` holds, for anything a server can send (a record is always
written, never an error):

- ``"text"``: the body decoded with the charset its Content-Type names, when
  that is a text encoding Python knows (``utf-8``, ``latin1``, ``cp1252``,
  ``shift_jis``...); UTF-8 for anything else (no charset, an unknown or
  over-long label, or a codec that is not a character encoding, such as
  ``base64``, ``zlib``, ``rot13``, ``idna`` or ``unicode_escape``). Bytes
  that do not decode become U+FFFD, and so does a lone surrogate.
- ``"json"``: the body's JSON value, written compactly, or null when the body
  is not JSON (not UTF-8, a byte order mark, NaN, numbers beyond the float
  range such as ``1e400`` or a 400-digit integer) or is nested deeper than
  254 levels, past which it cannot be written back. Integers beyond 64 bits
  are read as floats.
- ``"base64"``: the body's bytes in base64.

A body is at most ``Caps.max_bytes`` bytes (decoded); its text in a record
takes at most 6 bytes per body byte (``\\u0000`` for a NUL byte), base64
4 per 3. ``content_type`` is written as received, its bytes that are not
UTF-8 as U+FFFD.

Credentials in URLs never reach a record: ``user:password@`` in ``url``,
``key`` (when it is the URL), ``final_url`` and any URL inside an error
message is replaced by ``***@``. Query strings are written as they are.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final, Literal

import orjson

from fanout.bodytext import decode_text
from fanout.inputs.sources import Rejected
from fanout.models import Request, Result
from fanout.urls import redact_text, redact_url

__all__ = [
    "BodyMode",
    "duplicate_record",
    "json_line",
    "rejected_record",
    "result_record",
]

BodyMode = Literal["none", "text", "json", "base64"]
"""How a response body goes into a record: not at all, as text, as JSON or as base64."""


_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
# orjson writes no deeper; _scrub goes no deeper either.
_MAX_DEPTH: Final = 254


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None


def _json(body: bytes) -> orjson.Fragment | None:
    """``body``'s JSON value as compact JSON text, or None when it is not JSON or
    is too deep to write (orjson reads 1024 levels but writes only 254)."""
    try:
        return orjson.Fragment(orjson.dumps(orjson.loads(body)))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None


def _body_value(body: bytes | None, content_type: str | None, mode: BodyMode) -> object:
    if body is None:
        return None
    if mode == "text":
        return decode_text(body, content_type)
    if mode == "json":
        return _json(body)
    return base64.b64encode(body).decode("ascii")


def _line_of(request: Request) -> int | None:
    meta = request.meta
    if isinstance(meta, dict):
        line = meta.get("line")
        if isinstance(line, int) and not isinstance(line, bool):
            return line
    return None


def _meta_of(request: Request) -> object:
    """The user data of a request read from input (``meta["meta"]``, see
    :mod:`fanout.inputs.sources`). Any other meta (a library caller's) is not
    written: it need not be JSON."""
    meta = request.meta
    return meta.get("meta") if isinstance(meta, dict) else None


def _key_of(request: Request) -> str:
    return redact_url(request.url) if request.key is None else request.key


def result_record(
    result: Result, *, path: str | None = None, body_mode: BodyMode = "none"
) -> dict[str, object]:
    """Build the JSONL record of one Result (see the module docstring for the schema).

    ``path`` is where the body was saved, if it was. ``body_mode`` adds a
    ``body`` field: ``"text"`` decodes with the Content-Type charset (UTF-8
    when none or not a text encoding, undecodable bytes replaced), ``"json"``
    holds the body's JSON value as an :class:`orjson.Fragment` of its compact
    text (None when it is not JSON or too deep to write), ``"base64"`` encodes
    it. Nothing a server sends makes this raise, nor :func:`json_line` on the
    record.

    >>> from fanout.models import Request, Result
    >>> r = result_record(Result(request=Request("http://a:b@h.example/", meta={"line": 4}),
    ...                          status=204, final_url="http://a:b@h.example/", attempts=1))
    >>> (r["url"], r["line"], r["ok"], r["status"])
    ('http://***@h.example/', 4, True, 204)
    """
    content_type = _header(result.headers, "Content-Type")
    error = result.error
    record: dict[str, object] = {
        "url": redact_url(result.request.url),
        "key": _key_of(result.request),
        "line": _line_of(result.request),
        "ok": result.ok,
        "status": result.status,
        "final_url": None if result.final_url is None else redact_url(result.final_url),
        "attempts": result.attempts,
        "elapsed_ms": round(result.elapsed * 1000.0, 1),
        "bytes": result.size,
        "content_type": content_type,
        "sha256": result.sha256,
        "path": path,
        "error": None
        if error is None
        else {
            "kind": error.kind.value,
            "message": redact_text(error.message),
            "cause": error.cause,
        },
        "duplicate_of": None,
        "meta": _meta_of(result.request),
    }
    if body_mode != "none":
        record["body"] = _body_value(result.body, content_type, body_mode)
    return record


def rejected_record(rejected: Rejected) -> dict[str, object]:
    """Build the record of an input line that could not become a request.

    ``url`` holds the line as shown safely, ``key`` is null, ``ok`` false and
    ``error`` says why.

    >>> from fanout.models import ErrorKind
    >>> rejected_record(Rejected(2, "ftp://x", ErrorKind.UNSUPPORTED_SCHEME, "no"))["error"]
    {'kind': 'unsupported_scheme', 'message': 'no', 'cause': None}
    """
    error = {"kind": rejected.kind.value, "message": redact_text(rejected.reason), "cause": None}
    url = redact_text(redact_url(rejected.text))
    return _unfetched_record(url, None, rejected.line, ok=False, error=error)


def duplicate_record(request: Request, first_line: int) -> dict[str, object]:
    """Build the record of a request whose key already appeared on ``first_line``.

    Nothing was fetched: ``ok`` is null, ``attempts`` 0 and ``duplicate_of``
    names the first line.

    >>> duplicate_record(Request("http://h.example/", meta={"line": 9}), 3)["duplicate_of"]
    3
    """
    return _unfetched_record(
        redact_url(request.url),
        _key_of(request),
        _line_of(request),
        ok=None,
        error=None,
        duplicate_of=first_line,
        meta=_meta_of(request),
    )


def _unfetched_record(
    url: str,
    key: str | None,
    line: int | None,
    *,
    ok: bool | None,
    error: dict[str, str | None] | None,
    duplicate_of: int | None = None,
    meta: object = None,
) -> dict[str, object]:
    """The record of an input that sent no request (the schema's empty response fields)."""
    return {
        "url": url,
        "key": key,
        "line": line,
        "ok": ok,
        "status": None,
        "final_url": None,
        "attempts": 0,
        "elapsed_ms": 0.0,
        "bytes": 0,
        "content_type": None,
        "sha256": None,
        "path": None,
        "error": error,
        "duplicate_of": duplicate_of,
        "meta": meta,
    }


def _scrub(value: object, depth: int = 0) -> object:
    """Replace lone surrogates (which orjson refuses) in every string of a value,
    down to the depth orjson writes (it refuses anything deeper anyway)."""
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {_scrub(k, depth + 1): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def json_line(record: Mapping[str, object]) -> bytes:
    """``record`` as one JSON line (with its newline); lone surrogates, which can
    come from input lines or from header bytes that are not UTF-8, become U+FFFD.

    Raises :class:`orjson.JSONEncodeError` only for what no record of this
    module holds (a value JSON has no form for, nesting past 254 levels).

    >>> json_line({"url": "http://h.example/\\udcff", "ok": True})
    b'{"url":"http://h.example/\\xef\\xbf\\xbd","ok":true}\\n'
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return orjson.dumps(_scrub(record), option=orjson.OPT_APPEND_NEWLINE)
