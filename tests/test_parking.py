"""Parking: requests that wait (a retry's back-off, a host's cool-down, a rate
token) give their place in the read-ahead window back, so a throttled host
whose URLs are interleaved with a healthy one's does not starve it.

The throttled host answers 429 with Retry-After: 60, so after its first
answers it cools down for a minute: within a test, none of its other requests
can start. Every assertion counts; the ``asyncio.timeout`` guards only stop a
starved run from waiting out the cool-down.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

from fanout import ConfigError, Fetcher, Limits, RetryPolicy
from fanout.demo import DemoServer, ServerThread

pytestmark = pytest.mark.usefixtures("transport")

ONE_TRY = RetryPolicy(attempts=1)
GUARD = 30.0  # seconds; half the cool-down: a starved run fails instead of waiting it out


@pytest.fixture
async def two_hosts() -> AsyncIterator[DemoServer]:
    async with DemoServer(hosts=["127.0.0.1", "127.0.0.2"]) as running:
        yield running


def _host(base: str) -> str:
    return base.split("://", 1)[1]


class _Mixed:
    """``n`` URLs of a throttled host alternating with ``n`` of a healthy one,
    throttled first; counts what the fetcher has read, and the most requests
    parked seen at each read."""

    def __init__(self, throttled: str, healthy: str, n: int) -> None:
        self.throttled, self.healthy, self.n = throttled, healthy, n
        self.read = self.healthy_read = self.peak_parked = 0
        self.fetcher: Fetcher | None = None

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            for base in (self.throttled, self.healthy):
                if self.fetcher is not None:
                    self.peak_parked = max(self.peak_parked, self.fetcher.parked)
                self.read += 1
                if base is self.healthy:
                    self.healthy_read += 1
                    yield f"{base}/pages/{i}"
                else:
                    yield f"{base}/retry-after/60?i={i}"


async def _take_healthy(
    fetcher: Fetcher, requests: Iterable[str], healthy: str, n: int
) -> tuple[int, int]:
    """Stream ``requests`` until ``n`` results of the ``healthy`` host, each ok,
    have come; the results of other hosts taken meanwhile, and the requests
    parked when the last healthy one came."""
    taken = others = 0
    async for result in fetcher.stream(requests):
        if not result.url.startswith(healthy):
            others += 1
            continue
        assert result.ok
        taken += 1
        if taken == n:
            return others, fetcher.parked
    raise AssertionError(f"only {taken} of {n} healthy results")


async def test_healthy_results_are_not_starved_by_a_throttled_host(
    two_hosts: DemoServer,
) -> None:
    healthy, throttled = two_hosts.urls
    per_host = 2
    limits = Limits(concurrency=4, per_host=per_host, window=8)
    source = _Mixed(throttled, healthy, 100)
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        source.fetcher = fetcher
        _, parked_then = await _take_healthy(fetcher, source, healthy, 100)
    # most of the throttled host's requests were still waiting, parked...
    assert parked_then >= 80
    # ...and none of them was sent during its cool-down: only the first ones,
    # in flight before its first 429 came back
    assert len(two_hosts.stats.arrivals(_host(throttled), "/retry-after/")) <= per_host


async def test_healthy_results_are_not_starved_by_a_slow_host(two_hosts: DemoServer) -> None:
    """A host that never answers holds its own slots; its other requests wait
    for one, parked, so the healthy host's interleaved URLs all come back."""
    healthy, slow = two_hosts.urls
    limits = Limits(concurrency=4, per_host=2, window=8)
    urls = [url for i in range(100) for url in (f"{slow}/hang?i={i}", f"{healthy}/pages/{i}")]
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        others, parked_then = await _take_healthy(fetcher, urls, healthy, 100)
    assert others == 0  # no result of the slow host came first
    assert parked_then >= 90  # all but the slow host's two in flight, at most
    assert len(two_hosts.stats.arrivals(_host(slow), "/hang")) == 2


async def test_parked_requests_stay_within_the_budget(two_hosts: DemoServer) -> None:
    """Beyond ``Limits.parked``, a waiting request keeps its place in the window."""
    healthy, throttled = two_hosts.urls
    limits = Limits(concurrency=4, per_host=2, window=8, parked=10)
    source = _Mixed(throttled, healthy, 100)
    taken = healthy_taken = ahead = peak = 0
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        source.fetcher = fetcher
        async for result in fetcher.stream(source):
            taken += 1
            healthy_taken += result.url.startswith(healthy)
            ahead = max(ahead, source.read - taken)
            peak = max(peak, fetcher.parked, source.peak_parked)
            if fetcher.parked == 10 and healthy_taken == source.healthy_read:
                break  # the window is now full of the throttled host's waiters
    assert peak == 10
    assert limits.effective_window < ahead <= limits.effective_window + 10


async def test_parked_zero_keeps_waiters_in_the_window(two_hosts: DemoServer) -> None:
    """The behaviour before parking: waiters fill the window and the healthy host
    waits behind them."""
    healthy, throttled = two_hosts.urls
    limits = Limits(concurrency=4, per_host=2, window=8, parked=0)
    source = _Mixed(throttled, healthy, 100)
    taken = healthy_taken = ahead = 0
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        source.fetcher = fetcher
        async for result in fetcher.stream(source):
            taken += 1
            healthy_taken += result.url.startswith(healthy)
            ahead = max(ahead, source.read - taken)
            stalled = source.read - taken == 8 and healthy_taken == source.healthy_read
            if stalled or healthy_taken == 100:
                break
    assert source.peak_parked == 0
    assert ahead <= limits.effective_window
    assert healthy_taken < 100


async def test_ordered_output_does_not_park(two_hosts: DemoServer) -> None:
    """Ordered output buffers results behind the first unfinished request: the
    window, not the parking budget, must bound them."""
    healthy, throttled = two_hosts.urls
    limits = Limits(concurrency=4, per_host=2, window=8)
    source = _Mixed(throttled, healthy, 100)
    got = []
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        source.fetcher = fetcher
        async for result in fetcher.stream(source, ordered=True):
            got.append(result.status)
            if len(got) == 4:  # the throttled host's first two 429s, two healthy pages
                break
    assert got == [429, 200, 429, 200]
    assert source.peak_parked == 0
    assert source.read == 8 + 4


async def test_a_retry_waiting_for_its_backoff_is_parked(server: DemoServer) -> None:
    failing = [f"{server.url}/status/503?i={i}" for i in range(5)]
    pages = [f"{server.url}/pages/{i}" for i in range(50)]
    retry = RetryPolicy(attempts=2, backoff=60.0, backoff_max=60.0, jitter=False)
    limits = Limits(concurrency=4, window=4)
    taken = 0
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=retry) as fetcher:
        async for result in fetcher.stream(failing + pages):
            assert result.ok
            taken += 1
            if taken == 50:
                assert fetcher.waiting == 5  # every failed request waits for its retry...
                assert fetcher.parked == 5  # ...outside the window
                break
    assert taken == 50


async def test_a_slow_caller_keeps_undelivered_results_bounded(server: DemoServer) -> None:
    """Parked requests are sent only while the caller has less than a window of
    results to take: a caller that stops taking them stops the fetching."""
    # A rate-limited host: requests queued behind its busy slots wait for its
    # token, and are parked; this rate never makes them wait long.
    limits = Limits(concurrency=4, per_host=None, per_host_rate=1e6, window=8)
    urls = [f"{server.url}/pages/{i}" for i in range(200)]
    async with asyncio.timeout(GUARD), Fetcher(limits=limits) as fetcher:
        stream = fetcher.stream(urls)
        await anext(stream)
        for _ in range(int(GUARD / 0.005)):  # until the fetcher has nothing left to do
            await asyncio.sleep(0.005)
            if fetcher.in_flight == 0 and (fetcher.parked == 0 or _held(fetcher)):
                break
        sent = len(server.stats.arrivals(_host(server.url), "/pages/"))
        undelivered = sent - 1
        assert fetcher.parked > 0
        assert undelivered <= limits.effective_window + limits.concurrency
        await stream.aclose()


def _held(fetcher: Fetcher) -> bool:
    """A host is held back because its run's caller has a window of results to take."""
    return any(run.blocked for run in fetcher._runs)


async def test_closing_with_parked_requests_cancels_them(two_hosts: DemoServer) -> None:
    healthy, throttled = two_hosts.urls
    source = _Mixed(throttled, healthy, 20)
    limits = Limits(concurrency=4, per_host=2, window=8)
    results = []
    async with asyncio.timeout(GUARD), Fetcher(limits=limits, retry=ONE_TRY) as fetcher:
        source.fetcher = fetcher
        stream = fetcher.stream(source)
        async for result in stream:
            results.append(result)
            if sum(r.url.startswith(healthy) for r in results) == 20:
                break
        assert fetcher.parked > 0
        await stream.aclose()
        assert fetcher.parked == 0  # the run ended: its parked requests are dropped


def test_limits_parked_is_checked() -> None:
    assert Limits(concurrency=10).effective_parked == 10_000
    assert Limits(concurrency=1000).effective_parked == 100_000
    assert Limits(parked=0).effective_parked == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="parked"):
            Limits(parked=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ journal

FANOUT = [sys.executable, "-m", "fanout"]


@pytest.fixture
def two_hosts_thread() -> Iterator[ServerThread]:
    with ServerThread(hosts=["127.0.0.1", "127.0.0.2"]) as running:
        yield running


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_parked_option_is_checked(command: str) -> None:
    done = subprocess.run(
        [*FANOUT, command, "--parked", "-1", "-i", "-"], input=b"", capture_output=True
    )
    assert done.returncode == 2
    assert b"--parked" in done.stderr
    assert b"Traceback" not in done.stderr


def test_ctrl_c_leaves_parked_requests_pending(
    tmp_path: Path, two_hosts_thread: ServerThread
) -> None:
    """Parked requests of a journaled run stopped by Ctrl-C are pending, not lost:
    the next run fetches them."""
    healthy, throttled = two_hosts_thread.urls
    urls = []
    for i in range(50):
        urls += [f"{throttled}/retry-after/60?i={i}", f"{healthy}/pages/{i}"]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["-c", "4", "--per-host", "2", "-q"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + GUARD
    while _lines(tmp_path / "out.jsonl") < 50 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition: every healthy page written
    written = _lines(tmp_path / "out.jsonl")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"Traceback" not in stderr
    assert written == 50  # the healthy host was not starved; its pages are done
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert all(r["ok"] and r["url"].startswith(healthy) for r in records)
    status = subprocess.run(
        [*FANOUT, "status", "--journal", "run.db", "--json"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    counts = json.loads(status.stdout)
    assert counts["done"] == 50
    assert counts["pending"] == 50  # the throttled host's, waiting for its cool-down


# ------------------------------------------------------------------ timers


def test_the_dispatcher_never_arms_a_timer_of_microseconds(
    monkeypatch: pytest.MonkeyPatch, server_thread: str
) -> None:
    """On uvloop, whose clock ticks in milliseconds, a wake-up armed for a few
    nanoseconds (a rate of 10^9 per second leaves such waits) fired at once
    and found the token still not due, again and again until the clock
    ticked: thousands of wake-ups for a few hundred requests."""
    uvloop = pytest.importorskip("uvloop")
    fired = 0
    on_timer = Fetcher._on_timer

    def counted(self: Fetcher) -> None:
        nonlocal fired
        fired += 1
        on_timer(self)

    monkeypatch.setattr(Fetcher, "_on_timer", counted)
    limits = Limits(concurrency=16, per_host=None, per_host_rate=1e9)
    urls = [f"{server_thread}/pages/{i}" for i in range(300)]

    async def main() -> list[bool]:
        async with Fetcher(limits=limits) as fetcher:
            return [result.ok async for result in fetcher.stream(urls)]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert all(runner.run(main()))
    assert fired <= len(urls)  # about one wake-up per two requests
