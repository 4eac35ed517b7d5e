"""The library refuses what HTTP cannot carry when it is given, not one
request later: a single URL where an iterable is expected, a method or a
header that is no HTTP token or holds a control character."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

import fanout
from fanout.config import FetcherConfig
from fanout.demo import ServerThread
from fanout.engine import Fetcher
from fanout.errors import ConfigError
from fanout.inputs.sources import Rejected, read_jsonl_requests
from fanout.jobs.fetch import FetchJob
from fanout.models import Request


@pytest.fixture
def demo() -> Iterator[ServerThread]:
    """The demo server in a thread, with its statistics at hand."""
    with ServerThread() as running:
        yield running


def nothing_fetched(server: ServerThread) -> bool:
    return not server.stats.seen


def test_fetch_of_one_string_is_a_type_error(demo: ServerThread) -> None:
    url = f"{demo.url}/items/1"
    for single in (url, url.encode()):
        with pytest.raises(TypeError, match=r"got a (str|bytes); wrap a single URL in a list"):
            fanout.fetch(single)  # type: ignore[arg-type]
    assert nothing_fetched(demo)
    assert [r.status for r in fanout.fetch([url])] == [200]


async def test_stream_and_gather_of_one_string_are_type_errors(demo: ServerThread) -> None:
    url = f"{demo.url}/items/1"
    async with fanout.Fetcher() as fetcher:
        with pytest.raises(TypeError, match="expected an iterable of URLs or Requests, got a str"):
            await fetcher.gather(url)
        with pytest.raises(TypeError, match="got a bytes"):
            async for _ in fetcher.stream(url.encode()):  # type: ignore[arg-type]
                pass
    assert nothing_fetched(demo)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"method": "GE T"}, "method must be an HTTP token"),
        ({"method": ""}, "method must be an HTTP token"),
        ({"method": "GET\r\nX-Injected: 1"}, "got 'GET\\r\\nX-Injected: 1'"),
        ({"method": None}, "method must be a str, got NoneType"),
        ({"headers": {"X Token": "a"}}, "header name 'X Token' is not an HTTP token"),
        ({"headers": {"X-Token": "a\r\nX-Injected: 1"}}, "header 'X-Token' value holds"),
        ({"headers": {"X-Token": "a\x00"}}, "control character ('\\x00')"),
        ({"headers": {"X-Token": 1}}, "header 'X-Token' value must be a str, got int"),
        ({"headers": [("X-Token", "a")]}, "headers must be a mapping"),
    ],
)
def test_request_refuses_what_http_cannot_carry(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Request("http://127.0.0.1:1/", **fields)  # type: ignore[arg-type]
    assert expected in str(raised.value)


def test_request_takes_what_http_allows() -> None:
    request = Request(
        "not even a URL",  # a bad URL is the result's invalid_url error, not an exception
        method="patch",
        headers={"X-Tab": "a\tb", "X-Name": "Zoë", "Empty": ""},
    )
    assert request.method == "patch"
    assert fanout.fetch([request])[0].error.kind == "invalid_url"  # type: ignore[union-attr]


def test_a_jsonl_header_with_a_control_character_is_a_rejected_line() -> None:
    line = orjson.dumps({"url": "http://127.0.0.1:1/", "headers": {"X-Token": "a\x01b"}})
    [item] = read_jsonl_requests(io.BytesIO(line))
    assert isinstance(item, Rejected)
    assert "header 'X-Token' value holds a control character" in item.reason


def test_a_fetch_job_is_checked_when_made() -> None:
    with pytest.raises(ConfigError, match="method"):
        FetchJob(urls=("http://127.0.0.1:1/",), method="GE T")
    with pytest.raises(ConfigError, match="user_agent"):
        FetchJob(urls=("http://127.0.0.1:1/",), config=FetcherConfig(user_agent="bot\r\nX: 1"))


@pytest.mark.parametrize(
    "options",
    [{"headers": {"X-A": "a\r\nInjected: 1"}}, {"headers": {"Bad Name": "x"}},
     {"user_agent": "agent\nX: y"}, {"headers": {"X-A": "\x00"}}],
)  # fmt: skip
def test_fetcher_headers_are_checked_at_the_call(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Fetcher(**options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        fanout.fetch(["http://127.0.0.1:9/"], **options)  # type: ignore[arg-type]
