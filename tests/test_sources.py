"""Tests for fanout.inputs.sources: lazy readers, URL checks, input opening, dedupe."""

from __future__ import annotations

import io
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.errors import ConfigError, SourceError
from fanout.inputs.sources import (
    Deduper,
    Rejected,
    check_url,
    open_input,
    read_jsonl_requests,
    read_url_lines,
)
from fanout.models import ErrorKind, Request


def urls(data: bytes, **kwargs: int) -> list[Request | Rejected]:
    return list(read_url_lines(io.BytesIO(data), **kwargs))


def jsonl(*lines: bytes | object) -> list[Request | Rejected]:
    raw = b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines)
    return list(read_jsonl_requests(io.BytesIO(raw)))


def only_rejected(items: list[Request | Rejected]) -> Rejected:
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, Rejected)
    return item


class _LazyBytes(io.RawIOBase):
    """A stream of ``size`` filler bytes then ``tail``, generated on demand."""

    def __init__(self, size: int, tail: bytes) -> None:
        self._left = size
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left:
            n = min(self._left, len(buffer))
            buffer[:n] = b"a" * n
            self._left -= n
            return n
        n = min(len(self._tail), len(buffer))
        buffer[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n


# --- read_url_lines ---------------------------------------------------------------------------


def test_reads_urls_with_line_numbers_skipping_blanks_and_comments() -> None:
    data = b"# header\n\nhttp://a.example/1\n   \n  https://b.example/2  \n\t# indented comment\n"
    items = urls(data)
    assert items == [
        Request(url="http://a.example/1", meta={"line": 3}),
        Request(url="https://b.example/2", meta={"line": 5}),
    ]


def test_bom_and_crlf_are_accepted() -> None:
    items = urls(b"\xef\xbb\xbfhttp://a.example/\r\nhttp://b.example/\r\n")
    assert [r.url for r in items if isinstance(r, Request)] == [
        "http://a.example/",
        "http://b.example/",
    ]


def test_bom_only_counts_at_the_start() -> None:
    item = urls(b"http://a.example/\n\xef\xbb\xbfhttp://b.example/\n")[1]
    assert isinstance(item, Rejected)
    assert item.line == 2


def test_empty_input_yields_nothing() -> None:
    assert urls(b"") == []
    assert urls(b"\n\n  \r\n") == []


def test_last_line_without_newline_is_read() -> None:
    assert urls(b"http://a.example/\nhttp://b.example/") == [
        Request(url="http://a.example/", meta={"line": 1}),
        Request(url="http://b.example/", meta={"line": 2}),
    ]


def test_non_utf8_line_is_rejected_and_reading_goes_on() -> None:
    items = urls(b"http://a.example/\xff\xfe\nhttp://b.example/\n")
    bad, good = items
    assert isinstance(bad, Rejected)
    assert bad.line == 1
    assert bad.kind is ErrorKind.INVALID_URL
    assert "not valid UTF-8" in bad.reason
    assert bad.text == "http://a.example/\\xff\\xfe"
    assert good == Request(url="http://b.example/", meta={"line": 2})


def test_bad_urls_are_rejected_with_their_kind() -> None:
    items = urls(b"ftp://x/\nnot a url\nhttp://a.example/\n")
    ftp, spaced, good = items
    assert isinstance(ftp, Rejected)
    assert ftp.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert isinstance(spaced, Rejected)
    assert spaced.kind is ErrorKind.INVALID_URL
    assert spaced.line == 2
    assert isinstance(good, Request)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_line_of_exactly_max_line_bytes_is_accepted(ending: bytes) -> None:
    url = b"http://a.example/" + b"x" * (100 - 17)
    assert len(url) == 100
    assert urls(url + ending, max_line=100) == [Request(url=url.decode(), meta={"line": 1})]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_line_over_max_line_is_rejected(ending: bytes) -> None:
    url = b"http://a.example/" + b"x" * (101 - 17)
    rejected = only_rejected(urls(url + ending, max_line=100))
    assert rejected.reason == "line longer than 100 bytes"
    assert rejected.text.endswith("xxx")


def test_huge_line_is_rejected_in_bounded_memory_and_next_line_read() -> None:
    size = 16 * 1024 * 1024
    stream = io.BufferedReader(_LazyBytes(size, b"\nhttp://after.example/\n"))
    tracemalloc.start()
    try:
        items = list(read_url_lines(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    huge, after = items
    assert isinstance(huge, Rejected)
    assert huge.line == 1
    assert huge.reason == "line longer than 65536 bytes"
    assert len(huge.text) <= 201
    assert huge.text.endswith("…")
    assert after == Request(url="http://after.example/", meta={"line": 2})


def test_huge_line_without_any_newline_is_rejected() -> None:
    stream = io.BufferedReader(_LazyBytes(16 * 1024 * 1024, b""))
    rejected = only_rejected(list(read_url_lines(stream)))
    assert rejected.line == 1


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_line"):
        urls(b"http://a.example/\n", max_line=-5)


def test_rejected_text_is_escaped_and_truncated() -> None:
    line = b"\x1b[31mhttp://a.example/" + b"y" * 1000
    rejected = only_rejected(urls(line))
    assert "\x1b" not in rejected.text
    assert rejected.text.startswith("\\x1b[31m")
    assert len(rejected.text) == 201
    assert rejected.text.endswith("…")


def test_reading_is_lazy() -> None:
    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            self._sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if self._sent:
                raise AssertionError("read past the first line")
            data = b"http://a.example/\n"
            buffer[: len(data)] = data
            self._sent = True
            return len(data)

    reader = read_url_lines(io.BufferedReader(Exploding(), buffer_size=64))
    assert next(reader) == Request(url="http://a.example/", meta={"line": 1})


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=20), st.sampled_from([b"\n", b"\r\n"]))
def test_any_bytes_never_raise_and_lines_are_consistent(lines: list[bytes], sep: bytes) -> None:
    data = sep.join(lines)
    total = data.count(b"\n") + 1
    previous = 0
    for item in read_url_lines(io.BytesIO(data), max_line=40):
        line = item.line if isinstance(item, Rejected) else item.meta["line"]
        assert previous < line <= total
        previous = line
        if isinstance(item, Request):
            assert check_url(item.url) is None
            assert item.url == item.url.strip()
        else:
            assert len(item.text) <= 201
            assert all(c.isprintable() or c == " " for c in item.text)


@given(st.text(max_size=100))
def test_any_text_line_never_raises(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    for item in read_url_lines(io.BytesIO(data)):
        assert isinstance(item, Request | Rejected)


# --- check_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example",
        "https://a.example/path?q=1#frag",
        "HTTP://A.EXAMPLE/X",
        "http://127.0.0.1:8080/",
        "http://[::1]:8080/x",
        "http://user:pw@a.example/",
        "http://bücher.example/straße",
        "http://a.example./",
        "http://a_b.example/",
        "http://a.example/%zz",
    ],
)
def test_check_url_accepts(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "kind", "reason"),
    [
        (
            "ftp://x/",
            ErrorKind.UNSUPPORTED_SCHEME,
            "unsupported scheme 'ftp' (only http and https)",
        ),
        ("python://x", ErrorKind.UNSUPPORTED_SCHEME, "unsupported scheme 'python'"),
        ("file:///etc/passwd", ErrorKind.UNSUPPORTED_SCHEME, "unsupported scheme 'file'"),
        ("mailto:a@b.example", ErrorKind.UNSUPPORTED_SCHEME, "'mailto'"),
        ("", ErrorKind.INVALID_URL, "empty URL"),
        ("a.example/x", ErrorKind.INVALID_URL, "missing scheme"),
        ("localhost:8080/x", ErrorKind.INVALID_URL, "missing scheme"),
        ("/just/a/path", ErrorKind.INVALID_URL, "missing scheme"),
        ("http:a.example", ErrorKind.INVALID_URL, "missing '//'"),
        ("http:///x", ErrorKind.INVALID_URL, "no host"),
        ("http://", ErrorKind.INVALID_URL, "no host"),
        ("http://a b/", ErrorKind.INVALID_URL, "whitespace or control character ' '"),
        ("http://a.example/\x00", ErrorKind.INVALID_URL, "control character"),
        ("http://a.example/\u2028", ErrorKind.INVALID_URL, "control character"),
        ("http://a.example/\x7f", ErrorKind.INVALID_URL, "control character"),
        ("http://a.example/a\tb", ErrorKind.INVALID_URL, "control character '\\t' at position 18"),
        ("http://a.example:99999/", ErrorKind.INVALID_URL, "Port out of range"),
        ("http://a.example:0/", ErrorKind.INVALID_URL, "port 0"),
        ("http://a.example:abc/", ErrorKind.INVALID_URL, "port"),
        ("http://[zz]/", ErrorKind.INVALID_URL, "cannot parse URL"),
        ("http://a..example/", ErrorKind.INVALID_URL, "empty label"),
        ("http://%41.example/", ErrorKind.INVALID_URL, "invalid character in host"),
        ("http://-a.example/", ErrorKind.INVALID_URL, "invalid character in host"),
        ("http://" + "a" * 64 + ".example/", ErrorKind.INVALID_URL, "longer than 63"),
        ("http://a.example\\x", ErrorKind.INVALID_URL, "backslash"),
    ],
)
def test_check_url_refuses(url: str, kind: ErrorKind, reason: str) -> None:
    failure = check_url(url)
    assert failure is not None
    assert failure.kind is kind
    assert reason in failure.message


@given(st.text())
def test_check_url_never_raises(text: str) -> None:
    failure = check_url(text)
    assert failure is None or failure.message


@given(st.text(st.characters(max_codepoint=0xA0)) | st.text())
def test_every_whitespace_or_control_character_is_refused(tail: str) -> None:
    """The fast path (printable ASCII, no space) and the full search agree."""
    import re

    bad = re.search(r"[\x00-\x20\x7f-\x9f\s]", tail)
    failure = check_url("http://a.example/" + tail)
    refused = failure is not None and "whitespace or control character" in failure.message
    assert refused == (bad is not None)


# --- read_jsonl_requests ----------------------------------------------------------------------


def test_jsonl_full_request() -> None:
    [request] = jsonl(
        {
            "url": "https://api.example/items",
            "method": "POST",
            "headers": {"Content-Type": "application/json", "X-Trace": "1"},
            "body": '{"name": "é"}',
            "key": "item-1",
            "meta": {"user": [1, 2]},
        }
    )
    assert request == Request(
        url="https://api.example/items",
        method="POST",
        headers={"Content-Type": "application/json", "X-Trace": "1"},
        body='{"name": "é"}'.encode(),
        key="item-1",
        meta={"line": 1, "meta": {"user": [1, 2]}},
    )


def test_jsonl_defaults_nulls_blank_lines_bom_and_crlf() -> None:
    data = b'\xef\xbb\xbf{"url": "http://a.example/"}\r\n\r\n  \n{"url": "http://b.example/", '
    data += b'"method": null, "headers": null, "body": null, "key": null}\n'
    first, second = read_jsonl_requests(io.BytesIO(data))
    assert first == Request(url="http://a.example/", meta={"line": 1})
    assert second == Request(url="http://b.example/", meta={"line": 4})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"url": "http://a.example/"} trailing', "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"http://a.example/"', "expected a JSON object, got string"),
        (b"{}", "missing required field 'url'"),
        (b'{"url": 5}', "'url' must be a string, got number"),
        (b'{"url": "http://a.example/", "id": 1, "meta": [2]}', "'meta' must be an object"),
        (b'{"url": "http://a.example/", "id": 1, "meta": {"id": 2}}', "'id' is given both"),
        (b'{"url": "http://a.example/", "id": ' + b"[" * 300 + b"]" * 300 + b"}", "too deeply"),
        (b'{"url": "http://a.example/", "method": "GE T"}', "'method' must be an HTTP method"),
        (b'{"url": "http://a.example/", "method": 1}', "'method' must be an HTTP method"),
        (b'{"url": "http://a.example/", "headers": []}', "'headers' must be an object"),
        (b'{"url": "http://a.example/", "headers": {"a": 1}}', "header 'a' must be a string"),
        (b'{"url": "http://a.example/", "headers": {"a b": "1"}}', "invalid header name"),
        (
            b'{"url": "http://a.example/", "headers": {"a": "1\\r\\nX-Evil: 1"}}',
            "contains CR, LF or NUL",
        ),
        (b'{"url": "http://a.example/", "body": {"a": 1}}', "'body' must be a string"),
        (b'{"url": "http://a.example/", "key": 7}', "'key' must be a non-empty string"),
        (b'{"url": "http://a.example/", "key": ""}', "'key' must be a non-empty string"),
        (b'{"url": "http://a.example/", "body": "\\ud800"}', "invalid JSON"),
        (b"\xff{}", "not valid UTF-8"),
        (b"[" * 2000 + b"]" * 2000, "invalid JSON"),
    ],
)
def test_jsonl_rejects_with_specific_reason(line: bytes, reason: str) -> None:
    items = jsonl(line, {"url": "http://next.example/"})
    rejected, after = items
    assert isinstance(rejected, Rejected)
    assert rejected.kind is ErrorKind.BAD_INPUT
    assert reason in rejected.reason
    assert rejected.line == 1
    assert after == Request(url="http://next.example/", meta={"line": 2})


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({"id": 7}, {"id": 7}),
        ({"id": 7, "tags": ["a"], "meta": {"user": 1}}, {"user": 1, "id": 7, "tags": ["a"]}),
        ({"meta": [1, 2]}, [1, 2]),
        ({"meta": ""}, ""),  # a string is data, not a reason to refuse the line
        ({"meta": None, "id": None}, {"id": None}),
    ],
)
def test_jsonl_unknown_fields_are_kept_with_meta(fields: dict[str, object], data: object) -> None:
    [request] = jsonl({"url": "http://a.example/", **fields})
    assert isinstance(request, Request)
    assert request.meta == {"line": 1, "meta": data}


def test_jsonl_bad_url_keeps_its_kind() -> None:
    rejected = only_rejected(jsonl({"url": "ftp://files.example/"}))
    assert rejected.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert rejected.text == "ftp://files.example/"


def test_jsonl_over_long_line() -> None:
    data = b'{"url": "http://a.example/' + b"x" * 200 + b'"}\n{"url": "http://b.example/"}\n'
    rejected, after = read_jsonl_requests(io.BytesIO(data), max_line=100)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "line longer than 100 bytes"
    assert rejected.kind is ErrorKind.BAD_INPUT
    assert isinstance(after, Request)


# JSON cannot carry lone surrogates, so the text here has none.
_chars = st.characters(blacklist_categories=["Cs"])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(_chars, max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_chars, max_size=5), inner),
    max_leaves=10,
)


@given(st.lists(_json_values | st.binary(max_size=40), max_size=10))
def test_jsonl_any_line_never_raises(lines: list[object]) -> None:
    raw = b"\n".join(
        x.replace(b"\n", b" ") if isinstance(x, bytes) else orjson.dumps(x) for x in lines
    )
    for item in read_jsonl_requests(io.BytesIO(raw), max_line=200):
        if isinstance(item, Request):
            assert check_url(item.url) is None


_CTL = "".join(map(chr, [*range(9), *range(10, 32), 127]))


@given(
    st.fixed_dictionaries(
        {"url": st.sampled_from(["http://a.example/", "https://b.example/x?y=1"])},
        optional={
            "method": st.sampled_from(["GET", "POST", "PUT"]),
            "headers": st.dictionaries(
                st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True),
                st.text(  # RFC 9110 §5.5: no control character but tab
                    st.characters(blacklist_categories=["Cs"], blacklist_characters=_CTL),
                    max_size=10,
                ),
                max_size=3,
            ),
            "body": st.text(_chars, max_size=20),
            "key": st.text(_chars, min_size=1, max_size=10),
            "meta": _json_values,
        },
    )
)
def test_jsonl_round_trips_fields(obj: dict[str, object]) -> None:
    raw = orjson.dumps(obj)
    [request] = read_jsonl_requests(io.BytesIO(raw))
    assert isinstance(request, Request)
    assert request.url == obj["url"]
    assert request.method == obj.get("method", "GET")
    assert dict(request.headers) == obj.get("headers", {})
    body = obj.get("body")
    assert request.body == (body.encode() if isinstance(body, str) else None)
    assert request.key == obj.get("key")
    expected_meta: dict[str, object] = {"line": 1}
    if obj.get("meta") is not None:  # null for an optional field means it is not given
        expected_meta["meta"] = obj["meta"]
    assert request.meta == expected_meta


# --- open_input -------------------------------------------------------------------------------


def test_open_input_reads_a_file_and_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"http://a.example/\n")
    with open_input(str(path)) as stream:
        assert list(read_url_lines(stream)) == [Request(url="http://a.example/", meta={"line": 1})]
    assert stream.closed


def test_open_input_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    with pytest.raises(SourceError) as caught, open_input(str(path)):
        pass
    assert str(caught.value) == f"cannot read input file {str(path)!r}: No such file or directory"


def test_open_input_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read input file .*: Is a directory$"):  # noqa: SIM117
        with open_input(str(tmp_path)):
            pass


def test_open_input_dash_is_stdin_and_stays_open(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b"http://a.example/\n"))
    monkeypatch.setattr(sys, "stdin", fake)
    with open_input("-") as stream:
        assert list(read_url_lines(stream)) == [Request(url="http://a.example/", meta={"line": 1})]
    assert not fake.closed


# --- Deduper ----------------------------------------------------------------------------------


def test_deduper_reports_first_line() -> None:
    seen = Deduper()
    assert seen.first_line_of("http://a.example/", 1) is None
    assert seen.first_line_of("http://b.example/", 2) is None
    assert seen.first_line_of("http://a.example/", 5) == 1
    assert seen.first_line_of("http://a.example/", 9) == 1
    assert len(seen) == 2


def test_deduper_compares_exactly() -> None:
    seen = Deduper()
    variants = [
        "http://a.example/x",
        "http://a.example/x#top",
        "HTTP://A.EXAMPLE/x",
        "http://a.example/x/",
        "http://a.example/X",
        "http://a.example/x\ud800",
    ]
    for line, url in enumerate(variants, 1):
        assert seen.first_line_of(url, line) is None


@given(st.lists(st.text(max_size=8), max_size=30))
def test_deduper_matches_a_set(keys: list[str]) -> None:
    seen = Deduper()
    first: dict[str, int] = {}
    for line, key in enumerate(keys, 1):
        assert seen.first_line_of(key, line) == first.get(key)
        first.setdefault(key, line)
    assert len(seen) == len(first)
