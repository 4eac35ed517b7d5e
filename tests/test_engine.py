"""The engine against real HTTP servers on loopback: limits, retries, deadlines, caps."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

import fanout
from fanout import Caps, ErrorKind, Fetcher, Limits, Request, Result, RetryPolicy, Timeouts
from fanout.demo import DemoServer

from .conftest import arrivals, peak_in_flight

pytestmark = pytest.mark.usefixtures("transport")

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.01, backoff_max=0.02)


async def test_gather_keeps_input_order_and_stream_yields_everything(
    server: DemoServer,
) -> None:
    urls = [f"{server.url}/slow?delay={0.05 if i % 2 else 0}&i={i}" for i in range(20)]
    async with Fetcher() as fetcher:
        ordered = await fetcher.gather(urls)
        streamed = [r async for r in fetcher.stream(urls)]
    assert [r.url for r in ordered] == urls
    assert sorted(r.url for r in streamed) == sorted(urls)
    assert all(r.ok and r.status == 200 and r.attempts == 1 for r in ordered)


async def test_result_carries_request_body_hash_and_timings(server: DemoServer) -> None:
    request = Request(f"{server.url}/items/7", key="seven", meta={"n": 7})
    async with Fetcher() as fetcher:
        (result,) = await fetcher.gather([request])
    assert result.request is request
    assert result.key == "seven"
    assert result.request.meta == {"n": 7}
    assert result.final_url == request.url
    assert result.body is not None
    assert result.size == len(result.body)
    import hashlib

    assert result.sha256 == hashlib.sha256(result.body).hexdigest()
    assert result.headers["Content-Type"].startswith("application/json")
    assert result.elapsed >= result.last_attempt > 0


async def test_fetcher_headers_and_user_agent_reach_the_server(server: DemoServer) -> None:
    """The fetcher's headers are defaults: a request's own headers win, case aside,
    and aiohttp's own defaults (Accept) are still sent."""
    plain = Request(f"{server.url}/echo?i=1")
    own = Request(f"{server.url}/echo?i=2", headers={"user-agent": "mine/2", "X-Token": "b"})
    async with Fetcher(headers={"X-Token": "a"}, user_agent="tester/1") as fetcher:
        first, second = await fetcher.gather([plain, own])
    import json

    assert first.body is not None
    assert second.body is not None
    sent = {k.lower(): v for k, v in json.loads(first.body)["headers"].items()}
    assert sent["user-agent"] == "tester/1"
    assert sent["x-token"] == "a"
    assert sent["accept"] == "*/*"
    sent = {k.lower(): v for k, v in json.loads(second.body)["headers"].items()}
    assert sent["user-agent"] == "mine/2"
    assert sent["x-token"] == "b"


@pytest.mark.parametrize("keep_body", [True, False])
async def test_sha256_is_the_body_hash_whether_kept_or_not(
    server: DemoServer, keep_body: bool
) -> None:
    # /bytes/ has a Content-Length and is read whole; a gzip body is read as a stream.
    expected = {
        f"{server.url}/bytes/5000": (bytes(range(256)) * 20)[:5000],
        f"{server.url}/gzip-bomb?size=5000": bytes(5000),
    }
    async with Fetcher(keep_body=keep_body) as fetcher:
        results = await fetcher.gather(list(expected))
    for result, body in zip(results, expected.values(), strict=True):
        assert result.ok, result.error
        assert result.body == (body if keep_body else None)
        assert result.size == 5000
        assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_result_sha256_given_or_computed_from_the_body() -> None:
    request = Request("http://127.0.0.1/")
    assert Result(request=request).sha256 is None
    computed = Result(request=request, body=b"abc")
    assert computed.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert computed.sha256 is computed.sha256  # hashed once
    assert computed == Result(request=request, body=b"abc")  # whether hashed yet or not
    assert Result(request=request, sha256="ab" * 32).sha256 == "ab" * 32


def test_sync_fetch_in_a_plain_script(server_thread: str) -> None:
    results = fanout.fetch([f"{server_thread}/items/{i}" for i in range(1, 6)] + ["python://x"])
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert results[-1].error is not None
    assert results[-1].error.kind is ErrorKind.UNSUPPORTED_SCHEME


async def test_sync_fetch_inside_a_running_loop(server_thread: str) -> None:
    """As in a notebook: a loop is running, fetch() still works (on a worker thread)."""
    asyncio.get_running_loop()
    results = fanout.fetch([f"{server_thread}/items/{i}" for i in range(1, 4)])
    assert [r.status for r in results] == [200, 200, 200]


class _CountedPages:
    """The demo server's page URLs, made lazily, counting how many were read."""

    def __init__(self, base: str, count: int) -> None:
        self.base, self.count, self.read = base, count, 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.count):
            self.read += 1
            yield f"{self.base}/pages/{i}"


async def test_memory_is_bounded_by_the_window(server: DemoServer) -> None:
    """A 1,000,000-URL generator is read at most `window` ahead of the results taken."""
    million = _CountedPages(server.url, 1_000_000)
    limits = Limits(concurrency=16, per_host=None)
    window = limits.effective_window
    yielded = 0
    ahead = 0
    async with Fetcher(limits=limits) as fetcher:
        async for result in fetcher.stream(million):
            assert result.ok
            yielded += 1
            ahead = max(ahead, million.read - yielded)
            if yielded == 2_000:
                break
    assert ahead <= window
    assert ahead >= limits.concurrency  # the read-ahead is really used
    assert million.read <= 2_000 + window


async def test_a_sync_source_is_read_one_request_per_result_taken(server: DemoServer) -> None:
    """Not in batches: after the window is filled, each result taken reads exactly
    one more request, so the window stays full (see Fetcher._refill for why)."""
    source = _CountedPages(server.url, 300)
    limits = Limits(concurrency=4, per_host=None, window=10)
    ahead: list[int] = []
    async with Fetcher(limits=limits) as fetcher:
        taken = 0
        async for _ in fetcher.stream(source):
            taken += 1
            ahead.append(source.read - taken)
    assert ahead[: 300 - 10] == [10] * (300 - 10)  # full until the source runs out
    assert ahead[-10:] == list(range(9, -1, -1))


@pytest.mark.parametrize("how", ["break", "fetcher closes"])
async def test_a_sync_source_left_unread_is_closed(server: DemoServer, how: str) -> None:
    """A generator's finally (an open file, say) runs when its stream ends early."""
    closed = False

    def source() -> Iterator[str]:
        nonlocal closed
        try:
            for i in range(1_000_000):
                yield f"{server.url}/pages/{i}"
        finally:
            closed = True

    async with Fetcher(limits=Limits(concurrency=4, window=8)) as fetcher:
        stream = fetcher.stream(source())
        async for _ in stream:
            break
        if how == "break":
            await stream.aclose()
            assert closed
    assert closed


async def test_async_source_is_read_lazily_too(server: DemoServer) -> None:
    consumed = 0

    async def source() -> AsyncIterator[str]:
        nonlocal consumed
        for i in range(1_000_000):
            consumed += 1
            yield f"{server.url}/pages/{i}"

    limits = Limits(concurrency=8, per_host=None, window=20)
    async with Fetcher(limits=limits) as fetcher:
        yielded = 0
        async for _ in fetcher.stream(source(), ordered=True):
            yielded += 1
            assert consumed - yielded <= 20
            if yielded == 300:
                break


async def test_per_host_and_global_caps_hold(servers: DemoServer) -> None:
    urls = [f"{base}/slow?delay=0.03&i={i}" for i in range(30) for base in servers.urls]
    limits = Limits(concurrency=7, per_host=3)
    async with Fetcher(limits=limits) as fetcher:
        results = await fetcher.gather(urls)
    assert all(r.ok for r in results)
    peaks = [peak_in_flight(servers, base) for base in servers.urls]
    assert max(peaks) == 3  # reached, and never passed
    assert sum(peaks) >= 7


async def test_global_cap_holds_on_one_host(server: DemoServer) -> None:
    urls = [f"{server.url}/slow?delay=0.03&i={i}" for i in range(40)]
    async with Fetcher(limits=Limits(concurrency=5, per_host=None)) as fetcher:
        await fetcher.gather(urls)
    assert peak_in_flight(server, server.url) == 5


def _spacing_ok(times: list[float], rate: float, burst: int = 1) -> bool:
    """At most burst + rate * t arrivals in any window t, with 50 ms of slack: the
    times are the server's, and on a loaded machine one request's transit can lag
    the next one's by tens of milliseconds. A limiter that lets through even 1.5 times
    its rate still fails over the tests' spans of half a second and more."""
    times = sorted(times)
    for i in range(len(times)):
        for j in range(i + burst, len(times)):
            if times[j] - times[i] < (j - i - burst + 1) / rate - 0.050:
                return False
    return True


async def test_per_host_rate_holds_for_each_host(servers: DemoServer) -> None:
    a, b = servers.urls[:2]
    urls = [f"{base}/items/{i}" for i in range(1, 13) for base in (a, b)]
    limits = Limits(concurrency=32, per_host=None, per_host_rate=20.0)
    async with Fetcher(limits=limits) as fetcher:
        results = await fetcher.gather(urls)
    assert all(r.ok for r in results)
    for base in (a, b):
        times = arrivals(servers, base, "/items/")
        assert len(times) == 12
        assert _spacing_ok(times, 20.0)
    # the two hosts run side by side, not one after the other
    assert min(arrivals(servers, b, "/items/")) < max(arrivals(servers, a, "/items/"))


async def test_global_rate_holds_across_hosts(servers: DemoServer) -> None:
    urls = [f"{base}/items/{i}" for i in range(1, 9) for base in servers.urls]
    limits = Limits(concurrency=32, per_host=None, rate=30.0, burst=2)
    async with Fetcher(limits=limits) as fetcher:
        await fetcher.gather(urls)
    times = [t for base in servers.urls for t in arrivals(servers, base, "/items/")]
    assert len(times) == len(urls)
    assert _spacing_ok(times, 30.0, burst=2)


async def test_retries_until_success_and_counts_attempts(server: DemoServer) -> None:
    async with Fetcher(retry=FAST_RETRY) as fetcher:
        ok, failed = await fetcher.gather(
            [f"{server.url}/flaky/2?key=a", f"{server.url}/flaky/5?key=b"]
        )
    assert ok.ok
    assert ok.attempts == 3
    assert failed.error is not None
    assert failed.error.kind is ErrorKind.HTTP_STATUS
    assert failed.status == 503
    assert failed.attempts == 3


async def test_non_idempotent_requests_are_not_retried_unless_asked(server: DemoServer) -> None:
    post = Request(f"{server.url}/flaky/1?key=post", method="POST", body=b"x")
    forced = Request(f"{server.url}/flaky/1?key=forced", method="POST", idempotent=True)
    async with Fetcher(retry=FAST_RETRY) as fetcher:
        once, twice = await fetcher.gather([post, forced])
    assert (once.status, once.attempts) == (503, 1)
    assert (twice.status, twice.attempts) == (200, 2)


async def test_connection_refused_is_retried_and_typed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Fetcher(retry=FAST_RETRY) as fetcher:
        (result,) = await fetcher.gather([Request(f"http://127.0.0.1:{port}/", method="POST")])
    assert result.error is not None
    assert result.error.kind is ErrorKind.CONNECT
    assert result.attempts == 3  # never sent, so safe to retry even a POST


@pytest.mark.parametrize("value", ["1", "HTTP-DATE"])
async def test_retry_after_is_honoured_in_both_forms(server: DemoServer, value: str) -> None:
    if value == "HTTP-DATE":
        import time
        from email.utils import formatdate
        from urllib.parse import quote

        value = quote(formatdate(time.time() + 2, usegmt=True))
    retry = RetryPolicy(attempts=2, backoff=0.01)
    async with Fetcher(retry=retry) as fetcher:
        (result,) = await fetcher.gather([f"{server.url}/retry-after/{value}"])
    assert result.status == 429
    assert result.attempts == 2
    first, second = arrivals(server, server.url, "/retry-after/")
    assert second - first >= 0.9  # waited as told, not the 10 ms backoff


async def test_garbage_retry_after_falls_back_to_backoff(server: DemoServer) -> None:
    async with Fetcher(retry=FAST_RETRY) as fetcher:
        (result,) = await fetcher.gather([f"{server.url}/retry-after/soon"])
    assert result.attempts == 3
    assert result.status == 429


async def test_a_retry_after_past_the_cap_fails_at_once(server: DemoServer) -> None:
    """Retrying before the server's time would only be refused again: the
    request fails at once, its reason naming the header; the host still cools
    down (for the cap), so its next request waits."""
    retry = RetryPolicy(attempts=3, backoff=0.001, retry_after_max=0.5)
    async with Fetcher(retry=retry, limits=Limits(per_host=1)) as fetcher:
        first, after = await fetcher.gather(
            [f"{server.url}/retry-after/3600", f"{server.url}/retry-after/0"]
        )
    assert first.attempts == 1
    assert first.status == 429
    assert first.error is not None
    assert first.error.kind is ErrorKind.HTTP_STATUS
    assert first.error.message == (
        "HTTP 429 Too Many Requests; Retry-After: 3600 exceeds retry_after_max (0.5 s)"
    )
    assert after.attempts == 3  # within the cap: retried as told
    first_at, second_at = arrivals(server, server.url, "/retry-after/")[:2]
    assert second_at - first_at >= 0.45  # the host's cool-down, capped, still held it


@pytest.mark.slow
async def test_a_throttled_host_cools_down_and_others_keep_flowing(
    servers: DemoServer,
) -> None:
    """Host A answers 429 Retry-After: 2; every healthy request to host B completes
    before A's retry is sent, and A's other queued requests wait out the cool-down."""
    a, b = servers.urls[:2]
    throttled = [f"{a}/retry-after/2?n={i}" for i in range(2)]
    healthy = [f"{b}/slow?delay=0.01&n={i}" for i in range(40)]
    urls = throttled[:1] + healthy[:20] + throttled[1:] + healthy[20:]
    # per_host == concurrency: B's requests wait for any slot, in the window, so
    # A's second one is read once A cools down (with per_host below it, B's would
    # be parked, and A's second request read and sent before A's first answer)
    limits = Limits(concurrency=2, per_host=2)
    order: list[str] = []
    async with Fetcher(limits=limits, retry=RetryPolicy(attempts=2)) as fetcher:
        async for result in fetcher.stream(urls):
            order.append(result.url)
    a_times = sorted(arrivals(servers, a, "/retry-after/"))
    b_times = arrivals(servers, b, "/slow")
    assert len(a_times) == 4  # two requests, two attempts each
    assert len(b_times) == 40
    assert max(b_times) < a_times[1]  # every healthy request before the throttled host's retry
    assert a_times[1] - a_times[0] >= 1.9  # the queued request waited out the cool-down too
    assert set(order[:40]) == set(healthy)


async def test_deadlines_end_hung_and_dripping_responses(server: DemoServer) -> None:
    timeouts = Timeouts(connect=1.0, read=0.3, total=1.0)
    async with Fetcher(timeouts=timeouts, retry=RetryPolicy(attempts=1)) as fetcher:
        hang, stall, drip = await fetcher.gather(
            [
                f"{server.url}/hang",
                f"{server.url}/stall",
                f"{server.url}/drip?interval=0.1&count=1000",
            ]
        )
    for result in (hang, stall, drip):
        assert result.error is not None
        assert result.error.kind is ErrorKind.TIMEOUT
    assert hang.error is not None
    assert "read" in hang.error.message
    assert stall.error is not None
    assert "read" in stall.error.message
    assert drip.error is not None
    assert "total" in drip.error.message


async def test_a_worker_goes_on_after_each_total_deadline(server: DemoServer) -> None:
    """The total deadline cancels the attempt's worker, which turns that into a
    TIMEOUT result and works on: with one worker, two timed-out attempts (each
    retried once) and the requests around them all get their results."""
    timeouts = Timeouts(read=5.0, total=0.3)
    drip = f"{server.url}/drip?interval=0.05&count=1000"
    urls = [drip + "&n=1", f"{server.url}/items/1", drip + "&n=2", f"{server.url}/items/2"]
    limits = Limits(concurrency=1)
    retry = RetryPolicy(attempts=2, backoff=0.01)
    async with Fetcher(limits=limits, timeouts=timeouts, retry=retry) as fetcher:
        first, one, second, two = await fetcher.gather(urls)
        assert fetcher.in_flight == 0
    for result in (first, second):
        assert result.error is not None
        assert result.error.kind is ErrorKind.TIMEOUT
        assert "total deadline of 0.3s" in result.error.message
        assert result.attempts == 2
    assert one.ok, one.error
    assert two.ok, two.error
    assert len(arrivals(server, server.url, "/drip")) == 4


async def test_no_total_deadline_when_it_is_off(server: DemoServer) -> None:
    """``total=None``: a response that takes longer than a short total would is
    read to its end."""
    timeouts = Timeouts(read=5.0, total=None)
    async with Fetcher(timeouts=timeouts, retry=RetryPolicy(attempts=1)) as fetcher:
        (result,) = await fetcher.gather([f"{server.url}/drip?interval=0.05&count=10"])
    assert result.ok, result.error
    assert result.size == 10


async def test_an_idle_kept_alive_connection_outlives_the_read_deadline(
    server: DemoServer,
) -> None:
    """fanout's read deadline moves with each chunk and is dropped at the end of a
    response; a connection idle in the pool for longer than the deadline must
    serve its next request, not fail it."""
    timeouts = Timeouts(read=0.1)
    async with Fetcher(timeouts=timeouts, retry=RetryPolicy(attempts=1)) as fetcher:
        (first,) = await fetcher.gather([f"{server.url}/items/1"])
        await asyncio.sleep(0.3)  # the condition under test: idle past the deadline
        (second,) = await fetcher.gather([f"{server.url}/items/2"])
    assert first.ok, first.error
    assert second.ok, second.error


@pytest.mark.parametrize(
    ("head", "trickled", "rest"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: abcdef", b"\r\nContent-Length: 2\r\n\r\nok"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 22\r\n\r\n",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",  # gzip's header: nothing decoded
            b"\xcb\xcf\x06\x00\x47\xdd\xdc\x79\x02\x00\x00\x00",
        ),
    ],
    ids=["header-line", "gzip-header"],
)
async def test_the_read_deadline_counts_every_byte_received(
    head: bytes, trickled: bytes, rest: bytes
) -> None:
    """The read deadline is the longest gap between bytes, not between whole
    header lines or decoded chunks: a response sent a byte every 0.2 s is read
    with a read deadline of 1 s."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            for byte in trickled:
                await writer.drain()
                await asyncio.sleep(0.2)  # the behaviour under test: a gap well under 1 s
                writer.write(bytes([byte]))
            writer.write(rest)
            await writer.drain()
        except ConnectionError:
            pass  # the client gave up (the bug this test catches)
        finally:
            writer.close()

    listener = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    timeouts = Timeouts(read=1.0, total=60.0)
    try:
        async with Fetcher(timeouts=timeouts, retry=RetryPolicy(attempts=1)) as fetcher:
            (result,) = await fetcher.gather([f"http://127.0.0.1:{port}/"])
    finally:
        listener.close()
        await listener.wait_closed()
    assert result.ok, result.error
    assert result.body == b"ok"


async def test_the_lazy_read_deadline_is_in_use() -> None:
    """A canary: if aiohttp changes the internals the lazy read deadline replaces,
    fanout falls back to aiohttp's own (correct, slower) and this says so.
    With FANOUT_AIOHTTP_INTERNALS=off, aiohttp's own is what is used."""
    from aiohttp.client_proto import ResponseHandler

    from fanout.net.aiohttp_internals import IN_USE, _LazyReadDeadline
    from fanout.net.transport import make_session

    session, resolver = make_session(concurrency=1, timeouts=Timeouts(), headers={})
    try:
        factory = session.connector._factory  # type: ignore[union-attr]
        assert factory.func is (_LazyReadDeadline if IN_USE["read_deadline"] else ResponseHandler)
    finally:
        await session.close()
        await resolver.close()


async def test_fetchers_of_addresses_leave_no_file_descriptor_behind(server: DemoServer) -> None:
    # A c-ares channel (a thread, four descriptors, released some time after it
    # is closed) is made only for a name to resolve; addresses need none.
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with Fetcher() as fetcher:  # the first one may load libraries, warm caches
        await fetcher.gather([f"{server.url}/items/1"])
    before = open_descriptors()
    for _ in range(20):
        async with Fetcher() as fetcher:
            await fetcher.gather([f"{server.url}/items/1"])
    assert open_descriptors() <= before + 2  # the server's own may come and go


async def test_caps_on_size_redirects_schemes_and_short_bodies(server: DemoServer) -> None:
    caps = Caps(max_bytes=100_000, max_redirects=3)
    urls = [
        f"{server.url}/bytes/200000",
        f"{server.url}/gzip-bomb?size=1000000000",
        f"{server.url}/redirect/5",
        f"{server.url}/redirect/2",
        f"{server.url}/redirect-to?url=file:///etc/passwd",
        f"{server.url}/short",
        f"{server.url}/bytes/100000",
    ]
    async with Fetcher(caps=caps, retry=RetryPolicy(attempts=1)) as fetcher:
        big, bomb, loop, redirected, scheme, short, exact = await fetcher.gather(urls)
    assert big.error is not None
    assert big.error.kind is ErrorKind.TOO_LARGE
    assert bomb.error is not None
    assert bomb.error.kind is ErrorKind.TOO_LARGE
    assert loop.error is not None
    assert loop.error.kind is ErrorKind.TOO_MANY_REDIRECTS
    assert redirected.ok
    assert redirected.final_url != redirected.url
    assert scheme.error is not None
    assert scheme.error.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert short.error is not None
    assert short.error.kind is ErrorKind.PROTOCOL
    assert exact.ok
    assert exact.size == 100_000


@pytest.mark.parametrize(
    ("max_redirects", "followed", "refused"),
    [
        (10, "/redirect/10", "/redirect/11"),
        (2, "/redirect/2", "/redirect/3"),
        (0, None, "/redirect/1"),
    ],
)
async def test_max_redirects_default_custom_and_none(
    server: DemoServer, max_redirects: int, followed: str | None, refused: str
) -> None:
    caps = Caps(max_redirects=max_redirects)
    async with Fetcher(caps=caps, retry=RetryPolicy(attempts=1)) as fetcher:
        if followed is not None:
            (result,) = await fetcher.gather([server.url + followed])
            assert result.ok, result.error
            assert result.status == 200
            assert result.final_url != result.url
        (result,) = await fetcher.gather([server.url + refused])
    if max_redirects == 0:  # the 3xx itself is the answer
        assert result.ok
        assert result.status == 302
        assert result.final_url == result.url
    else:
        assert result.error is not None
        assert result.error.kind is ErrorKind.TOO_MANY_REDIRECTS


async def test_bad_urls_are_results_among_thousands_of_good_ones(server: DemoServer) -> None:
    bad = ["python://x", "http://", "not a url", "ftp://127.0.0.1/x", "http://[::1", 42]
    urls: list[object] = [f"{server.url}/pages/{i}" for i in range(10_000)]
    for n, item in enumerate(bad):
        urls.insert(n * 1500 + 7, item)
    limits = Limits(concurrency=64, per_host=64)
    async with Fetcher(limits=limits) as fetcher:
        results = await fetcher.gather(urls)  # type: ignore[arg-type]
    assert len(results) == len(urls)
    failures = [r for r in results if not r.ok]
    assert len(failures) == len(bad)
    kinds = [r.error.kind for r in failures if r.error is not None]
    assert kinds == [
        ErrorKind.UNSUPPORTED_SCHEME,
        ErrorKind.INVALID_URL,
        ErrorKind.INVALID_URL,
        ErrorKind.UNSUPPORTED_SCHEME,
        ErrorKind.INVALID_URL,
        ErrorKind.INVALID_URL,
    ]
    assert all(r.attempts == 0 for r in failures)


async def test_http_errors_are_results_with_their_response(server: DemoServer) -> None:
    async with Fetcher() as fetcher:
        (result,) = await fetcher.gather([f"{server.url}/status/404"])
    assert not result.ok
    assert result.status == 404
    assert result.error is not None
    assert result.error.kind is ErrorKind.HTTP_STATUS
    assert result.attempts == 1


async def test_breaking_out_of_stream_closes_everything(server: DemoServer) -> None:
    urls = [f"{server.url}/hang?i={i}" for i in range(3)] + [f"{server.url}/items/1"]
    async with Fetcher(limits=Limits(concurrency=4, per_host=4)) as fetcher:
        async for result in fetcher.stream(urls):
            assert result.ok
            break
    # leaving the block with hung requests in flight must not warn or hang


async def test_cancelling_the_consumer_closes_everything(server: DemoServer) -> None:
    host = server.url.split("://", 1)[1]

    async def consume() -> None:
        async with Fetcher() as fetcher:
            await fetcher.gather([f"{server.url}/hang?i={i}" for i in range(5)])

    task = asyncio.create_task(consume())
    await server.stats.wait_until(lambda stats: stats.in_flight[host] == 5)  # all under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_closing_the_fetcher_gives_cancelled_results(server: DemoServer) -> None:
    got: list[fanout.Result] = []
    first = asyncio.Event()

    async def consume(fetcher: Fetcher) -> None:
        urls = [f"{server.url}/items/1"] + [f"{server.url}/hang?i={i}" for i in range(3)]
        async for result in fetcher.stream(urls):
            got.append(result)
            first.set()

    async with Fetcher() as fetcher:
        consumer = asyncio.create_task(consume(fetcher))
        await first.wait()
    await consumer
    assert len(got) == 4
    kinds = sorted(str(r.error.kind) for r in got if r.error is not None)
    assert kinds == ["cancelled"] * 3


async def test_a_broken_source_reports_its_error_after_earlier_results(
    server: DemoServer,
) -> None:
    def source() -> Iterator[str]:
        yield f"{server.url}/items/1"
        yield f"{server.url}/items/2"
        raise OSError("disk on fire")

    seen: list[fanout.Result] = []

    async def consume(fetcher: Fetcher) -> None:
        async for result in fetcher.stream(source()):
            seen.append(result)

    async with Fetcher() as fetcher:
        with pytest.raises(fanout.SourceError, match="raised OSError: disk on fire") as raised:
            await consume(fetcher)
    assert isinstance(raised.value.__cause__, OSError)
    assert len(seen) == 2


async def test_concurrent_streams_share_one_budget(server: DemoServer) -> None:
    limits = Limits(concurrency=4, per_host=None)
    async with Fetcher(limits=limits) as fetcher:
        batches = await asyncio.gather(
            *(
                fetcher.gather([f"{server.url}/slow?delay=0.03&b={b}&i={i}" for i in range(10)])
                for b in range(3)
            )
        )
    assert all(r.ok for batch in batches for r in batch)
    assert peak_in_flight(server, server.url) == 4


async def test_outside_async_with_is_a_clear_error() -> None:
    fetcher = Fetcher()
    with pytest.raises(RuntimeError, match="async with"):
        await fetcher.gather(["http://127.0.0.1:1/"])
