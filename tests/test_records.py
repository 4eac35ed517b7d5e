"""Tests for fanout.output.records: the JSONL schema, redaction and the writer."""

from __future__ import annotations

import base64
import codecs
import encodings
import io
import os
import re
import sys
from pathlib import Path
from typing import cast

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.errors import SinkError
from fanout.inputs.sources import Rejected
from fanout.jobs.fetch_output import _JournalOutput
from fanout.journal import JournaledOutput
from fanout.models import ErrorKind, Failure, Request, Result
from fanout.output.jsonl_writer import JsonlWriter
from fanout.output.records import (
    BodyMode,
    duplicate_record,
    json_line,
    rejected_record,
    result_record,
)
from fanout.urls import redact_text, redact_url

SCHEMA = [
    "url",
    "key",
    "line",
    "ok",
    "status",
    "final_url",
    "attempts",
    "elapsed_ms",
    "bytes",
    "content_type",
    "sha256",
    "path",
    "error",
    "duplicate_of",
    "meta",
]


def ok_result(**overrides: object) -> Result:
    fields: dict[str, object] = {
        "request": Request("https://a.example/x", meta={"line": 3}),
        "status": 200,
        "final_url": "https://a.example/y",
        "headers": {"content-type": "text/html; charset=utf-8"},
        "body": b"<p>hi</p>",
        "size": 9,
        "sha256": "ab" * 32,
        "attempts": 2,
        "elapsed": 0.01234,
    }
    fields.update(overrides)
    return Result(**fields)  # type: ignore[arg-type]


# --- records ----------------------------------------------------------------------------------


def test_result_record_success() -> None:
    record = result_record(ok_result(), path="a.example/x-0123.html")
    assert list(record) == SCHEMA
    assert record == {
        "url": "https://a.example/x",
        "key": "https://a.example/x",
        "line": 3,
        "ok": True,
        "status": 200,
        "final_url": "https://a.example/y",
        "attempts": 2,
        "elapsed_ms": 12.3,
        "bytes": 9,
        "content_type": "text/html; charset=utf-8",
        "sha256": "ab" * 32,
        "path": "a.example/x-0123.html",
        "error": None,
        "duplicate_of": None,
        "meta": None,
    }


def test_result_record_failure_redacts_credentials() -> None:
    result = Result(
        request=Request("http://bob:hunter2@a.example/x", key="k1"),
        final_url="http://bob:hunter2@b.example/",
        error=Failure(
            ErrorKind.CONNECT,
            "Cannot connect to 'http://bob:hunter2@b.example/'",
            "ClientConnectorError",
        ),
        attempts=3,
    )
    record = result_record(result)
    assert record["ok"] is False
    assert record["url"] == "http://***@a.example/x"
    assert record["key"] == "k1"
    assert record["line"] is None
    assert record["final_url"] == "http://***@b.example/"
    assert record["error"] == {
        "kind": "connect",
        "message": "Cannot connect to 'http://***@b.example/'",
        "cause": "ClientConnectorError",
    }
    assert "hunter2" not in orjson.dumps(record).decode()


def test_key_defaults_to_the_redacted_url() -> None:
    record = result_record(Result(request=Request("http://u:pw@a.example/")))
    assert record["key"] == "http://***@a.example/"


@pytest.mark.parametrize("meta", [None, "x", {"line": "3"}, {"line": True}, {"other": 1}, [1]])
def test_line_is_null_without_an_int_line_in_meta(meta: object) -> None:
    assert result_record(Result(request=Request("http://a.example/", meta=meta)))["line"] is None


def test_http_status_failure_keeps_status() -> None:
    result = ok_result(status=404, error=Failure(ErrorKind.HTTP_STATUS, "404 Not Found"))
    record = result_record(result)
    assert (record["ok"], record["status"]) == (False, 404)
    assert record["error"] == {"kind": "http_status", "message": "404 Not Found", "cause": None}


def test_content_type_lookup_ignores_case_and_may_be_missing() -> None:
    assert result_record(ok_result(headers={"CONTENT-TYPE": "a/b"}))["content_type"] == "a/b"
    assert result_record(ok_result(headers={}))["content_type"] is None


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("é".encode(), "text/plain; charset=utf-8", "é"),
        ("é".encode("latin-1"), "text/plain; charset=ISO-8859-1", "é"),
        ("é".encode("latin-1"), 'text/plain; charset="latin1"', "é"),
        ("é".encode("latin-1"), "text/plain", "\ufffd"),
        (b"ok", "text/plain; charset=no-such-codec", "ok"),
        (b"\xff", None, "\ufffd"),
    ],
)
def test_body_text(body: bytes, content_type: str | None, expected: str) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    record = result_record(ok_result(body=body, headers=headers), body_mode="text")
    assert record["body"] == expected
    assert list(record) == [*SCHEMA, "body"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
        (b"42", 42),
        (b"<html>", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)
def test_body_json(body: bytes, expected: object) -> None:
    assert _written_body(result_record(ok_result(body=body), body_mode="json")) == expected


def _written_body(record: dict[str, object]) -> object:
    """The body as a reader of the JSONL line sees it."""
    return orjson.loads(json_line(record))["body"]


def test_body_base64_and_missing_body() -> None:
    record = result_record(ok_result(body=b"\x00\xff"), body_mode="base64")
    assert record["body"] == base64.b64encode(b"\x00\xff").decode()
    assert result_record(ok_result(body=None), body_mode="text")["body"] is None
    assert "body" not in result_record(ok_result())


# --- hostile bodies and headers: a record is always built and written ------------------------


def _deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_deep(253), orjson.loads(_deep(253))),
        (_deep(254), orjson.loads(_deep(254))),
        # orjson reads up to 1024 levels and writes only 254: such a body ended the run.
        (_deep(255), None),
        (_deep(300), None),
        (_deep(1024), None),
        (_deep(1025), None),
        (_deep(100_000), None),
        (b'{"a":' * 300 + b"1" + b"}" * 300, None),
        (b"1e400", None),
        (b"-1e400", None),
        (b"9" * 400, None),
        (b"18446744073709551616", 18446744073709551616.0),
        (b"[NaN]", None),
        (b'"\\ud800"', None),
        (b"\xef\xbb\xbf{}", None),
        (b'{\n  "pretty": [1,\n 2]\n}\n', {"pretty": [1, 2]}),
    ],
)
def test_body_json_of_hostile_bodies(body: bytes, expected: object) -> None:
    line = json_line(result_record(ok_result(body=body), body_mode="json"))
    assert line.count(b"\n") == 1
    assert orjson.loads(line)["body"] == expected


@pytest.mark.parametrize(
    "label",
    [
        "zlib",  # codecs that are no text encoding: bytes.decode raised LookupError
        "zlib_codec",
        "base64",
        "bz2",
        "hex",
        "quopri",
        "uu",
        "rot13",
        "rot_13",
        "idna",  # refuses the "replace" error handler
        "punycode",
        "undefined",  # always raises
        "unicode_escape",  # warns on bad escapes, and is no charset
        "raw_unicode_escape",
        "mbcs",  # Windows only
        "no-such-codec",
        "utf-8" * 2000,  # a 10,000-character label
        "",
        "\udcff",
    ],
)
def test_body_text_falls_back_to_utf8_for_any_other_label(label: str) -> None:
    body = "é \\u00e9 +AGEAYgBj- x".encode()
    headers = {"Content-Type": f"text/plain; charset={label}"}
    record = result_record(ok_result(body=body, headers=headers), body_mode="text")
    assert record["body"] == body.decode()
    assert orjson.loads(json_line(record))["body"] == body.decode()


@pytest.mark.parametrize(
    ("label", "body", "expected"),
    [
        ("utf-7", b"+AGEAYgBj-", "abc"),
        ("utf-7", b"+2AA-", "\ufffd"),  # a lone surrogate: written as U+FFFD
        ("utf-16", b"\xff\xfea\x00b", "a\ufffd"),  # odd length
        ("UTF-16LE", b"a\x00\x00\xd8", "a\ufffd"),
        ("utf-32", b"\x00\x00\x11\x00", "\ufffd"),
        ("koi8-u", b"\xa4", "\u0454"),
        ("cp874", b"\xa1", "\u0e01"),
        ("ISO_8859-1:1987", b"\xe9", "\xe9"),
        ("shift_jis", b"\x82\xa0", "\u3042"),
        ("Latin1", b"\xe9", "\xe9"),
        ("utf-8-sig", b"\xef\xbb\xbfa", "a"),
    ],
)
def test_body_text_decodes_with_the_named_charset(label: str, body: bytes, expected: str) -> None:
    headers = {"Content-Type": f"text/plain; charset={label}"}
    record = result_record(ok_result(body=body, headers=headers), body_mode="text")
    assert orjson.loads(json_line(record))["body"] == expected


def test_unknown_charset_labels_do_not_grow_the_codec_cache() -> None:
    cache = vars(encodings)["_cache"]  # the codec registry caches misses too
    result_record(
        ok_result(headers={"Content-Type": "text/plain; charset=warmup"}), body_mode="text"
    )
    before = len(cache)
    for n in range(200):
        headers = {"Content-Type": f"text/plain; charset=x-made-up-{n}"}
        result_record(ok_result(headers=headers), body_mode="text")
        headers = {"Content-Type": f"text/plain; charset=utf{'-' * (n % 30 + 1)}8"}
        assert result_record(ok_result(headers=headers), body_mode="text")["body"] == "<p>hi</p>"
    assert len(cache) == before


@pytest.mark.parametrize("mode", ["none", "text", "json", "base64"])
@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=\udcff\udcfe",  # header bytes that are not UTF-8 (surrogateescape)
        "\udce9t\udce9/x",
        "text/plain; charset=utf-8; " + "x" * 8000,
        "text/plain; charset=" + "\x00" * 8000,
        "é; charset=latin-1",
    ],
)
def test_hostile_content_types(mode: BodyMode, content_type: str) -> None:
    body = b'{"a": "\xc3\xa9\x00"}'
    record = result_record(
        ok_result(body=body, headers={"Content-Type": content_type}), body_mode=mode
    )
    written = orjson.loads(json_line(record))
    assert written["content_type"] == re.sub("[\ud800-\udfff]", "\ufffd", content_type)


_KNOWN_LABELS = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()))
_TRAPS = [
    "zlib",
    "base64",
    "rot13",
    "idna",
    "undefined",
    "punycode",
    "unicode_escape",
    "x" * 10_000,
]
_labels = (
    st.sampled_from([*_TRAPS, "utf-7", "utf-16", "utf-32", "utf-16-be"])
    | st.sampled_from(_KNOWN_LABELS)
    | st.text(max_size=60)
)
_content_types = (
    st.none()
    | st.text()
    # As aiohttp gives header bytes that are not UTF-8: surrogate escapes.
    | st.binary(max_size=100).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
    | st.builds(
        "{}; charset={}{}{}".format,
        st.sampled_from(["text/plain", "application/json", "text/html", ""]),
        st.sampled_from(["", '"', "'"]),
        _labels,
        st.sampled_from(["", '"', "; x=y"]),
    )
)
_json_texts = st.recursive(
    st.sampled_from([b"null", b"true", b"0", b"-1.5e3", b'"x\\u0000"', b"1e400", b"NaN"]),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]")
        | st.lists(inner, max_size=3).map(
            lambda items: b"{" + b",".join(b'"k%d":%s' % (i, v) for i, v in enumerate(items)) + b"}"
        )
    ),
    max_leaves=10,
)
_deep_json = st.builds(
    lambda depth, kind, leaf: (
        (b"[" * depth if kind else b'{"a":' * depth)
        + leaf
        + (b"]" * depth if kind else b"}" * depth)
    ),
    st.integers(1, 100_000) | st.integers(250, 1030),  # orjson writes 254 levels, reads 1024
    st.booleans(),
    st.sampled_from([b"", b"1", b"[]", b'"\xff"']),
)
_bodies = (
    st.none() | st.binary(max_size=3000) | _json_texts | _deep_json | st.text().map(str.encode)
)


class _JournalLines:
    """Stands for a JournaledOutput: keeps the lines the journal's emit gives it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def add(self, line: bytes, item: object, state: object, kind: str | None) -> None:
        self.lines.append(line)


@given(st.sampled_from(["none", "text", "json", "base64"]), _bodies, _content_types)
def test_any_body_and_content_type_make_exactly_one_json_line(
    mode: BodyMode, body: bytes | None, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    record = result_record(ok_result(body=body, headers=headers), body_mode=mode)
    sink = io.BytesIO()
    with JsonlWriter(sink) as writer:
        writer.write(record)
    written = sink.getvalue()
    journaled = _JournalLines()
    _JournalOutput(cast(JournaledOutput, journaled)).emit(record, None, None)
    assert journaled.lines == [written]
    assert written.endswith(b"\n")
    assert written.count(b"\n") == 1
    value = orjson.loads(written)
    assert list(value) == SCHEMA + ([] if mode == "none" else ["body"])
    if body is None or mode == "none":
        return
    if mode == "text":
        assert isinstance(value["body"], str)
        assert len(value["body"]) <= len(body)
    elif mode == "base64":
        assert base64.b64decode(value["body"]) == body
    else:
        try:
            expected = orjson.loads(orjson.dumps(orjson.loads(body)))
        except orjson.JSONDecodeError:
            expected = None
        except orjson.JSONEncodeError:
            expected = None  # too deep to write
        assert value["body"] == expected


def test_every_text_codec_python_has_decodes_or_falls_back() -> None:
    import pkgutil

    samples = [bytes(range(256)), b"+2AA-", b"\\x", b"\\N{", b"xn--", b"\x00\xd8" * 3]
    for module in pkgutil.iter_modules(encodings.__path__):
        headers = {"Content-Type": f"text/plain; charset={module.name}"}
        for body in samples:
            record = result_record(ok_result(body=body, headers=headers), body_mode="text")
            assert isinstance(orjson.loads(json_line(record))["body"], str)
    assert codecs.lookup("utf-8").name == "utf-8"


def test_rejected_record() -> None:
    rejected = Rejected(7, "ftp://u:pw@x/", ErrorKind.UNSUPPORTED_SCHEME, "unsupported scheme")
    record = rejected_record(rejected)
    assert list(record) == SCHEMA
    assert record["url"] == "ftp://***@x/"
    assert record["key"] is None
    assert record["line"] == 7
    assert record["ok"] is False
    assert record["attempts"] == 0
    assert record["error"] == {
        "kind": "unsupported_scheme",
        "message": "unsupported scheme",
        "cause": None,
    }


def test_rejected_record_redacts_urls_anywhere_in_the_text() -> None:
    rejected = Rejected(1, "see http://u:pw@x/ now", ErrorKind.INVALID_URL, "whitespace")
    assert "pw" not in str(rejected_record(rejected)["url"])


def test_duplicate_record() -> None:
    request = Request("http://a.example/", meta={"line": 9, "meta": {"id": 4}})
    record = duplicate_record(request, 2)
    assert list(record) == SCHEMA
    assert record["ok"] is None
    assert record["line"] == 9
    assert record["duplicate_of"] == 2
    assert record["attempts"] == 0
    assert record["error"] is None
    assert record["meta"] == {"id": 4}


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"line": 1, "meta": {"id": 7, "tags": ["a"]}}, {"id": 7, "tags": ["a"]}),
        ({"line": 1, "meta": "plain"}, "plain"),
        ({"line": 1}, None),  # an input line without user data
        ({"user": 7}, None),  # a library caller's meta is not written
        (object(), None),
    ],
)
def test_record_meta_is_the_input_lines_user_data(meta: object, expected: object) -> None:
    record = result_record(Result(request=Request("http://a.example/", meta=meta)))
    assert list(record) == SCHEMA
    assert record["meta"] == expected
    assert orjson.loads(json_line(record))["meta"] == expected


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://bob:s3cret@a.example/x", "https://***@a.example/x"),
        ("https://bob@a.example/x", "https://***@a.example/x"),
        ("https://bob:p@ss@a.example/x@y", "https://***@a.example/x@y"),
        ("https://a.example/@bob", "https://a.example/@bob"),
        ("https://a.example/x?mail=a@b", "https://a.example/x?mail=a@b"),
        ("https://a.example", "https://a.example"),
        ("//bob:pw@a.example/", "//***@a.example/"),
        ("bob:pw@a.example/x", "***@a.example/x"),
        ("http://b o b:p w@a.example/", "http://***@a.example/"),
        ("http://bob:pw?x#y@a.example/", "http://***@a.example/"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no urls here", "no urls here"),
        ("mail me at a@b.example", "mail me at a@b.example"),
        (
            "GET http://u:p@a.example/x -> 302 https://v:q@b.example/",
            "GET http://***@a.example/x -> 302 https://***@b.example/",
        ),
        ("URL('http://u:p@h.example')", "URL('http://***@h.example')"),
        ("x://a'http://u:p@h.example/", "x://a'http://***@h.example/"),
        ("http://h.example/a@b", "http://h.example/a@b"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_text_is_fast_on_hostile_input() -> None:
    for text in ["a://" * 100_000 + "@", "a://" * 100_000, "a" * 400_000 + "://@"]:
        redact_text(text)


_host = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True)
# Starts with "/": "http://h?a@b" is over-redacted on purpose (see redact_url).
_path = st.from_regex(r"(/[a-z0-9@._~-]{0,8}){1,3}(\?[a-z0-9=&@]{0,8})?", fullmatch=True)
_secret = st.text(
    st.characters(blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"], blacklist_characters="/"),
    min_size=1,
    max_size=16,
).filter(lambda s: any(c.isupper() for c in s))


@given(st.sampled_from(["http", "https", "ftp"]), _secret, _secret, _host, _path)
def test_redaction_never_leaks_the_password(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    redacted = redact_url(url)
    assert password not in redacted
    assert redacted == f"{scheme}://***@{host}{path}"
    in_text = redact_text(f"error fetching {url} (after 3 tries)")
    assert password not in in_text
    assert in_text == f"error fetching {scheme}://***@{host}{path} (after 3 tries)"


@given(st.text())
def test_redaction_never_raises(text: str) -> None:
    assert "://" not in text or "@" not in text or isinstance(redact_text(text), str)
    redact_url(text)


# --- JsonlWriter ------------------------------------------------------------------------------


_chars = st.characters(blacklist_categories=["Cs"])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_chars),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.slow
@given(st.lists(st.dictionaries(st.text(_chars, max_size=10), _json, max_size=5), max_size=20))
def test_jsonl_round_trips(records: list[dict[str, object]]) -> None:
    sink = io.BytesIO()
    with JsonlWriter(sink, flush_every=3) as writer:
        for record in records:
            writer.write(record)
    assert not sink.closed
    data = sink.getvalue()
    lines = data.splitlines()
    assert len(lines) == len(records)
    assert [orjson.loads(line) for line in lines] == records


def test_writer_writes_file_in_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path, flush_every=2) as writer:
        writer.write({"n": 1})
        assert path.read_bytes() == b""
        writer.write({"n": 2})
        assert path.read_bytes() == b'{"n":1}\n{"n":2}\n'
        writer.write({"n": 3})
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n{"n":3}\n'
    assert writer.name == str(path)


def test_writer_writes_large_lines_at_once(tmp_path: Path) -> None:
    # Queued until flush_every records, six bodies of 48 MiB lines made 2 GB of queue.
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path, flush_every=100) as writer:
        writer.write({"n": 1})
        assert path.read_bytes() == b""
        writer.write({"body": "x" * (1 << 20)})
        assert path.stat().st_size == len(b'{"n":1}\n{"body":""}\n') + (1 << 20)
        writer.write({"n": 3})
        assert path.read_bytes().endswith(b'"}\n')
    assert path.read_bytes().endswith(b'"}\n{"n":3}\n')


def test_writer_truncates_or_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"old":true}\n')
    with JsonlWriter(path, append=True) as writer:
        writer.write({"new": True})
    assert path.read_bytes() == b'{"old":true}\n{"new":true}\n'
    with JsonlWriter(path) as writer:
        writer.write({"only": True})
    assert path.read_bytes() == b'{"only":true}\n'


def test_writer_replaces_lone_surrogates(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"url": "http://a.example/\ud800", "x": ["\udfff"], "\ud800": 1})
    assert orjson.loads(path.read_bytes()) == {
        "url": "http://a.example/\ufffd",
        "x": ["\ufffd"],
        "\ufffd": 1,
    }


def test_writer_to_stdout_leaves_it_open(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    fake = io.TextIOWrapper(buffer)
    monkeypatch.setattr(sys, "stdout", fake)
    with JsonlWriter("-") as writer:
        writer.write(result_record(ok_result()))
    assert not fake.closed
    assert orjson.loads(buffer.getvalue())["status"] == 200


def test_writer_cannot_open_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "out.jsonl"
    with (
        pytest.raises(SinkError, match=r"cannot open .*out\.jsonl.* No such file"),
        JsonlWriter(path),
    ):
        pass


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_writer_write_error_names_the_file() -> None:
    writer = JsonlWriter("/dev/full", flush_every=1)
    with pytest.raises(SinkError, match="cannot write '/dev/full': No space left"), writer:
        writer.write({"a": 1})


def test_writer_must_be_open() -> None:
    writer = JsonlWriter("-")
    with pytest.raises(SinkError, match="not open"):
        writer.write({})
    with pytest.raises(ValueError, match="flush_every"):
        JsonlWriter("-", flush_every=0)


def test_writer_close_is_idempotent_and_final(tmp_path: Path) -> None:
    writer = JsonlWriter(tmp_path / "o.jsonl")
    with writer:
        writer.write({})
    writer.close()
    with pytest.raises(SinkError, match="already open or closed"), writer:
        pass
