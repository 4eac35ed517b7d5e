"""robots.txt (``robots=True``, ``--robots``): real sites on loopback that count
every request they get. A disallowed URL is a ``robots`` result and is never
requested; robots.txt is fetched once per host however many requests wait for
it; 4xx allows all, 5xx (or no answer) disallows the host; the file is read up
to its cap; Crawl-delay paces the host. Pure parts (the cache bound, the rate
a host is held to) are tested without a network."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import fanout
from fanout import Fetcher, Limits, Timeouts
from fanout.cli import main
from fanout.engine.robots import (
    RETRY_AFTER,
    RobotsCache,
    Rules,
    fetch_rules,
    product_token,
    session_get,
)
from fanout.engine.scheduling import Host
from fanout.models import ErrorKind, Result
from tests.background import in_thread
from tests.loopback import serving

RULES = """\
User-agent: *
Disallow: /

User-agent: fanout
Disallow: /private
Allow: /private/ok
Disallow: /*.pdf$
"""


class Site:
    """A site on loopback whose /robots.txt answers ``robots`` (text) with
    ``status``, or never (``slow``); /moved redirects robots.txt; /go?to=P
    redirects to P; every other path answers 200. ``hits`` counts the
    requests per path; ``times`` keeps when each non-robots request came."""

    def __init__(self, robots: str = RULES, status: int = 200, slow: bool = False) -> None:
        self.robots = robots
        self.status = status
        self.slow = slow
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, dict[str, str]] = {}  # the last request's, per path
        self.times: list[float] = []
        self.url = ""
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        self.headers[path] = dict(request.headers)
        if path == "/robots.txt":
            if self.slow:
                await self.release.wait()
            if self.status in (301, 302):
                return web.Response(status=self.status, headers={"Location": "/moved"})
            return web.Response(status=self.status, text=self.robots)
        if path == "/moved":
            return web.Response(text=self.robots)
        if path == "/go":
            return web.Response(status=302, headers={"Location": request.query["to"]})
        self.times.append(asyncio.get_running_loop().time())
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def site(
    robots: str = RULES, status: int = 200, slow: bool = False, host: str = "127.0.0.1"
) -> AsyncIterator[Site]:
    state = Site(robots, status, slow)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    async with serving(app, host=host) as state.url:
        try:
            yield state
        finally:
            state.release.set()


def kinds(results: list[Result]) -> list[str | None]:
    return [None if r.error is None else str(r.error.kind) for r in results]


@pytest.mark.usefixtures("transport")
async def test_disallow_allow_and_wildcards_for_the_product_token() -> None:
    paths = ["/public", "/private/x", "/private/ok", "/doc.pdf", "/doc.pdf?v=1"]
    async with site() as server, Fetcher(robots=True) as fetcher:
        results = await fetcher.gather([server.url + p for p in paths])
    assert kinds(results) == [None, "robots", None, "robots", None]
    error = results[1].error
    assert error is not None
    assert error.message == f"disallowed by {server.url}/robots.txt for fanout"
    assert results[1].attempts == 0
    assert server.hits == {"/robots.txt": 1, "/public": 1, "/private/ok": 1, "/doc.pdf": 1}


@pytest.mark.usefixtures("transport")
async def test_robots_txt_is_asked_for_without_credentials() -> None:
    given = {"Authorization": "Bearer secret", "Cookie": "session=secret", "X-Other": "kept"}
    async with site() as server, Fetcher(robots=True, headers=given) as fetcher:
        results = await fetcher.gather([server.url + "/public"])
    assert kinds(results) == [None]
    asked = {name.lower() for name in server.headers["/robots.txt"]}
    assert not asked & {"authorization", "cookie"}
    assert {"x-other", "user-agent"} <= asked
    assert server.headers["/robots.txt"]["User-Agent"].startswith("fanout/")
    assert server.headers["/public"]["Authorization"] == "Bearer secret"


@pytest.mark.usefixtures("transport")
async def test_another_product_token_gets_its_own_group() -> None:
    async with site() as server, Fetcher(robots=True, user_agent="otherbot/2.0") as fetcher:
        results = await fetcher.gather([server.url + "/public"])
    assert kinds(results) == ["robots"]
    assert server.hits == {"/robots.txt": 1}


@pytest.mark.usefixtures("transport")
async def test_without_robots_everything_is_fetched() -> None:
    async with site() as server, Fetcher() as fetcher:
        results = await fetcher.gather([server.url + "/private/x"])
    assert kinds(results) == [None]
    assert server.hits == {"/private/x": 1}


@pytest.mark.usefixtures("transport")
async def test_fetched_once_per_host_with_many_concurrent_requests() -> None:
    async with site() as a, site() as b, site(host="127.0.0.2") as c:
        urls = [s.url + p for _ in range(20) for s in (a, b, c) for p in ("/x", "/private/y")]
        async with Fetcher(robots=True, limits=Limits(concurrency=32)) as fetcher:
            results = await fetcher.gather(urls)
    assert kinds(results).count("robots") == 60
    assert kinds(results).count(None) == 60
    for s in (a, b, c):
        assert s.hits == {"/robots.txt": 1, "/x": 20}


@pytest.mark.usefixtures("transport")
async def test_a_4xx_allows_all_a_5xx_disallows_the_host() -> None:
    async with site(status=404) as missing, site(status=500) as broken, Fetcher(robots=True) as f:
        results = await f.gather([missing.url + "/private/x", broken.url + "/x", broken.url + "/y"])
    assert kinds(results) == [None, "robots", "robots"]
    error = results[1].error
    assert error is not None
    assert f"{broken.url}/robots.txt could not be fetched (HTTP 500)" in error.message
    assert missing.hits == {"/robots.txt": 1, "/private/x": 1}
    assert broken.hits == {"/robots.txt": 1}  # neither tried again nor sent


@pytest.mark.usefixtures("transport")
async def test_redirects_are_followed_for_robots_and_for_requests() -> None:
    async with site(status=301) as server, Fetcher(robots=True) as fetcher:
        results = await fetcher.gather([f"{server.url}/go?to=/private/x", server.url + "/x"])
    assert kinds(results) == ["robots", None]
    assert server.hits == {"/robots.txt": 1, "/moved": 1, "/go": 1, "/x": 1}


@pytest.mark.usefixtures("transport")
async def test_an_oversized_file_is_read_up_to_its_cap() -> None:
    padding = ("# " + "x" * 98 + "\n") * 6000  # 600 kB of comments
    robots = f"User-agent: *\nDisallow: /early\n{padding}Disallow: /late\n"
    async with site(robots) as server, Fetcher(robots=True) as fetcher:
        results = await fetcher.gather([server.url + "/early", server.url + "/late"])
    assert kinds(results) == ["robots", None]
    assert server.hits == {"/robots.txt": 1, "/late": 1}


@pytest.mark.usefixtures("transport")
async def test_a_robots_txt_that_never_answers_disallows_after_its_deadline() -> None:
    short = Timeouts(total=0.3)
    async with site(slow=True) as server, Fetcher(robots=True, timeouts=short) as fetcher:
        results = await fetcher.gather([server.url + "/x"])
    assert kinds(results) == ["robots"]
    error = results[0].error
    assert error is not None
    assert "no answer within 0.3 s" in error.message
    assert server.hits == {"/robots.txt": 1}


@pytest.mark.usefixtures("transport")
async def test_a_robots_txt_whose_headers_are_cut_is_not_an_empty_one() -> None:
    """A robots.txt answer that ends inside its headers could not be fetched
    (everything disallowed), not an empty file (everything allowed)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Fetcher(robots=True) as fetcher:
            results = await fetcher.gather([f"http://127.0.0.1:{port}/x"])
    finally:
        server.close()
        await server.wait_closed()
    assert kinds(results) == ["robots"]


async def test_a_robots_txt_cut_by_its_deadline_leaves_no_curl_transfer_behind() -> None:
    short = Timeouts(total=0.3)
    async with (
        site(slow=True) as server,
        Fetcher(robots=True, timeouts=short, transport="curl") as f,
    ):
        assert kinds(await f.gather([server.url + "/x"])) == ["robots"]
        transport: Any = f._transport
        assert transport.counts() == {"handles": 0, "sockets": 0, "gap_timers": 0, "timer": 0}


@pytest.mark.usefixtures("transport")
async def test_crawl_delay_paces_the_host() -> None:
    loose = Limits(per_host_rate=1000.0)
    robots = "User-agent: *\nCrawl-delay: 0.2\n"
    async with site(robots) as server, Fetcher(robots=True, limits=loose) as fetcher:
        results = await fetcher.gather([f"{server.url}/{i}" for i in range(4)])
    assert kinds(results) == [None] * 4
    # 3 intervals of at least 0.2 s each (less some slack for the network)
    assert server.times[-1] - server.times[0] >= 0.5


@pytest.mark.usefixtures("transport")
async def test_crawl_delay_paces_redirect_hops_to_the_host() -> None:
    loose = Limits(per_host_rate=1000.0)
    robots = "User-agent: *\nCrawl-delay: 0.2\nDisallow: /private\n"
    async with site(robots) as target, site("") as origin:
        urls = [f"{origin.url}/go?to={target.url}/{i}" for i in range(4)]
        async with Fetcher(robots=True, limits=loose) as fetcher:
            # target's robots.txt is read, and its host state (nothing sent) gone
            assert kinds(await fetcher.gather([target.url + "/private"])) == ["robots"]
            results = await fetcher.gather(urls)
    assert kinds(results) == [None] * 4
    assert target.hits["/robots.txt"] == 1
    assert target.times[-1] - target.times[0] >= 0.5


@pytest.mark.usefixtures("transport")
def test_the_command_line_takes_robots(capsys: pytest.CaptureFixture[str]) -> None:
    def run(*options: str) -> dict[str, object]:
        with pytest.raises(SystemExit):
            main(["fetch", f"{server.url}/private/x", "-q", *options])
        record: dict[str, object] = json.loads(capsys.readouterr().out)
        return record

    with in_thread(site) as server:
        refused = run("--robots")
        fetched = run()
    assert refused["error"] == {
        "kind": "robots",
        "message": f"disallowed by {server.url}/robots.txt for fanout",
        "cause": None,
    }
    assert fetched["status"] == 200
    assert server.hits == {"/robots.txt": 1, "/private/x": 1}


@pytest.mark.usefixtures("transport")
def test_fetch_takes_robots() -> None:
    with in_thread(site) as server:
        [result] = fanout.fetch([server.url + "/private/x"], robots=True)
    assert result.error is not None
    assert result.error.kind is ErrorKind.ROBOTS


@pytest.mark.usefixtures("transport")
async def test_a_host_the_guard_refuses_is_denied_not_robots() -> None:
    async with site() as server, Fetcher(robots=True, deny_private=True) as fetcher:
        # a name: the guard refuses its address once resolved, when connecting
        results = await fetcher.gather([server.url.replace("127.0.0.1", "localhost") + "/x"])
    assert kinds(results) == ["denied"]
    assert server.hits == {}


# ------------------------------------------------------------------ pure parts


def test_the_product_token_is_the_user_agent_before_its_slash() -> None:
    assert product_token("fanout/1.0 (+https://example.org)") == "fanout"
    assert product_token("MyBot") == "MyBot"
    assert product_token("") == "*"


def test_the_cache_keeps_a_bounded_number_of_hosts_and_expires_rules() -> None:
    cache = RobotsCache(size=2)
    keys = [("http", f"h{i}", 80) for i in range(3)]
    for key in keys:
        cache.put(key, Rules("src", "fanout", expires=100.0))
    assert len(cache) == 2
    assert cache.get(keys[0], 0.0) is None  # the least recent went first
    assert cache.get(keys[2], 99.0) is not None
    assert cache.get(keys[2], 100.0) is None  # expired: fetched again


async def test_an_unreachable_robots_txt_is_fetched_again_after_a_while() -> None:
    key = ("http", "127.0.0.1", 0)
    async with site(status=503) as server, aiohttp.ClientSession() as session:
        key = ("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        rules = await fetch_rules(session_get(session), key, "fanout", lambda: 1000.0, deadline=5.0)
    assert rules.refusal(server.url + "/x") is not None
    cache = RobotsCache()
    cache.put(key, rules)
    assert cache.get(key, 1000.0 + RETRY_AFTER - 1) is rules
    assert cache.get(key, 1000.0 + RETRY_AFTER) is None


@pytest.mark.usefixtures("transport")
async def test_a_garbage_answer_disallows_the_host_and_is_no_crash() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 200_000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    served = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = served.sockets[0].getsockname()[1]
    async with served, Fetcher(robots=True) as fetcher:
        results = await fetcher.gather([f"http://127.0.0.1:{port}/x"])
    assert kinds(results) == ["robots"]
    error = results[0].error
    assert error is not None
    assert "robots.txt could not be fetched" in error.message


def test_the_cache_keeps_a_bounded_number_of_bytes() -> None:
    cache = RobotsCache(size=10, max_bytes=1000)
    keys = [("http", f"h{i}", 80) for i in range(4)]
    for key in keys:
        cache.put(key, Rules("src", "fanout", expires=100.0, size=400))
    assert len(cache) == 2  # 800 bytes; a third would be 1200
    assert cache.get(keys[1], 0.0) is None
    assert cache.get(keys[3], 0.0) is not None
    cache.put(keys[3], Rules("src", "fanout", expires=100.0, size=400))  # replaced, not added
    assert len(cache) == 2


def test_crawl_delay_and_request_rate_become_a_rate_unless_the_user_set_a_stricter_one() -> None:
    from protego import Protego

    def rate(text: str) -> float | None:
        return Rules("src", "fanout", 0.0, Protego.parse(text)).rate

    assert rate("User-agent: *\nCrawl-delay: 2\n") == 0.5
    assert rate("User-agent: *\nRequest-rate: 3/10s\n") == pytest.approx(0.3)
    assert rate("User-agent: *\nCrawl-delay: 1\nRequest-rate: 1/5s\n") == pytest.approx(0.2)
    assert rate("User-agent: *\nCrawl-delay: 0\n") is None
    assert rate("User-agent: *\nDisallow: /x\n") is None

    from fanout.engine.scheduling import Scheduler

    free: Host[Any] = Host(("http", "h", 80), None, 1)
    Scheduler.limit_rate(free, 0.5)
    assert free.bucket is not None
    assert free.bucket.rate == 0.5
    strict: Host[Any] = Host(("http", "h", 80), 0.1, 1)
    Scheduler.limit_rate(strict, 0.5)
    assert strict.bucket is not None
    assert math.isclose(strict.bucket.rate, 0.1)
