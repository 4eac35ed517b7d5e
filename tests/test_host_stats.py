"""The per-host snapshot (``Fetcher.host_stats``): loopback sites that count
what they answer, checked against the snapshot taken while one host still
holds requests and after the run. The rate and quantile arithmetic and the
table's bound are tested without a network."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from rich.console import Console

from fanout import Fetcher, Limits, RetryPolicy
from fanout.cli.progress import HOST_ROWS, LiveProgress, eta_seconds
from fanout.engine.hoststats import RATE_WINDOW, SAMPLES, HostCounters, HostTable, quantile
from fanout.journal import Journal, State
from fanout.output.stats import RunStats
from tests.loopback import serving


class Site:
    """A loopback site: /robots.txt answers ``robots`` (404 when empty); other
    paths answer 200, or 429 every ``shed``-th request, with ``headers``; with
    ``hold``, they wait for :attr:`release`, as /held always does (not
    counted). Counts its answers by status."""

    def __init__(
        self,
        *,
        robots: str = "",
        shed: int = 0,
        hold: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.robots = robots
        self.shed = shed
        self.hold = hold
        self.headers = headers or {}
        self.answers: Counter[int] = Counter()
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.expect = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/robots.txt":
            if self.robots:
                return web.Response(text=self.robots)
            return web.Response(status=404)
        if request.path == "/held":
            await self.release.wait()
            return web.Response()
        self.arrived += 1
        if self.arrived == self.expect:
            self.all_arrived.set()
        if self.hold:
            await self.release.wait()
        status = 429 if self.shed and self.arrived % self.shed == 0 else 200
        self.answers[status] += 1
        return web.Response(status=status, headers=self.headers)

    def host(self) -> str:
        return self.url.removeprefix("http://")


@contextlib.asynccontextmanager
async def site(**options: object) -> AsyncIterator[Site]:
    state = Site(**options)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/{tail:.*}", state.handle)
    async with serving(app) as state.url:
        try:
            yield state
        finally:
            state.release.set()


HELD = 3  # requests the held site keeps in flight
QUOTA = {"RateLimit-Limit": "50", "RateLimit-Remaining": "1000", "RateLimit-Reset": "10"}


async def test_the_snapshot_matches_what_the_sites_counted() -> None:
    """Four hosts: one holding its requests, one shedding every third with a
    429, one advertising a quota of 50 per 10 s, one with a Crawl-delay.
    Taken while the first still holds its requests, the snapshot shows them in
    flight, each other host's requests and 429s as its server counted them,
    and each rate limit with its source."""
    async with (
        site(hold=True) as held,
        site(shed=3) as shedding,
        site(headers=QUOTA) as hinting,
        site(robots="User-agent: *\nCrawl-delay: 0.01\n") as polite,
    ):
        held.expect = HELD
        urls = [f"{held.url}/{i}" for i in range(HELD)]
        urls += [f"{s.url}/{i}" for s in (shedding, hinting, polite) for i in range(6)]
        # One request each kept in flight: an idle host's state (its quota,
        # its robots.txt pace) may be dropped before the snapshot is taken.
        urls += [f"{s.url}/held" for s in (hinting, polite)]
        config = {
            "limits": Limits(concurrency=16, per_host=8, per_host_rate=1000.0),
            "retry": RetryPolicy(attempts=1),
            "robots": True,
            "adapt": False,  # the shedding host keeps the user's rate (test_shedding.py adapts)
        }
        async with Fetcher(**config) as fetcher:  # type: ignore[arg-type]
            stream = fetcher.stream(urls)
            async with contextlib.aclosing(stream):
                got = 0
                async for _ in stream:
                    got += 1
                    if got == len(urls) - HELD - 2:
                        break
                await held.all_arrived.wait()
                live = {row["host"]: row for row in fetcher.host_stats()}
                held.release.set()
            after = {row["host"]: row for row in fetcher.host_stats(top=2)}
            assert fetcher.host_stats(top=0) == []

    assert live[held.host()]["in_flight"] == HELD
    assert live[held.host()]["requests"] == 0
    assert live[held.host()]["p50_ms"] is None
    for server in (shedding, hinting, polite):
        row = live[server.host()]
        assert row["in_flight"] <= (0 if server is shedding else 1)
        assert row["requests"] == sum(server.answers.values()) == 6
        assert row["throttled"] == server.answers[429]
        assert row["requests_per_s"] > 0
        assert row["p50_ms"] is not None
        assert row["p95_ms"] is not None
        assert row["p95_ms"] >= row["p50_ms"]
    assert live[shedding.host()]["throttled"] == 2
    assert live[shedding.host()]["rate_source"] == "user"
    assert live[shedding.host()]["rate_limit"] == 1000.0
    assert live[hinting.host()]["rate_source"] == "server"
    assert live[hinting.host()]["rate_limit"] == 5.0
    assert live[polite.host()]["rate_source"] == "robots"
    assert live[polite.host()]["rate_limit"] == 100.0
    # the busiest first: the held host, in flight, then by recent rate
    assert next(iter(live)) == held.host()
    assert len(after) == 2


def test_recent_rate_over_the_window_or_since_the_first() -> None:
    counters = HostCounters()
    assert counters.rate(100.0) == 0.0
    counters.first = 99.0
    for end in (99.5, 99.75, 100.0):
        counters.ends.append(end)
    assert counters.rate(100.0) == pytest.approx(3.0)  # 3 in the 1 s since the first
    counters.first = 0.0
    assert counters.rate(100.0) == pytest.approx(3 / RATE_WINDOW)
    assert counters.rate(100.0 + RATE_WINDOW) == 0.0  # all older than the window
    for i in range(SAMPLES):
        counters.ends.append(200.0 + i / 100)
    last = 200.0 + (SAMPLES - 1) / 100
    # more samples in the window than kept: measured over those kept
    assert counters.rate(last) == pytest.approx(SAMPLES / (last - 200.0))


def test_quantiles_by_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert quantile(values, 0.5) == 50.0
    assert quantile(values, 0.95) == 95.0
    assert quantile([7.0], 0.95) == 7.0
    assert quantile([], 0.5) is None


async def test_the_table_stays_bounded_over_many_hosts() -> None:
    """Counters are kept for the most recent hosts only: memory is flat in the
    number of hosts."""
    table = HostTable(capacity=3)
    for port in range(10):
        table.get(("http", "127.0.0.1", port)).requests += 1
    assert len(table) == 3
    assert list(table.entries) == [("http", "127.0.0.1", port) for port in (7, 8, 9)]
    async with Fetcher() as fetcher:
        assert fetcher.host_stats() == []


async def test_the_progress_bar_shows_the_busiest_hosts() -> None:
    """Six hosts, one shedding every third request with a 429: the bar has the
    table of the five busiest under it, the shedding host first with the
    requests and 429s its server counted, and the rate it adapted to (below
    the user's)."""
    console = Console(file=io.StringIO(), width=120, color_system=None)
    live = LiveProgress(RunStats(), 10, console=console)
    async with contextlib.AsyncExitStack() as stack:
        shedding = await stack.enter_async_context(site(shed=3))
        quiet = [await stack.enter_async_context(site()) for _ in range(5)]
        urls = [f"{shedding.url}/{i}" for i in range(12)]
        urls += [f"{s.url}/{i}" for s in quiet for i in range(2)]
        limits = Limits(concurrency=16, per_host=8, per_host_rate=1000.0)
        async with Fetcher(limits=limits, retry=RetryPolicy(attempts=1)) as fetcher:
            live.attach(fetcher)
            await fetcher.gather(urls)
            live.refresh()
    assert len(live.hosts) == HOST_ROWS
    console.print(live._progress.get_renderable())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["host", "in", "flight"])
    rows = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert len(rows) == HOST_ROWS
    assert {row[0] for row in rows} <= {s.host() for s in (shedding, *quiet)}
    first = rows[0]
    assert first[0] == shedding.host()
    assert first[1] == "0"  # in flight
    assert first[4] == "adapted"
    assert float(first[3].removesuffix("/s")) < 1000.0
    assert first[5] == "-"  # no cool-down
    assert int(first[6]) == shedding.answers[429] == 4


def _journal(path: Path) -> None:
    with Journal.open(path, key_scheme="url") as journal:
        run = journal.begin_run()
        keys = [f"http://127.0.0.1:8001/{i}" for i in range(5)]
        keys += [f"https://[::1]/{i}" for i in range(3)] + ["http://127.0.0.2:9/x"]
        journal.classify([(key, line) for line, key in enumerate(keys, 1)], run)
        states = {0: State.DONE, 1: State.DONE, 2: State.FAILED, 5: State.DONE}
        journal.record(
            [
                (keys[i], state, "timeout" if state is State.FAILED else None, b"{}\n")
                for i, state in states.items()
            ],
            None,
        )


def test_status_shows_keys_by_host(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    _journal(path)
    with Journal.open(path, key_scheme="", create=False) as journal:
        hosts, read = journal.host_counts(top=2)
        assert read == 9
        assert [h.as_dict() for h in hosts] == [
            {"host": "127.0.0.1:8001", "done": 2, "failed": 1, "pending": 2},
            {"host": "[::1]:443", "done": 1, "failed": 0, "pending": 2},
        ]
        # a sample: the first keys taken
        hosts, read = journal.host_counts(sample=4)
        assert read == 4
        assert [(h.host, h.done + h.failed + h.pending) for h in hosts] == [("127.0.0.1:8001", 4)]
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "status", "--journal", str(path)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.decode().splitlines()
    at = lines.index("  by host  (the 3 with most keys, over every key)")
    assert [line.split() for line in lines[at + 2 : at + 5]] == [
        ["127.0.0.1:8001", "2", "1", "2"],
        ["[::1]:443", "1", "0", "2"],
        ["127.0.0.2:9", "0", "0", "1"],
    ]
    as_json = subprocess.run(
        [sys.executable, "-m", "fanout", "status", "--journal", str(path), "--json"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    data = json.loads(as_json.stdout)
    assert data["hosts_sampled"] == 9
    assert data["hosts"][2] == {"host": "127.0.0.2:9", "done": 0, "failed": 0, "pending": 1}


async def test_the_eta_is_at_least_what_a_rate_limited_host_needs() -> None:
    """One host held to 1 request per second with ten requests: after the
    first result, nine are left there, the last to start 9 s after the
    first, whatever the overall rate says; the bar's ETA shows it."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    stats = RunStats()
    live = LiveProgress(stats, 10, console=console)
    limits = Limits(per_host_rate=1.0, burst=1)
    async with site() as slow, Fetcher(limits=limits) as fetcher:
        assert fetcher.least_time_left == 0.0
        live.attach(fetcher)
        stream = fetcher.stream([f"{slow.url}/{i}" for i in range(10)])
        async with contextlib.aclosing(stream):
            async for result in stream:
                stats.add(result)
                live.refresh()
                least = fetcher.least_time_left
                break
    assert 8.0 < least <= 9.0  # the 10th starts 9 s after the 1st
    assert 8.0 < live.least_left <= 9.0
    assert live.eta == pytest.approx(least, abs=0.5)  # less the time since
    console.print(live._progress.get_renderable())
    assert re.search(r"eta 0:00:0[89]\b", console.file.getvalue())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("estimate", "least", "finished", "shown"),
    [
        (None, 0.0, False, None),  # nothing known yet
        (12.0, 0.0, False, 12.0),  # no host held: rich's estimate
        (3.0, 9.0, False, 9.0),  # a held host needs more
        (None, 9.0, False, 9.0),
        (30.0, 9.0, False, 30.0),  # the overall rate says more
        (3.0, 9.0, True, 0.0),  # finished
    ],
)
def test_the_bar_eta_is_the_larger_of_the_two(
    estimate: float | None, least: float, finished: bool, shown: float | None
) -> None:
    assert eta_seconds(estimate, least, finished) == shown


async def test_the_eta_counts_the_requests_not_yet_read() -> None:
    """Two hosts held to 1 request per second, 10 requests each, alternating,
    and a read-ahead of 2 that no request may leave (parked=0): at the first
    result, 3 or so are read. With the total known, those not yet read count
    at each host in its share of those read (about half, of so few): 9 s or
    more are left, not the 1 or 2 of the requests read."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    stats = RunStats()
    live = LiveProgress(stats, 20, console=console)
    limits = Limits(per_host_rate=1.0, burst=1, window=2, parked=0)
    async with site() as a, site() as b, Fetcher(limits=limits) as fetcher:
        live.attach(fetcher)
        urls = [f"{base}/{i}" for i in range(10) for base in (a.url, b.url)]
        stream = fetcher.stream(urls)
        async with contextlib.aclosing(stream):
            async for result in stream:
                stats.add(result)
                live.refresh()
                read_only = fetcher.least_time_left
                break
    assert read_only <= 3.0
    assert 8.0 <= live.least_left <= 19.0
    eta = live.eta
    assert eta is not None
    assert eta >= 7.5


def test_the_held_time_drops_between_snapshots() -> None:
    """Taken every half second, the held hosts' time left is shown less the
    time since it was taken (never below 0)."""
    live = LiveProgress(RunStats(), 10, console=Console(file=io.StringIO()))
    live.least_left = 5.0
    live._snapshot_at = time.monotonic() - 2.0
    assert 2.5 <= live.held_left() <= 3.0
    live._snapshot_at = time.monotonic() - 6.0
    assert live.held_left() == 0.0
