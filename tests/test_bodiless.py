"""A response that has no body whatever its Content-Length says (the answer to
a HEAD, a 204, a 304) is not too large for ``max_bytes``: on both transports,
against raw trap servers on loopback."""

from __future__ import annotations

import pytest

from fanout import Caps, Fetcher, Request
from tests.hostile import Reply, Traps, response

pytestmark = pytest.mark.usefixtures("transport")

BIG = str(64 * 1024 * 1024).encode()  # what a GET of the resource would send


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 304), ("GET", 204)])
async def test_a_bodiless_answer_with_a_big_content_length_is_not_too_large(
    method: str, status: int
) -> None:
    head = response(status, [(b"Content-Length", BIG)], length=False)
    async with Traps(hosts=("127.0.0.1",)) as traps:
        traps.route("/r", Reply(head))
        async with Fetcher(caps=Caps(max_bytes=1000)) as fetcher:
            [result] = await fetcher.gather(
                [Request(traps.base("127.0.0.1") + "/r", method=method)]
            )
    assert result.error is None, result.error
    assert (result.status, result.size) == (status, 0)


async def test_a_get_with_that_content_length_still_is() -> None:
    head = response(200, [(b"Content-Length", BIG)], length=False)
    async with Traps(hosts=("127.0.0.1",)) as traps:
        traps.route("/r", Reply(head))
        async with Fetcher(caps=Caps(max_bytes=1000)) as fetcher:
            [result] = await fetcher.gather([traps.base("127.0.0.1") + "/r"])
    assert result.error is not None
    assert result.error.kind.value == "too_large"
