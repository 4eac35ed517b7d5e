"""The engine's last-resort guard: an exception while handling one request's
attempt becomes that request's ``internal`` result, and the run goes on."""

from __future__ import annotations

import logging

import pytest

from fanout import ErrorKind, Fetcher, Request, RetryPolicy
from fanout.demo import DemoServer


class _Exploding(Request):
    """A request whose retry decision raises: a stand-in for any bug in fanout
    (or a library below it) met while deciding what an attempt's end means."""

    @property
    def retry_safe(self) -> bool:
        raise RuntimeError("boom")


async def test_an_exception_in_the_engine_becomes_an_internal_result(
    server: DemoServer, caplog: pytest.LogCaptureFixture
) -> None:
    failing = [_Exploding(f"{server.url}/status/503?n={i}") for i in range(2)]
    fine = [Request(f"{server.url}/items/{i}") for i in range(1, 50)]
    retry = RetryPolicy(attempts=3, backoff=0.001)
    with caplog.at_level(logging.DEBUG, logger="fanout"):
        async with Fetcher(retry=retry) as fetcher:
            results = await fetcher.gather([*failing, *fine])
    assert len(results) == 51
    for result in results[:2]:
        assert result.error is not None
        assert result.error.kind is ErrorKind.INTERNAL
        assert result.error.message == "unexpected error: RuntimeError('boom')"
        assert result.attempts == 1
    assert all(r.ok for r in results[2:])
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1  # logged once per kind of exception, not once per request
    assert "unexpected error" in tracebacks[0].getMessage()
