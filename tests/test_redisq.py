"""Redis mode (fanout.redisq, fanout submit/worker/status/export --redis)
against a real redis-server of the test's own and real HTTP servers on
loopback, counting requests at the server."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from fanout.config import FetcherConfig
from fanout.errors import QueueError
from fanout.policy import Limits, RetryPolicy
from fanout.redisq import Worker, export, records, retry_failed, status, submit
from fanout.redisq.queue import QueueKeys
from tests.loopback import serving
from tests.redis_server import RedisServer, _free_port

DEADLINE = 60.0  # seconds for anything a test waits on (a shared, loaded machine)


class Counting:
    """An HTTP app that counts the requests to each path; ``/slow/N`` answers
    after 50 ms and counts the most requests in flight at once; ``/fail/N`` answers
    500 while ``failing``; a request to ``/held/N`` waits for ``release``, then
    answers with the status its query names (``?status=500``), else 200."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.failing = True
        self.release = asyncio.Event()
        self.held = 0
        self.held_changed = asyncio.Event()
        self.in_flight = self.peak = 0
        self.arrivals: list[float] = []  # of /slow/N, on the loop's clock

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ok/{n}", self.ok)
        app.router.add_get("/fail/{n}", self.fail)
        app.router.add_get("/held/{n}", self.hold)
        app.router.add_get("/slow/{n}", self.slow)
        app.router.add_get("/busy/{n}", self.busy)
        return app

    async def busy(self, request: web.Request) -> web.Response:
        """A 429 asking for one second of rest."""
        self.hits[request.path] += 1
        self.arrivals.append(asyncio.get_running_loop().time())
        return web.Response(status=429, headers={"Retry-After": "1"})

    async def slow(self, request: web.Request) -> web.Response:
        """Answers after 50 ms (a server's latency), counting requests in flight."""
        self.hits[request.path] += 1
        self.arrivals.append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        return web.Response(text="slow")

    async def ok(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(text=f"page {request.match_info['n']}")

    async def fail(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=500 if self.failing else 200, text="x")

    async def hold(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        self.held += 1
        self.held_changed.set()
        await self.release.wait()
        return web.Response(status=int(request.query.get("status", "200")), text="held")

    async def wait_held(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while self.held < count:
                self.held_changed.clear()
                await self.held_changed.wait()


@pytest.fixture
async def site() -> AsyncIterator[tuple[Counting, str]]:
    counting = Counting()
    async with serving(counting.app()) as base:
        yield counting, base


def _config(
    concurrency: int = 4, per_host: int | None = 0, per_host_rate: float | None = None
) -> FetcherConfig:
    """-c ``concurrency``, --per-host ``per_host`` (0: as -c; None: none), no retry."""
    return FetcherConfig(
        limits=Limits(
            concurrency=concurrency,
            per_host=concurrency if per_host == 0 else per_host,
            per_host_rate=per_host_rate,
        ),
        retry=RetryPolicy(attempts=1),
    )


def _records(url: str, queue: str = "fanout") -> list[dict[str, object]]:
    return [orjson.loads(line) for line in records(url, queue=queue)]


async def _work(url: str, **options: object) -> None:
    options.setdefault("config", _config())
    async with asyncio.timeout(DEADLINE):
        await Worker(url, exit_when_done=True, **options).run()  # type: ignore[arg-type]


def test_redis_server_keeps_its_data_through_kill_and_restart(
    persistent_redis: RedisServer,
) -> None:
    submit(persistent_redis.url, ["http://127.0.0.1:9/a"])
    persistent_redis.restart()
    assert status(persistent_redis.url).total == 1


async def test_submit_twice_dedups_by_key_in_redis(redis_server: RedisServer) -> None:
    url = redis_server.url
    first = submit(url, ["http://h.test/a", "http://h.test/b", "http://h.test/a"])
    second = submit(url, ["http://h.test/b", "http://h.test/c"])
    assert (first.added, first.already) == (2, 1)
    assert (second.added, second.already) == (1, 1)
    counts = status(url)
    assert (counts.total, counts.pending, counts.in_flight, counts.done) == (3, 3, 0, 0)


async def test_two_workers_finish_a_queue_with_one_result_per_key(
    redis_server: RedisServer, site: tuple[Counting, str], tmp_path: Path
) -> None:
    counting, base = site
    urls = [f"{base}/ok/{n}" for n in range(60)]
    submit(redis_server.url, urls)
    await asyncio.gather(
        _work(redis_server.url, config=_config(2), out_dir=tmp_path / "pages"),
        _work(redis_server.url, config=_config(2), out_dir=tmp_path / "pages"),
    )
    assert counting.hits == Counter({f"/ok/{n}": 1 for n in range(60)})
    found = _records(redis_server.url)
    assert [record["key"] for record in found] == urls  # one each, in submit order
    assert all(record["ok"] and record["path"] for record in found)
    assert (tmp_path / "pages" / str(found[7]["path"])).read_text() == "page 7"
    counts = status(redis_server.url)
    assert (counts.pending, counts.in_flight, counts.done, counts.failed) == (0, 0, 60, {})
    out = io.BytesIO()
    assert export(redis_server.url, out, fmt="csv") == 60
    assert out.getvalue().count(b"\n") == 61


async def test_credentials_make_two_keys_and_reach_no_record(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    _, base = site
    host = base.removeprefix("http://")
    urls = [f"http://u:secret1@{host}/ok/1", f"http://u:secret2@{host}/ok/1"]
    assert submit(redis_server.url, [*urls, urls[0]]).added == 2
    await _work(redis_server.url)
    out = io.BytesIO()
    assert export(redis_server.url, out) == 2
    assert b"secret" not in out.getvalue()
    assert out.getvalue().count(f"http://***@{host}/ok/1".encode()) == 6  # url, key, final_url


async def test_failed_keys_are_counted_by_kind_and_put_back_by_retry(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    submit(redis_server.url, [f"{base}/ok/1", f"{base}/fail/1", f"{base}/fail/2"])
    await _work(redis_server.url)
    assert status(redis_server.url).failed == {"http_status": 2}
    counting.failing = False
    assert retry_failed(redis_server.url, kinds=frozenset({"timeout"})) == 0
    assert retry_failed(redis_server.url) == 2
    assert status(redis_server.url).pending == 2
    await _work(redis_server.url)
    counts = status(redis_server.url)
    assert (counts.done, counts.failed) == (3, {})
    assert counting.hits == Counter({"/ok/1": 1, "/fail/1": 2, "/fail/2": 2})
    assert [record["ok"] for record in _records(redis_server.url)] == [True, True, True]


async def test_a_request_handed_out_too_often_gets_an_abandoned_record(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    submit(redis_server.url, [f"{base}/ok/1"])
    for _ in range(2):  # two workers take it and die with it (their takes, never a result)
        ghost = Worker(redis_server.url, reclaim_after=1e-6, name="ghost")  # takes at 0 ms idle
        await _take_and_vanish(ghost)
    await _work(redis_server.url, max_deliveries=2, reclaim_after=0.001)
    assert counting.hits == Counter()
    (record,) = _records(redis_server.url)
    assert record["error"]["kind"] == "abandoned"  # type: ignore[index]
    assert status(redis_server.url).failed == {"abandoned": 1}


async def _take_and_vanish(worker: Worker) -> None:
    """What a worker killed right after taking does: take, and never report."""
    import redis.asyncio as aredis

    from fanout.redisq import scripts

    client = aredis.Redis.from_url(worker.url)
    try:
        worker._scripts = {"take": client.register_script(scripts.TAKE)}
        assert len(await worker._take(10)) == 1
    finally:
        await client.aclose()


async def test_a_queue_of_a_newer_fanout_is_refused(redis_server: RedisServer) -> None:
    import redis

    submit(redis_server.url, ["http://h.test/a"])
    with redis.Redis.from_url(redis_server.url) as client:
        client.hset(QueueKeys("fanout").meta, "version", 99)
    with pytest.raises(QueueError, match=r"has format 99 .*upgrade fanout"):
        submit(redis_server.url, ["http://h.test/b"])
    with pytest.raises(QueueError, match="has format 99"):
        await Worker(redis_server.url).run()
    result = _fanout("status", "--redis", redis_server.url)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "upgrade fanout" in result.stderr


def test_a_key_of_the_queue_holding_something_else_is_one_line_and_exit_2(
    redis_server: RedisServer,
) -> None:
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.set(QueueKeys("other").meta, "not a hash")
    with pytest.raises(QueueError, match="refused a command of the queue: WRONGTYPE"):
        submit(redis_server.url, ["http://h.test/a"], queue="other")
    result = _fanout("worker", "--redis", redis_server.url, "--queue", "other")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "WRONGTYPE" in result.stderr


def test_redis_unreachable_is_one_line_and_exit_2() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    for command in (
        ["submit", "--redis", url, "http://h.test/a"],
        ["worker", "--redis", url, "--exit-when-done"],
        ["status", "--redis", url],
        ["export", "--redis", url],
    ):
        result = _fanout(*command)
        assert result.returncode == 2, command
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"cannot reach Redis at {url}" in result.stderr


def _fanout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


async def test_a_redis_restart_mid_run_loses_nothing(
    persistent_redis: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    urls = [f"{base}/held/{n}" for n in range(3)] + [f"{base}/ok/{n}" for n in range(30)]
    submit(persistent_redis.url, urls)
    worker = asyncio.create_task(_work(persistent_redis.url, reclaim_after=2.0))
    await counting.wait_held(3)  # the worker took work and is fetching it
    await asyncio.to_thread(persistent_redis.restart)  # kill -9, start: its AOF holds all
    counting.release.set()
    await worker
    assert [record["key"] for record in _records(persistent_redis.url)] == urls
    assert counting.hits == Counter({url.removeprefix(base): 1 for url in urls})
    counts = status(persistent_redis.url)
    assert (counts.pending, counts.in_flight, counts.done) == (0, 0, 33)


async def test_cli_submit_worker_export(
    redis_server: RedisServer, site: tuple[Counting, str], tmp_path: Path
) -> None:
    counting, base = site
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(f"{base}/ok/{n}\n" for n in range(5)) + "ftp://no\n")
    url = redis_server.url
    run: Callable[..., subprocess.CompletedProcess[str]] = _fanout
    submitted = await asyncio.to_thread(run, "submit", "--redis", url, "-i", str(listed))
    assert submitted.returncode == 1  # a rejected line
    assert "5 added" in submitted.stderr
    assert "line 6: unsupported_scheme" in submitted.stderr
    worked = await asyncio.to_thread(
        run, "worker", "--redis", url, "--exit-when-done", "-q", "-c", "2"
    )
    assert (worked.returncode, worked.stderr) == (0, "")
    out = tmp_path / "out.jsonl"
    exported = await asyncio.to_thread(run, "export", "--redis", url, "-o", str(out))
    assert exported.returncode == 0
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line)["line"] for line in lines] == [1, 2, 3, 4, 5]
    shown = await asyncio.to_thread(run, "status", "--redis", url, "--json")
    assert orjson.loads(shown.stdout)["done"] == 5
    assert sum(counting.hits.values()) == 5


async def test_a_request_taken_over_from_a_slow_worker_that_finishes_too_has_one_result(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    urls = [f"{base}/held/{n}?status=500" for n in range(3)]
    submit(redis_server.url, urls)
    slow = Worker(redis_server.url, config=_config(), exit_when_done=True, reclaim_after=60.0)
    running = asyncio.create_task(slow.run())
    await counting.wait_held(3)
    # a worker that thinks the slow one dead (its entries idle for 0.2 s) takes them over
    hasty = Worker(redis_server.url, config=_config(), exit_when_done=True, reclaim_after=0.2)
    taking_over = asyncio.create_task(hasty.run())
    await counting.wait_held(6)
    counting.release.set()
    async with asyncio.timeout(DEADLINE):
        stats = await asyncio.gather(running, taking_over)
    assert sum(s.results for s in stats) == 3
    assert sum(s.duplicates for s in stats) == 3
    assert [record["key"] for record in _records(redis_server.url)] == urls
    counts = status(redis_server.url)
    assert (counts.in_flight, counts.pending, counts.failed) == (0, 0, {"http_status": 3})


async def test_per_host_holds_across_workers(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    submit(redis_server.url, [f"{base}/slow/{n}" for n in range(48)])
    # -c 2: each worker holds at most 18 requests, so both have some of the 48
    workers = [Worker(redis_server.url, config=_config(2, per_host=2), exit_when_done=True)]
    workers.append(Worker(redis_server.url, config=_config(2, per_host=2), exit_when_done=True))
    async with asyncio.timeout(DEADLINE):
        stats = await asyncio.gather(*(worker.run() for worker in workers))
    assert sum(counting.hits.values()) == 48
    assert all(s.results > 0 for s in stats)
    assert counting.peak == 2  # each worker alone would send 2


async def test_per_host_rate_holds_across_workers(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    submit(redis_server.url, [f"{base}/slow/{n}" for n in range(40)])
    # no --per-host: the slots would bound the rate as well (50 ms answers)
    config = _config(4, per_host=None, per_host_rate=20.0)  # each holds at most 20 of the 40
    workers = [Worker(redis_server.url, config=config, exit_when_done=True) for _ in range(2)]
    async with asyncio.timeout(DEADLINE):
        stats = await asyncio.gather(*(worker.run() for worker in workers))
    assert all(s.results > 0 for s in stats)
    arrivals = counting.arrivals
    assert len(arrivals) == 40
    # 20 per second over both workers: 39 intervals of 50 ms (two alone: about half)
    assert arrivals[-1] - arrivals[0] >= 39 * 0.05 * 0.9


async def test_a_429_cools_the_host_down_for_every_worker(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    submit(redis_server.url, [f"{base}/busy/1"])
    await _work(redis_server.url)  # one try: its result is the 429
    submit(redis_server.url, [f"{base}/slow/{n}" for n in range(3)])
    await _work(redis_server.url)  # another worker: the host rests first
    throttled, *after = counting.arrivals
    assert len(after) == 3
    assert after[0] - throttled >= 0.9  # Retry-After: 1 (Redis's ms clock, not the loop's)


async def test_a_stopped_worker_gives_its_requests_back_at_once(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    urls = [f"{base}/held/{n}" for n in range(3)]
    submit(redis_server.url, urls)
    stopped = asyncio.create_task(_work(redis_server.url))
    await counting.wait_held(3)
    stopped.cancel()  # Ctrl-C, SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await stopped
    counting.release.set()
    await _work(redis_server.url, reclaim_after=3600.0)  # no wait for a reclaim
    assert [record["key"] for record in _records(redis_server.url)] == urls
    assert counting.hits == Counter({url.removeprefix(base): 2 for url in urls})


async def test_an_engines_cool_down_is_shared_while_it_waits_to_retry(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    import redis.asyncio as aredis

    counting, base = site
    submit(redis_server.url, [f"{base}/busy/1"])
    config = FetcherConfig(limits=Limits(concurrency=2), retry=RetryPolicy(attempts=2))
    cool = f"{QueueKeys('fanout').prefix}cool:{base.removeprefix('http://')}"
    client = aredis.Redis.from_url(redis_server.url)
    await client.config_set("notify-keyspace-events", "K$")  # Redis says when the key is set
    pubsub = client.pubsub()
    await pubsub.subscribe(f"__keyspace@0__:{cool}")
    # heartbeats every 0.1 s; the engine waits 1 s (Retry-After) before its retry
    working = asyncio.create_task(_work(redis_server.url, config=config, reclaim_after=0.3))
    try:
        async with asyncio.timeout(DEADLINE):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    break
    finally:
        await pubsub.aclose()
        await client.aclose()
    assert counting.hits["/busy/1"] == 1  # shared before the retry, not by its result
    await working


@pytest.mark.slow
async def test_kill_9_of_a_worker_another_finishes_after_reclaim(
    redis_server: RedisServer, site: tuple[Counting, str]
) -> None:
    counting, base = site
    urls = [f"{base}/held/{n}" for n in range(3)] + [f"{base}/ok/{n}" for n in range(20)]
    submit(redis_server.url, urls[:3])
    # the doomed worker takes the three held requests (and nothing else: they are all there is)
    doomed = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "fanout", "worker", "--redis", redis_server.url, "-q", "-c", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await counting.wait_held(3)
    finally:
        doomed.kill()  # SIGKILL
        async with asyncio.timeout(DEADLINE):
            await doomed.wait()
    counting.release.set()
    submit(redis_server.url, urls[3:])
    assert status(redis_server.url).in_flight == 3
    await _work(redis_server.url, reclaim_after=0.5)
    assert [record["key"] for record in _records(redis_server.url)] == urls
    # only the killed worker's in-flight requests were sent twice
    assert counting.hits == Counter(
        {url.removeprefix(base): 2 if "/held/" in url else 1 for url in urls}
    )
