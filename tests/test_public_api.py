"""The public surface: a sorted __all__ whose every name resolves."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import fanout
from fanout import Fetcher
from fanout.demo import DemoServer
from fanout.output.records import result_record


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert fanout.__all__ == sorted(fanout.__all__)
    for name in fanout.__all__:
        assert getattr(fanout, name) is not None
    assert set(dir(fanout)) == set(fanout.__all__)


def test_aggregate_is_the_function_even_after_its_module_is_imported() -> None:
    import fanout.aggregation

    assert callable(fanout.aggregate)
    assert fanout.aggregate is fanout.aggregation.aggregate


def test_help_does_not_import_the_http_stack() -> None:
    code = "import sys; import fanout.cli; print('aiohttp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"False"


def test_the_engine_package_exports_the_fetcher_on_first_use() -> None:
    import fanout.engine
    from fanout.engine import fetcher

    assert fanout.engine.__all__ == sorted(fanout.engine.__all__)
    for name in fanout.engine.__all__:
        assert getattr(fanout.engine, name) is getattr(fetcher, name)
    assert set(dir(fanout.engine)) == set(fanout.engine.__all__)
    with pytest.raises(AttributeError, match="Scheduler"):
        fanout.engine.Scheduler  # noqa: B018  # only the four names are re-exported


def test_package_inits_do_not_import_the_http_stack() -> None:
    code = (
        "import sys; import fanout.engine, fanout.engine.scheduling, fanout.net, fanout.inputs,"
        " fanout.output, fanout.jobs; print('aiohttp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"False"


def test_result_takes_its_arguments_by_position_in_field_order() -> None:
    request = fanout.Request("http://127.0.0.1:1/a")
    failure = fanout.Failure(fanout.ErrorKind.HTTP_STATUS, "HTTP 404 Not Found")
    result = fanout.Result(
        request, 404, "http://127.0.0.1:1/b", {}, b"x", 1, None, 2, 0.5, 0.25, failure
    )
    assert (result.request, result.status, result.final_url, result.body, result.size) == (
        request,
        404,
        "http://127.0.0.1:1/b",
        b"x",
        1,
    )
    assert (result.attempts, result.elapsed, result.last_attempt, result.error) == (
        2,
        0.5,
        0.25,
        failure,
    )
    assert result.sha256 == fanout.Result(request=request, body=b"x").sha256


# --- Result.text() and Result.json() -----------------------------------------------------------


def _app() -> web.Application:
    async def latin(request: web.Request) -> web.Response:
        return web.Response(
            body="café".encode("latin-1"), headers={"Content-Type": "text/plain; charset=latin-1"}
        )

    async def raw(request: web.Request) -> web.Response:
        return web.Response(body=b'{"a": [1, "\xc3\xa9"]} \xff', content_type="application/json")

    app = web.Application()
    app.router.add_get("/latin", latin)
    app.router.add_get("/raw", raw)
    return app


async def test_text_decodes_with_the_charset_of_the_content_type() -> None:
    async with TestServer(_app(), host="127.0.0.1") as server:
        base = str(server.make_url(""))
        async with Fetcher() as fetcher:
            latin, raw = await fetcher.gather([f"{base}/latin", f"{base}/raw"])
    assert latin.text() == "café"
    assert raw.text() == '{"a": [1, "é"]} \ufffd'  # no charset: UTF-8, bad bytes replaced


async def test_json_parses_the_body(server: DemoServer) -> None:
    async with Fetcher() as fetcher:
        [item] = await fetcher.gather([f"{server.url}/items/3"])
    assert item.json()["id"] == 3
    assert item.json() == json.loads(item.text())


async def test_json_of_a_body_that_is_not_json_is_a_body_error(server: DemoServer) -> None:
    async with Fetcher() as fetcher:
        [bad] = await fetcher.gather([f"{server.url}/json/bad"])
    assert bad.ok
    assert bad.text() == "{this is not json"
    with pytest.raises(fanout.BodyError, match=r"the body of .*/json/bad is not JSON") as raised:
        bad.json()
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value.__cause__, ValueError)


async def test_no_body_is_a_body_error_saying_why(server: DemoServer) -> None:
    async with Fetcher(keep_body=False) as fetcher:
        [dropped] = await fetcher.gather([f"{server.url}/items/1"])
    async with Fetcher(retry=fanout.RetryPolicy(attempts=1)) as fetcher:
        [refused] = await fetcher.gather(["http://127.0.0.1:1/"])
    assert dropped.ok
    assert dropped.body is None
    assert dropped.size > 0
    for method in (dropped.text, dropped.json):
        with pytest.raises(fanout.BodyError, match=r"no body for .*: the body was not kept"):
            method()
    with pytest.raises(fanout.BodyError, match=r"no body for .*: the request failed \(connect: "):
        refused.text()


# --- Failure.cause -----------------------------------------------------------------------------


async def test_failure_cause_names_the_exception_or_is_none(server: DemoServer) -> None:
    async with Fetcher(retry=fanout.RetryPolicy(attempts=1)) as fetcher:
        refused, missing, bad = await fetcher.gather(
            ["http://127.0.0.1:1/", f"{server.url}/status/404", "ftp://127.0.0.1/"]
        )
    assert refused.error is not None
    assert refused.error.kind is fanout.ErrorKind.CONNECT
    assert refused.error.cause == "ClientConnectorError"
    assert missing.error is not None
    assert missing.error.cause is None  # an HTTP status
    assert bad.error is not None
    assert bad.error.cause is None  # refused before sending
    async with Fetcher(caps=fanout.Caps(max_bytes=10)) as fetcher:
        [large] = await fetcher.gather([f"{server.url}/bytes/100"])
    assert large.error is not None
    assert large.error.kind is fanout.ErrorKind.TOO_LARGE
    assert large.error.cause is None  # fanout's own refusal, not an exception's
    assert result_record(refused)["error"] == {
        "kind": "connect",
        "message": refused.error.message,
        "cause": "ClientConnectorError",
    }


# --- a requests iterable that raises -----------------------------------------------------------


async def test_an_exception_of_the_requests_iterable_is_a_source_error(
    server: DemoServer,
) -> None:
    def source() -> Iterator[str]:
        yield f"{server.url}/items/1"
        raise KeyError("lost")

    async def async_source() -> AsyncIterator[str]:
        yield f"{server.url}/items/2"
        raise ZeroDivisionError("nothing")

    seen: list[fanout.Result] = []

    async def consume(fetcher: Fetcher) -> None:
        async for result in fetcher.stream(source()):
            seen.append(result)

    async with Fetcher() as fetcher:
        with pytest.raises(fanout.SourceError, match="raised KeyError: 'lost'") as raised:
            await consume(fetcher)
        assert [r.ok for r in seen] == [True]
        assert isinstance(raised.value.__cause__, KeyError)
        with pytest.raises(fanout.SourceError, match="raised ZeroDivisionError") as raised:
            await fetcher.gather(async_source())
        assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_fetch_raises_a_source_error_as_it_is() -> None:
    def source() -> Iterator[str]:
        raise fanout.SourceError("cannot read urls.txt")
        yield "http://127.0.0.1:1/"  # a generator

    with pytest.raises(fanout.SourceError, match=r"^cannot read urls.txt$") as raised:
        fanout.fetch(source())
    assert raised.value.__cause__ is None
