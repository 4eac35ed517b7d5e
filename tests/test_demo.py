"""The demo server over real HTTP on loopback: its data, its faults and its accounting."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import socket
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fanout.demo import STATS_KEY, DemoServer, ServerThread, Stats, make_app
from fanout.demo.faults import MAX_BYTES
from fanout.errors import ConfigError

from .conftest import peak_in_flight


def _host(base: str) -> str:
    return base.split("://", 1)[1]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as running:
        yield running


async def _get_json(session: aiohttp.ClientSession, url: str) -> object:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def _answer(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as response:
        return response.status, await response.read()


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    return (await _answer(session, url))[0]


# ----------------------------------------------------------------- content


async def test_index_lists_the_endpoints(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{server.url}/") as response:
        text = await response.text()
    for endpoint in ("/pages/{n}", "/items/{id}", "/v0/topstories.json", "/posts", "/gzip-bomb"):
        assert endpoint in text


async def test_pages_are_deterministic_distinct_and_linked(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with DemoServer() as other:
        pages = []
        for base, n in ((server.url, 5), (other.url, 5), (server.url, 6)):
            async with session.get(f"{base}/pages/{n}") as response:
                assert response.content_type == "text/html"
                pages.append(await response.text())
    first, again, different = pages
    assert first == again
    assert first != different
    assert 200 < len(first) < 1000
    assert first.count('href="/pages/') == 3


async def test_items_are_deterministic_with_a_fixed_shape(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with DemoServer(seed=99) as other:
        for item_id in (1, 42, 10_000):
            data = await _get_json(session, f"{server.url}/items/{item_id}")
            assert data == await _get_json(session, f"{other.url}/items/{item_id}")
            assert isinstance(data, dict)
            assert data["id"] == item_id
            assert data["category"] in {"books", "games", "garden", "kitchen", "music", "tools"}
            assert isinstance(data["name"], str)
            assert isinstance(data["price"], float)
            assert isinstance(data["stock"], int)
            assert isinstance(data["tags"], list)
    names = {str(await _get_json(session, f"{server.url}/items/{i}")) for i in range(1, 6)}
    assert len(names) == 5
    for missing in ("0", "10001", "abc"):
        async with session.get(f"{server.url}/items/{missing}") as response:
            assert response.status == 404
            assert "error" in await response.json()


async def test_pagination_by_link_header_walks_every_item_once(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    url: str | None = f"{server.url}/items?page=1&per_page=150"
    ids: list[int] = []
    pages = 0
    while url is not None:
        async with session.get(url) as response:
            body = await response.json()
            link = response.links.get("next")
        pages += 1
        ids.extend(entry["id"] for entry in body["items"])
        assert body["page"] == pages
        if link is None:
            assert body["next"] is None
        else:
            assert str(link["url"]) == body["next"]
        url = body["next"]
    assert ids == list(range(1, 1001))
    assert pages == 7  # 6 full pages of 150 and one of 100


async def test_topstories_and_their_deliberate_breakage(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    ids = await _get_json(session, f"{server.url}/v0/topstories.json")
    assert isinstance(ids, list)
    assert len(ids) == len(set(ids)) == 500
    stories = await asyncio.gather(
        *(_get_json(session, f"{server.url}/v0/item/{i}.json") for i in ids)
    )
    kinds: Counter[str] = Counter()
    for story_id, story in zip(ids, stories, strict=True):
        if story is None:
            kinds["null"] += 1
            continue
        assert isinstance(story, dict)
        assert story["id"] == story_id
        assert story["type"] == "story"
        assert {"by", "title", "time", "descendants", "url"} <= story.keys()
        if "score" not in story:
            kinds["no score"] += 1
        elif isinstance(story["score"], str):
            kinds["string score"] += 1
        else:
            kinds["ok"] += 1
    assert kinds == {"null": 4, "no score": 8, "string score": 6, "ok": 482}
    assert await _get_json(session, f"{server.url}/v0/item/1.json") is None


async def test_users_and_posts_group_unevenly(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    users = await _get_json(session, f"{server.url}/users")
    posts = await _get_json(session, f"{server.url}/posts")
    assert isinstance(users, list)
    assert isinstance(posts, list)
    assert [u["id"] for u in users] == list(range(1, 11))
    assert [p["id"] for p in posts] == list(range(1, 101))
    per_user = Counter(p["userId"] for p in posts)
    assert per_user == {u: u + 5 for u in range(1, 10)} | {10: 10}
    mine = await _get_json(session, f"{server.url}/posts?userId=3")
    assert mine == [p for p in posts if p["userId"] == 3]
    assert await _get_json(session, f"{server.url}/posts/17") == posts[16]
    assert await _status(session, f"{server.url}/posts/101") == 404


# -------------------------------------------------------------- shaping


async def test_error_rate_is_a_seeded_sequence(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        async with DemoServer(error_rate=0.5, seed=seed) as server:
            return [await _status(session, f"{server.url}/items/1") for _ in range(30)]

    first, again, other = await statuses(1), await statuses(1), await statuses(2)
    assert first == again
    assert first != other
    assert set(first) == {200, 503}


async def test_fault_endpoints_ignore_the_error_rate(session: aiohttp.ClientSession) -> None:
    async with DemoServer(error_rate=1.0) as server:
        assert await _status(session, f"{server.url}/pages/1") == 503
        assert await _status(session, f"{server.url}/status/200") == 200


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"latency": -1.0}, "latency"),
        ({"latency": float("inf")}, "latency"),
        ({"jitter": float("nan")}, "jitter"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_options_name_their_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_app(**options)  # type: ignore[arg-type]


# ------------------------------------------------------- faults on purpose


async def test_flaky_fails_n_times_per_key(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    a = [await _status(session, f"{server.url}/flaky/2?key=a") for _ in range(4)]
    b = [await _status(session, f"{server.url}/flaky/1?key=b") for _ in range(2)]
    assert a == [503, 503, 200, 200]
    assert b == [503, 200]
    async with DemoServer() as fresh:  # the counter belongs to one app
        assert await _status(session, f"{fresh.url}/flaky/1?key=a") == 503


@pytest.mark.parametrize(
    ("value", "header"),
    [("7", "7"), ("Wed,%2021%20Oct%202015%2007:28:00%20GMT", "Wed, 21 Oct 2015 07:28:00 GMT")],
)
async def test_retry_after_answers_429_with_the_value(
    server: DemoServer, session: aiohttp.ClientSession, value: str, header: str
) -> None:
    async with session.get(f"{server.url}/retry-after/{value}") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == header


async def test_retry_after_refuses_header_injection(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    assert await _status(session, f"{server.url}/retry-after/1%0d%0aX-Evil:%201") == 400


async def test_redirects_count_down_then_arrive(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{server.url}/redirect/3") as response:
        assert response.status == 200
        assert len(response.history) == 3
    for n in range(4):
        assert server.stats.count(f"/redirect/{n}") == 1
    async with session.get(f"{server.url}/redirect/2", allow_redirects=False) as response:
        assert response.headers["Location"] == "/redirect/1"
    url = f"{server.url}/redirect/2?absolute=1"
    async with session.get(url, allow_redirects=False) as response:
        assert response.headers["Location"] == f"{server.url}/redirect/1?absolute=1"
    url = f"{server.url}/redirect-to?url=file:///etc/passwd"
    async with session.get(url, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "file:///etc/passwd"


async def test_bytes_are_deterministic_and_capped(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{server.url}/bytes/70000") as response:
        body = await response.read()
    assert body == bytes(i % 256 for i in range(70000))
    async with session.get(f"{server.url}/bytes/{10**12}") as response:
        assert response.content_length == MAX_BYTES
        assert await response.content.readexactly(3) == b"\x00\x01\x02"


async def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_zeros(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/gzip-bomb"  # 1 GiB by default
    async with session.get(url, auto_decompress=False) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.content_length is not None
        assert response.content_length < 2 * 1024 * 1024
        head = await response.content.readexactly(4096)
    inflated = zlib.decompressobj(wbits=31).decompress(head, 1024 * 1024)
    assert len(inflated) == 1024 * 1024
    assert inflated.count(0) == len(inflated)


async def test_gzip_bomb_is_valid_gzip_of_the_exact_size(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    size = 3 * 1024 * 1024 + 5
    async with session.get(f"{server.url}/gzip-bomb?size={size}", auto_decompress=False) as r:
        raw = await r.read()
    assert gzip.decompress(raw) == bytes(size)  # checks the CRC-32 and length trailer too


async def test_broken_bodies_and_connections(
    server: DemoServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{server.url}/json/bad") as response:
        assert response.content_type == "application/json"
        with pytest.raises(ValueError, match=r"."):
            await response.json()
    # aiohttp 3.10's words, then later versions'
    short = "Not enough data|received 10 of 1000 bytes"
    with pytest.raises(aiohttp.ClientPayloadError, match=short):
        await _answer(session, f"{server.url}/short")
    with pytest.raises(aiohttp.ClientConnectionError):
        await _answer(session, f"{server.url}/reset")
    assert await _status(session, f"{server.url}/status/418") == 418


async def test_echo_returns_the_request(server: DemoServer, session: aiohttp.ClientSession) -> None:
    url = f"{server.url}/echo?x=1"
    async with session.post(url, data=b"hello", headers={"X-Test": "yes"}) as response:
        echoed = await response.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo?x=1"
    assert echoed["headers"]["X-Test"] == "yes"
    assert echoed["body"] == "hello"


# ------------------------------------------------------ accounting, lifetime


async def test_stats_count_peak_in_flight_per_host(session: aiohttp.ClientSession) -> None:
    server = DemoServer(hosts=["127.0.0.1", "127.0.0.2"])
    async with asyncio.TaskGroup() as tasks, server:
        a, b = server.urls
        wanted = {_host(a): 3, _host(b): 2}
        hung = [
            tasks.create_task(_answer(session, f"{base}/hang?i={i}"))
            for base, n in ((a, 3), (b, 2))
            for i in range(n)
        ]
        await server.stats.wait_until(
            lambda s: all(s.in_flight[host] == n for host, n in wanted.items())
        )
        assert peak_in_flight(server, a) == 3
        assert peak_in_flight(server, b) == 2
        assert server.stats.count("/hang?i=0") == 2
        assert len(server.stats.arrivals(_host(a), "/hang")) == 3
    # leaving the server released every hung request, with an answer from its handler
    assert [task.result()[0] for task in hung] == [503] * 5
    assert all(server.stats.in_flight[host] == 0 for host in wanted)
    assert peak_in_flight(server, a) == 3


async def test_hang_is_released_by_shutdown(session: aiohttp.ClientSession) -> None:
    async with asyncio.TaskGroup() as tasks, DemoServer() as server:
        hang = tasks.create_task(_answer(session, f"{server.url}/hang"))
        await server.stats.wait_until(lambda s: s.in_flight[_host(server.url)] == 1)
        assert not hang.done()
    # the handler answered: released by the shutdown, not cancelled by a timeout
    assert hang.result() == (503, b'{"error":"shutting down"}')


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "::", "192.168.1.1", "example.com", ""])
def test_only_loopback_hosts(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        DemoServer(host=host)
    with pytest.raises(ConfigError, match="loopback"):
        DemoServer(hosts=["127.0.0.1", host])
    with pytest.raises(ConfigError, match="loopback"):
        ServerThread(host=host)


def test_loopback_names_are_accepted() -> None:
    DemoServer(hosts=["localhost", "127.0.0.2", "::1", "127.255.0.9"])


async def test_urls_bracket_ipv6(servers: DemoServer, session: aiohttp.ClientSession) -> None:
    assert servers.urls[2].startswith("http://[::1]:")
    assert len({_host(url).rsplit(":", 1)[1] for url in servers.urls}) == 3
    for base in servers.urls:
        assert await _status(session, f"{base}/items/1") == 200


def test_stats_live_on_the_app() -> None:
    assert isinstance(make_app()[STATS_KEY], Stats)


def test_server_thread_serves_sync_code_and_stops() -> None:
    with ServerThread(latency=0.001) as server:
        with urllib.request.urlopen(f"{server.url}/items/3") as response:
            assert response.status == 200
        stalled = urllib.request.urlopen(f"{server.url}/stall")  # headers, then nothing
        port = int(server.url.rsplit(":", 1)[1])
    with stalled, pytest.raises(http.client.IncompleteRead):
        stalled.read()  # the exit did not wait for the stalled response to finish
    assert server.stats.count("/items/3") == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port)).close()


def test_server_thread_reports_a_failed_start() -> None:
    with ServerThread() as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="in use"), ServerThread(port=port):
            pass


async def test_serve_forever_until_cancelled(session: aiohttp.ClientSession) -> None:
    from fanout.demo import serve_forever

    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(serve_forever(on_ready=ready.set_result))
        (url,) = await ready
        assert await _status(session, f"{url}/items/1") == 200
        serving.cancel()
    assert serving.cancelled()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _status(session, f"{url}/items/1")


def test_urllib_sees_the_same_data_as_aiohttp(server_thread: str) -> None:
    with urllib.request.urlopen(f"{server_thread}/items/9") as response:
        first = response.read()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server_thread}/items/0")
    caught.value.close()
    assert b'"id":9' in first
