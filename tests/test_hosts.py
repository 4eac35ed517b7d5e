"""Many hosts: per-host state dropped once it carries nothing, what must outlive
it kept, and dead hosts skipped (``host_errors``), on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import fanout
from fanout import ConfigError, ErrorKind, Fetcher, Limits, RetryPolicy, Timeouts
from fanout.demo import DemoServer, ServerThread
from fanout.engine import fetcher as engine
from fanout.engine.hoststate import HostMemory, Remembered
from fanout.net.aiohttp_internals import IN_USE

pytestmark = pytest.mark.usefixtures("transport")

FANOUT = [sys.executable, "-m", "fanout"]
ONCE = RetryPolicy(attempts=1)


def free_port() -> int:
    """A port nothing listens on (on any 127.x address: the test binds none there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def tls_refusing_server() -> tuple[asyncio.Server, list[int]]:
    """A plain TCP server that answers every connection with HTTP bytes and
    closes it: an https request to it fails its TLS handshake (a ``tls``
    failure). Returns the server and a one-element list counting connections."""
    count = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), count


# ------------------------------------------------------------ per-host state


@pytest.mark.parametrize("per_host_rate", [None, 20.0])
async def test_host_state_is_dropped_after_a_run_over_many_hosts(
    per_host_rate: float | None,
) -> None:
    """300 hosts (refused addresses 127.0.1.x and 127.0.2.x: fast failures):
    without a rate, the state held never exceeds the requests outstanding; with
    one, none is left once the rate buckets are full again."""
    port = free_port()
    urls = [f"http://127.0.{1 + i // 250}.{i % 250 + 1}:{port}/" for i in range(300)]
    limits = Limits(concurrency=8, per_host_rate=per_host_rate)
    held = []
    async with Fetcher(limits=limits, retry=ONCE) as fetcher:
        async for result in fetcher.stream(urls):
            assert result.error is not None
            assert result.error.kind is ErrorKind.CONNECT
            held.append(fetcher.hosts_held)
        if per_host_rate is not None:
            await asyncio.sleep(1.5 / per_host_rate)  # the last buckets fill up again
        assert fetcher.hosts_held == 0
    assert len(held) == 300
    if per_host_rate is None:  # else an idle host is held until its bucket is full
        assert max(held) <= limits.effective_window


async def _in_flight_once_admitted(fetcher: Fetcher, url: str) -> int:
    """Requests in flight just after ``url`` is admitted (then the stream is
    cancelled): 0 when it was held back, as a cooling host's request is."""
    in_flight: list[int] = []
    admitted = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield url
        # The feeder asks for the next request just after admitting this one,
        # whose dispatch (or not) was decided then, synchronously.
        in_flight.append(fetcher.in_flight)
        admitted.set()

    waiting = asyncio.ensure_future(anext(fetcher.stream(source())))
    await admitted.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    (count,) = in_flight
    return count


async def test_a_cool_down_outlives_the_dropped_host(server: DemoServer) -> None:
    """A 429 with Retry-After holds the host even once its state is dropped: the
    next request to it is not started."""
    retry = RetryPolicy(attempts=1, retry_after_max=3600)
    async with Fetcher(retry=retry) as fetcher:
        (first,) = await fetcher.gather([f"{server.url}/retry-after/3600"])
        assert first.status == 429
        assert fetcher.hosts_held == 0  # dropped, its cool-down kept apart
        assert await _in_flight_once_admitted(fetcher, f"{server.url}/items/1") == 0
        assert fetcher.hosts_held == 1  # the new request holds it, cooling down
    assert server.stats.count("/items/1") == 0


async def test_a_cool_down_is_not_forgotten_for_failure_counts(
    server: DemoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory's bound (10,000, here 3) is for hosts cooling down: hosts that
    merely failed to connect once (kept 5 minutes each, so 10,000 of them in a
    run with many dead hosts) pushed the cool-downs out, and the host that had
    asked to be left alone was sent requests again."""
    monkeypatch.setattr(engine, "HostMemory", functools.partial(HostMemory, capacity=3))
    retry = RetryPolicy(attempts=1, retry_after_max=3600)
    port = free_port()
    refused = [f"http://127.0.3.{i}:{port}/" for i in range(1, 6)]
    async with Fetcher(retry=retry) as fetcher:
        (first,) = await fetcher.gather([f"{server.url}/retry-after/3600"])
        assert first.status == 429
        failed = await fetcher.gather(refused)
        assert all(r.error is not None and r.error.kind is ErrorKind.CONNECT for r in failed)
        assert fetcher.hosts_held == 0
        assert await _in_flight_once_admitted(fetcher, f"{server.url}/items/1") == 0
    assert server.stats.count("/items/1") == 0


def test_the_memory_is_bounded_and_expires() -> None:
    memory = HostMemory(capacity=2)
    a, b, c = ("http", "a", 80), ("http", "b", 80), ("http", "c", 80)
    memory.put(a, Remembered(failures=1, expires=100.0), now=0.0)
    memory.put(b, Remembered(failures=2, expires=10.0), now=0.0)
    memory.put(c, Remembered(failures=3, expires=100.0), now=0.0)
    assert len(memory) == 2
    assert memory.take(a, now=1.0) is None  # the least recently stored, forgotten
    assert memory.take(b, now=10.0) is None  # expired
    kept = memory.take(c, now=1.0)
    assert kept is not None
    assert kept.failures == 3
    assert len(memory) == 0


# ------------------------------------------------------------ dead hosts


async def test_a_refusing_host_is_down_after_n_failures_with_the_reason() -> None:
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(8)]
    async with Fetcher(limits=Limits(concurrency=1), retry=ONCE, host_errors=3) as fetcher:
        results = await fetcher.gather(urls)
    kinds = [r.error.kind if r.error else None for r in results]
    assert kinds == [ErrorKind.CONNECT] * 3 + [ErrorKind.HOST_DOWN] * 5
    skipped = results[-1]
    assert skipped.error is not None
    assert skipped.error.message.startswith(
        f"skipped: 3 consecutive connection failures to 127.0.0.1:{port} (the last: "
    )
    assert skipped.attempts == 0
    assert not skipped.ok


async def test_nothing_is_sent_to_a_down_host_then_or_later() -> None:
    """TLS failures count too; once the host is down no connection reaches it,
    neither from the requests queued nor from those that come later."""
    server, connections = await tls_refusing_server()
    port = server.sockets[0].getsockname()[1]
    urls = [f"https://127.0.0.1:{port}/{i}" for i in range(10)]
    try:
        async with Fetcher(limits=Limits(concurrency=1), retry=ONCE, host_errors=3) as fetcher:
            results = await fetcher.gather(urls)
            later = await fetcher.gather(urls[:4])
    finally:
        server.close()
        await server.wait_closed()
    kinds = [r.error.kind if r.error else None for r in results]
    assert kinds == [ErrorKind.TLS] * 3 + [ErrorKind.HOST_DOWN] * 7
    assert all(r.error is not None and r.error.kind is ErrorKind.HOST_DOWN for r in later)
    assert connections[0] == 3


async def test_a_host_that_never_answers_a_connect_is_down_with_a_total_deadline(
    transport: str,
) -> None:
    """A host whose SYNs go unanswered (here: a listener whose accept queue is
    full) with ``total`` below ``connect`` (``--timeout 5s``, a common choice):
    each attempt ends at the total deadline while connecting. That counted as
    a request that reached the host, so the host was never skipped (and the
    count of a host that failed both ways started again). Telling that the
    attempt was still connecting is a patched path's (see
    fanout.net.aiohttp_internals.while_connecting); its fallback counts such an
    attempt as sent, and the host is never skipped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue: further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        urls = [f"http://127.0.0.1:{port}/{i}" for i in range(3)]
        timeouts = Timeouts(total=0.3)  # connect: 10 s
        limits = Limits(concurrency=1)
        async with Fetcher(limits=limits, retry=ONCE, timeouts=timeouts, host_errors=2) as fetcher:
            results = await fetcher.gather(urls)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    kinds = [r.error.kind if r.error else None for r in results]
    # libcurl says whether it had connected: no private path to fall back from
    connecting_known = transport == "curl" or IN_USE["connect_frame"]
    last = ErrorKind.HOST_DOWN if connecting_known else ErrorKind.TIMEOUT
    assert kinds == [ErrorKind.TIMEOUT, ErrorKind.TIMEOUT, last]


async def test_a_retry_in_back_off_ends_as_host_down() -> None:
    port = free_port()
    retry = RetryPolicy(attempts=5, backoff=0.001, backoff_max=0.002)
    async with Fetcher(retry=retry, host_errors=3) as fetcher:
        (result,) = await fetcher.gather([f"http://127.0.0.1:{port}/"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.HOST_DOWN
    assert result.attempts == 3  # the fourth try, when due, was skipped


async def test_a_success_starts_the_count_again() -> None:
    """2 failures, a success, 2 failures on one host with host_errors=3: never
    down. The count also outlives the host's dropped state between runs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with Fetcher(limits=Limits(concurrency=1), retry=ONCE, host_errors=3) as fetcher:
        before = await fetcher.gather([f"{url}/a", f"{url}/b"])
        async with DemoServer(port=port):
            (ok,) = await fetcher.gather([f"{url}/items/1"])
        after = await fetcher.gather([f"{url}/c", f"{url}/d"])
        assert fetcher.hosts_held == 0
    assert ok.ok
    kinds = [r.error.kind if r.error else None for r in (*before, *after)]
    assert kinds == [ErrorKind.CONNECT] * 4


async def test_the_failure_count_outlives_the_dropped_host() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with Fetcher(retry=ONCE, host_errors=3) as fetcher:
        first = await fetcher.gather([f"{url}/a", f"{url}/b"])
        assert fetcher.hosts_held == 0
        second = await fetcher.gather([f"{url}/c"])
        third = await fetcher.gather([f"{url}/d"])
    kinds = [r.error.kind if r.error else None for r in (*first, *second, *third)]
    assert kinds == [ErrorKind.CONNECT] * 3 + [ErrorKind.HOST_DOWN]


async def test_a_host_whose_down_mark_expired_is_counted_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once its down mark has expired, a host dropped and made again gets
    ``host_errors`` fresh tries, as a host still held does: not one. (The memory
    keeps a dropped host's count longer than its mark when it was dropped
    after being marked.) The sleeps let the marks' time run out; with a
    DOWN_FOR of 1 s each has 0.4 s of margin."""
    monkeypatch.setattr(engine, "DOWN_FOR", 1.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    one = Limits(concurrency=1)
    async with Fetcher(limits=one, retry=ONCE, host_errors=3) as fetcher:
        first = await fetcher.gather([f"{url}/{i}" for i in range(3)])  # marked down
        await asyncio.sleep(0.6)
        second = await fetcher.gather([f"{url}/3"])  # still down; dropped again later
        assert fetcher.hosts_held == 0
        await asyncio.sleep(0.6)  # the mark has expired, what the memory keeps has not
        third = await fetcher.gather([f"{url}/4", f"{url}/5"])
    kinds = [r.error.kind if r.error else None for r in (*first, *second, *third)]
    assert kinds == [ErrorKind.CONNECT] * 3 + [ErrorKind.HOST_DOWN] + [ErrorKind.CONNECT] * 2


async def test_host_errors_zero_never_skips() -> None:
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(12)]
    async with Fetcher(limits=Limits(concurrency=2), retry=ONCE, host_errors=0) as fetcher:
        results = await fetcher.gather(urls)
    assert all(r.error is not None and r.error.kind is ErrorKind.CONNECT for r in results)


def test_fetch_takes_host_errors() -> None:
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(3)]
    results = fanout.fetch(urls, retry=ONCE, limits=Limits(concurrency=1), host_errors=1)
    assert [r.error.kind if r.error else None for r in results] == [
        ErrorKind.CONNECT,
        ErrorKind.HOST_DOWN,
        ErrorKind.HOST_DOWN,
    ]


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_a_bad_host_errors_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="host_errors"):
        Fetcher(host_errors=value)  # type: ignore[arg-type]


# ------------------------------------------------------------ the commands


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*FANOUT, *args], capture_output=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
@pytest.mark.parametrize("value", ["-1", "x", ""])
def test_a_bad_host_errors_option_is_one_line_and_status_2(command: str, value: str) -> None:
    done = run(command, "--host-errors", value, "http://127.0.0.1:1/")
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "--host-errors" in lines[0]


def test_aggregate_skips_a_down_host() -> None:
    port = free_port()
    done = run(
        "aggregate",
        f"http://127.0.0.1:{port}/items/{{1..6}}",
        "-f",
        "price",
        "-c",
        "1",
        "--retries",
        "0",
        "--host-errors",
        "2",
        "--format",
        "json",
    )
    report = json.loads(done.stdout)
    assert report["requests"]["failed"] == {"connect": 2, "host_down": 4}


def test_journal_retry_kinds_host_down_brings_them_back(tmp_path: Path) -> None:
    """host_down records are failures: --retry-kinds host_down fetches them again
    (and only them) once the host is back."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "urls.txt").write_text("".join(f"{base}/items/{i}\n" for i in range(1, 6)))
    command = ["fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["--retries", "0", "-c", "1", "-q", "--host-errors", "2"]
    first = run(*command, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r["error"]["kind"] for r in records] == ["connect"] * 2 + ["host_down"] * 3
    assert "skipped: 2 consecutive connection failures" in records[-1]["error"]["message"]
    with ServerThread(port=port) as server:
        again = run(*command, "--retry-kinds", "host_down", cwd=tmp_path)
        stats = server.stats
    assert again.returncode == 0, again.stderr  # what this run fetched is ok
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    by_url = {r["url"]: r for r in records}
    assert len(records) == 5
    assert [by_url[f"{base}/items/{i}"]["ok"] for i in range(1, 6)] == [False] * 2 + [True] * 3
    assert [stats.count(f"/items/{i}") for i in range(1, 6)] == [0, 0, 1, 1, 1]


async def test_requests_parked_at_a_host_that_goes_down_end_as_host_down() -> None:
    """Requests parked for the host's rate token (issue 18's parking) are among
    those skipped once it is down, and leave the parked count."""
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(30)]
    limits = Limits(concurrency=4, per_host_rate=50.0)
    async with Fetcher(limits=limits, retry=ONCE, host_errors=3) as fetcher:
        kinds = []
        peak = 0
        async for result in fetcher.stream(urls):
            assert result.error is not None
            kinds.append(result.error.kind)
            peak = max(peak, fetcher.parked)
        assert fetcher.parked == 0
    assert kinds == [ErrorKind.CONNECT] * 3 + [ErrorKind.HOST_DOWN] * 27
    assert peak > 0  # they were parked, waiting for their token


# ------------------------------------------------------------ both transports' words


async def test_a_name_that_does_not_resolve_is_a_dns_failure_not_retried() -> None:
    async with Fetcher(retry=RetryPolicy(attempts=3, backoff=0.001)) as fetcher:
        (result,) = await fetcher.gather(["http://no-such-host.invalid/"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DNS, result.error
    assert "no-such-host.invalid" in result.error.message
    assert result.attempts == 1


async def test_the_connect_deadline_is_a_timeout_that_sent_nothing() -> None:
    """SYNs unanswered (a full accept queue): the connect deadline ends each
    attempt, as not sent, so two in a row mark the host down."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue: further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        urls = [f"http://127.0.0.1:{port}/{i}" for i in range(3)]
        timeouts = Timeouts(connect=0.3)
        limits = Limits(concurrency=1)
        async with Fetcher(limits=limits, retry=ONCE, timeouts=timeouts, host_errors=2) as fetcher:
            results = await fetcher.gather(urls)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    first = results[0].error
    assert first is not None
    assert first.kind is ErrorKind.TIMEOUT
    assert first.message == "connect deadline of 0.3s"
    kinds = [r.error.kind if r.error else None for r in results]
    assert kinds == [ErrorKind.TIMEOUT, ErrorKind.TIMEOUT, ErrorKind.HOST_DOWN]
