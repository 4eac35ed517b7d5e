"""fanout.runtime and fanout.urls helpers the hot path relies on."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest
import uvloop
from yarl import URL

from fanout import Fetcher, Limits
from fanout.demo import DemoServer
from fanout.inputs.sources import check_request
from fanout.models import ErrorKind, Failure, Request
from fanout.runtime import (
    COLLECTOR_THRESHOLD,
    _collector_tuned,
    loop_clock,
    run,
    tune_collector,
)
from fanout.urls import parse_request_url


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_tune_collector_raises_the_first_threshold_only() -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector()
    assert gc.get_threshold() == (COLLECTOR_THRESHOLD, 11, 12)


@pytest.mark.usefixtures("thresholds")
@pytest.mark.parametrize("first", [0, COLLECTOR_THRESHOLD * 2])
def test_tune_collector_leaves_a_disabled_or_higher_threshold(first: int) -> None:
    gc.set_threshold(first, 10, 10)
    tune_collector()
    assert gc.get_threshold()[0] == first


@pytest.mark.usefixtures("thresholds")
def test_a_run_fanout_owns_raises_the_threshold_while_it_lasts() -> None:
    gc.set_threshold(700, 10, 10)

    async def during() -> tuple[int, int, int]:
        return gc.get_threshold()

    assert run(during()) == (COLLECTOR_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("thresholds")
def test_a_threshold_changed_during_a_run_is_kept() -> None:
    gc.set_threshold(700, 10, 10)

    async def change() -> None:
        gc.set_threshold(5, 6, 7)

    run(change())
    assert gc.get_threshold() == (5, 6, 7)


@pytest.mark.usefixtures("thresholds")
def test_overlapping_runs_put_the_threshold_back_when_the_last_ends() -> None:
    gc.set_threshold(700, 10, 10)
    with _collector_tuned():
        with _collector_tuned():
            assert gc.get_threshold()[0] == COLLECTOR_THRESHOLD
        assert gc.get_threshold()[0] == COLLECTOR_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)


def test_a_checked_request_is_parsed_once() -> None:
    request = Request("http://127.0.0.1:8080/a?b=1")
    assert check_request(request) is None
    first = parse_request_url(request)
    assert isinstance(first, URL)
    assert parse_request_url(request) is first  # the kept parse, not a new one


def test_a_changed_url_is_parsed_again() -> None:
    request = Request("http://127.0.0.1:8080/a")
    parse_request_url(request)
    request.url = "ftp://127.0.0.1/a"
    failure = parse_request_url(request)
    assert isinstance(failure, Failure)
    assert failure.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert check_request(request) == failure


def test_the_kept_parse_is_not_part_of_equality_or_repr() -> None:
    parsed, fresh = Request("http://127.0.0.1/x"), Request("http://127.0.0.1/x")
    parse_request_url(parsed)
    assert parsed == fresh
    assert repr(parsed) == repr(fresh)


def test_loop_clock_is_monotonic_on_asyncio_loops_and_the_loops_own_elsewhere() -> None:
    plain = asyncio.new_event_loop()
    other = uvloop.new_event_loop()
    try:
        assert loop_clock(plain) is time.monotonic
        assert plain.time() <= loop_clock(plain)() <= plain.time()
        assert loop_clock(other) == other.time
    finally:
        plain.close()
        other.close()


@pytest.mark.usefixtures("thresholds")
async def test_a_fetcher_raises_the_threshold_only_when_asked_and_while_open() -> None:
    gc.set_threshold(700, 10, 10)
    async with Fetcher():
        assert gc.get_threshold() == (700, 10, 10)
    async with Fetcher(tune_collector=True):
        assert gc.get_threshold() == (COLLECTOR_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("thresholds")
@pytest.mark.parametrize("first", [700, COLLECTOR_THRESHOLD, 0])
async def test_a_sync_source_is_read_by_the_consumer_whatever_the_collector(
    server: DemoServer, first: int
) -> None:
    """One way for sync sources: each next() runs in the task that takes the
    results (one request per result taken), never in a feeder task, whether
    the collector's threshold is CPython's, raised, or collection is off."""
    gc.set_threshold(first, 10, 10)
    readers: set[asyncio.Task[object] | None] = set()

    def source() -> Iterator[str]:
        for i in range(20):
            readers.add(asyncio.current_task())
            yield f"{server.url}/item/{i}"

    async with Fetcher(limits=Limits(concurrency=4, window=8)) as fetcher:
        results = [result async for result in fetcher.stream(source())]
    assert len(results) == 20
    assert readers == {asyncio.current_task()}
