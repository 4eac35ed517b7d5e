"""Redirects followed hop by hop: credentials stay with their origin, a sent
request is never replayed, and each hop gets its own host's limits. Against the
demo server on three origins (127.0.0.1, 127.0.0.2 and ::1)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from urllib.parse import quote

import orjson
import pytest
from yarl import URL

from fanout import Caps, ErrorKind, Fetcher, Limits, Request, Result, RetryPolicy, Timeouts
from fanout.demo import DemoServer, Stats
from fanout.urls import host_key

from .conftest import peak_in_flight

pytestmark = pytest.mark.usefixtures("transport")

SECRETS = {
    "Authorization": "Bearer token-SECRET",
    "Cookie": "session=cookie-SECRET",
    "Proxy-Authorization": "Basic proxy-SECRET",
}


def _to(base: str, target: str, status: int = 302) -> str:
    return f"{base}/redirect-to?status={status}&url={quote(target, safe='')}"


def _echoed(result: Result) -> dict[str, object]:
    assert result.ok, result.error
    assert result.body is not None
    echoed = orjson.loads(result.body)
    assert isinstance(echoed, dict)
    return echoed


def _headers(result: Result) -> Mapping[str, str]:
    headers = _echoed(result)["headers"]
    assert isinstance(headers, dict)
    return {name.lower(): value for name, value in headers.items()}


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("where", ["fetcher", "request"])
async def test_credentials_are_dropped_on_a_redirect_to_another_origin(
    servers: DemoServer, where: str
) -> None:
    a, b, c = servers.urls
    fetcher_headers = {**SECRETS, "X-Custom": "kept"} if where == "fetcher" else None
    request_headers = {**SECRETS, "X-Custom": "kept"} if where == "request" else {}
    urls = [
        _to(a, f"{b}/echo"),  # another host
        _to(a, f"{c}/echo"),  # another host, IPv6
        _to(a, f"{a}/echo"),  # the same origin, absolute
        _to(a, "/echo"),  # the same origin, relative
        _to(a, _to(b, f"{a}/echo")),  # away and back to the request's own origin
    ]
    requests = [Request(url, headers=request_headers) for url in urls]
    async with Fetcher(headers=fetcher_headers) as fetcher:
        results = await fetcher.gather(requests)
    away, away6, same, relative, back = (_headers(r) for r in results)
    for headers in (away, away6):
        assert not {name.lower() for name in SECRETS} & set(headers), headers
        assert headers["x-custom"] == "kept"
    for headers in (same, relative, back):
        for name, value in SECRETS.items():
            assert headers[name.lower()] == value
        assert headers["x-custom"] == "kept"


async def test_a_urls_own_credentials_stay_with_its_origin(servers: DemoServer) -> None:
    a, b, _ = servers.urls
    with_user = a.replace("http://", "http://bob:pw-SECRET@")
    async with Fetcher() as fetcher:
        away, same = await fetcher.gather([_to(with_user, f"{b}/echo"), _to(with_user, "/echo")])
    assert "authorization" not in _headers(away)
    assert _headers(same)["authorization"].startswith("Basic ")


async def test_a_post_that_was_sent_is_not_sent_again_when_a_later_hop_fails(
    server: DemoServer,
) -> None:
    dead = f"http://127.0.0.1:{_dead_port()}/"
    url = _to(server.url, dead, status=307)
    retry = RetryPolicy(attempts=4, backoff=0.001)
    async with Fetcher(retry=retry) as fetcher:
        (result,) = await fetcher.gather([Request(url, method="POST", body=b"order=1")])
    assert result.error is not None
    assert result.error.kind is ErrorKind.CONNECT
    assert result.attempts == 4  # the failing hop was tried again, it was never sent
    path = URL(url).path_qs
    assert server.stats.count(path) == 1  # the POST itself reached the server once


async def test_a_get_chain_retries_only_its_failing_hop(servers: DemoServer) -> None:
    a, b, _ = servers.urls
    target = f"{b}/flaky/1?key=hop"  # 503 once, then 200
    async with Fetcher(retry=RetryPolicy(attempts=3, backoff=0.001)) as fetcher:
        (result,) = await fetcher.gather([_to(a, target)])
    assert result.ok, result.error
    assert result.attempts == 2
    assert servers.stats.count(URL(_to(a, target)).path_qs) == 1


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [(303, "POST", "GET"), (302, "POST", "GET"), (301, "POST", "GET"), (307, "POST", "POST"),
     (308, "PUT", "PUT"), (303, "HEAD", "HEAD"), (302, "PUT", "PUT")],
)  # fmt: skip
async def test_methods_and_bodies_across_redirects(
    server: DemoServer, status: int, method: str, expected: str
) -> None:
    url = _to(server.url, "/echo", status=status)
    body = b'{"order": 1}'
    request = Request(url, method=method, body=body, headers={"Content-Type": "application/json"})
    async with Fetcher() as fetcher:
        (result,) = await fetcher.gather([request])
    if expected == "HEAD":
        assert result.ok
        assert result.status == 200
        return
    echoed = _echoed(result)
    assert echoed["method"] == expected
    headers = _headers(result)
    if expected == method:
        assert echoed["body"] == body.decode()
        assert headers["content-type"] == "application/json"
    else:
        assert echoed["body"] == ""
        assert "content-type" not in headers


async def test_each_hop_is_held_to_its_own_hosts_limit(servers: DemoServer) -> None:
    a, b, c = servers.urls
    # Two first hosts, each within its limit, send everything on to b.
    urls = [_to((a, c)[i % 2], f"{b}/slow?delay=0.02&i={i}") for i in range(12)]
    limits = Limits(concurrency=12, per_host=2)
    async with Fetcher(limits=limits) as fetcher:
        results = await fetcher.gather(urls)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert peak_in_flight(servers, b) == 2


async def test_a_host_spelled_two_ways_is_one_host_for_its_limit(server: DemoServer) -> None:
    port = URL(server.url).port
    spellings = [f"http://127.0.0.1:{port}", f"HTTP://127.0.0.1:{port}"]
    if socket.has_ipv6:
        spellings.append(f"http://[::ffff:127.0.0.1]:{port}")
    urls = [f"{spellings[i % len(spellings)]}/slow?delay=0.02&i={i}" for i in range(12)]
    most = 0

    def watch(stats: Stats) -> bool:  # called at every arrival and departure
        nonlocal most
        most = max(most, sum(stats.in_flight.values()))
        return False

    task = asyncio.create_task(server.stats.wait_until(watch))
    try:
        async with Fetcher(limits=Limits(concurrency=12, per_host=1)) as fetcher:
            results = await fetcher.gather(urls)
    finally:
        task.cancel()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert most == 1


def test_host_keys_are_canonical() -> None:
    one = host_key(URL("http://127.0.0.1:80/"))
    for spelling in (
        "HTTP://127.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]:80/",
    ):
        assert host_key(URL(spelling)) == one, spelling
    # The legacy IPv4 forms (127.1, 0x7f.0.0.1) are invalid URLs: tests/test_red_team.py.
    assert host_key(URL("https://A.Example./x")) == ("https", "a.example", 443)
    assert host_key(URL("http://[0:0::1]:8/")) == host_key(URL("http://[::1]:8/"))
    assert host_key(URL("https://a.example/")) != host_key(URL("http://a.example:443/"))


async def test_too_many_redirects_and_bad_locations(server: DemoServer) -> None:
    urls = [
        f"{server.url}/redirect/3",
        _to(server.url, "file:///etc/passwd"),
        _to(server.url, "http://[::1"),
    ]
    async with Fetcher(caps=Caps(max_redirects=2)) as fetcher:
        loop, scheme, broken = await fetcher.gather(urls)
    assert loop.error is not None
    assert loop.error.kind is ErrorKind.TOO_MANY_REDIRECTS
    assert loop.status == 302
    assert scheme.error is not None
    assert scheme.error.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert broken.error is not None
    assert broken.error.kind is ErrorKind.INVALID_URL


async def test_a_request_may_refuse_every_credential(server: DemoServer) -> None:
    headers = {**SECRETS, "X-Custom": "kept"}
    urls = [f"{server.url}/echo", _to(server.url, "/echo")]
    requests = [Request(url, headers={"Cookie": "own=1"}, send_credentials=False) for url in urls]
    async with Fetcher(headers=headers, user_agent="agent/1") as fetcher:
        results = await fetcher.gather(requests)
    for result in results:
        echoed = _headers(result)
        assert not {name.lower() for name in SECRETS} & set(echoed), echoed
        assert echoed["x-custom"] == "kept"
        assert echoed["user-agent"] == "agent/1"


@pytest.mark.slow
async def test_the_total_deadline_covers_the_redirects_of_an_attempt(server: DemoServer) -> None:
    # Each exchange alone fits in the deadline; the two of one attempt do not.
    inner = f"/redirect-to?delay=0.6&url={quote('/items/1', safe='')}"
    url = f"{server.url}/redirect-to?delay=0.6&url={quote(inner, safe='')}"
    retry = RetryPolicy(attempts=1)
    async with Fetcher(timeouts=Timeouts(total=1.0), retry=retry) as fetcher:
        (late,) = await fetcher.gather([url])
    assert late.error is not None
    assert late.error.kind is ErrorKind.TIMEOUT
    assert "total deadline" in late.error.message
    async with Fetcher(timeouts=Timeouts(total=30.0), retry=retry) as fetcher:
        (fine,) = await fetcher.gather([url])
    assert fine.ok, fine.error
