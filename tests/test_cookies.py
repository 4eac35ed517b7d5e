"""The opt-in cookie jar (``cookies=True``, ``--cookies``): one per Fetcher,
per origin. A login flow (POST /login -> 303 /home with a session cookie)
works; a cookie never goes to another origin (another port, another host, a
cross-origin redirect); without the option nothing is kept. Real servers on
loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

import fanout
from fanout import Fetcher, Request
from fanout.cli import main
from fanout.net.cookies import OriginCookieJar
from tests.background import in_thread
from tests.loopback import serving

SESSION = "c00kie-v4lue"


class Site:
    """A site on loopback: ``/login`` sets a session cookie and redirects to
    ``/home`` (401 without the cookie); ``/set`` sets a cookie; ``/go?to=URL``
    sets one and redirects to URL. Keeps the Cookie header of every request."""

    def __init__(self) -> None:
        self.url = ""
        self.cookies: list[tuple[str, str | None]] = []  # (path, Cookie header)

    @web.middleware
    async def keep(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.cookies.append((request.path, request.headers.get("Cookie")))
        response: web.StreamResponse = await handler(request)
        return response

    async def login(self, request: web.Request) -> web.Response:
        response = web.Response(status=303, headers={"Location": "/home"})
        response.set_cookie("session", SESSION, path="/", httponly=True)
        return response

    async def home(self, request: web.Request) -> web.Response:
        if request.cookies.get("session") != SESSION:
            return web.Response(status=401, text="log in first")
        return web.json_response({"home": True})

    async def set(self, request: web.Request) -> web.Response:
        response = web.json_response({"set": True})
        response.set_cookie("session", SESSION, path="/")
        return response

    async def go(self, request: web.Request) -> web.Response:
        response = web.Response(status=303, headers={"Location": request.query["to"]})
        response.set_cookie("session", SESSION, path="/")
        return response


@contextlib.asynccontextmanager
async def site(host: str = "127.0.0.1") -> AsyncIterator[Site]:
    state = Site()
    app = web.Application(middlewares=[state.keep])
    app.router.add_route("*", "/login", state.login)
    app.router.add_get("/home", state.home)
    app.router.add_get("/set", state.set)
    app.router.add_get("/go", state.go)
    async with serving(app, host=host) as state.url:
        yield state


def _login(base: str) -> Request:
    return Request(f"{base}/login", method="POST", body=b"user=bob")


@pytest.mark.usefixtures("transport")
async def test_a_login_flow_keeps_its_session_cookie_across_the_redirect() -> None:
    async with site() as server:
        async with Fetcher(cookies=True) as fetcher:
            [logged_in] = await fetcher.gather([_login(server.url)])
            [again] = await fetcher.gather([f"{server.url}/home"])  # the jar outlives a run
        async with Fetcher() as fetcher:
            [without] = await fetcher.gather([_login(server.url)])
        async with Fetcher(cookies=True) as fetcher:  # a jar per Fetcher
            [fresh] = await fetcher.gather([f"{server.url}/home"])
    assert logged_in.status == 200, logged_in.error
    assert logged_in.final_url == f"{server.url}/home"
    assert again.status == 200
    assert without.status == fresh.status == 401
    sent = [cookie for path, cookie in server.cookies if path == "/home"]
    assert sent == [f"session={SESSION}", f"session={SESSION}", None, None]


@pytest.mark.usefixtures("transport")
async def test_a_cookie_goes_back_to_its_own_origin_only() -> None:
    """Another port of the same host, another host, a cross-origin redirect:
    none of them is sent the cookie."""
    async with (
        site() as first,
        site() as other_port,
        site("127.0.0.2") as other_host,
        Fetcher(cookies=True) as fetcher,
    ):
        await fetcher.gather([f"{first.url}/set"])
        port, host, back = await fetcher.gather(
            [f"{other_port.url}/home", f"{other_host.url}/home", f"{first.url}/home"]
        )
        [hopped] = await fetcher.gather([f"{first.url}/go?to={other_port.url}/home"])
    assert (port.status, host.status, back.status) == (401, 401, 200)
    assert hopped.status == 401
    assert hopped.final_url == f"{other_port.url}/home"
    assert [cookie for _, cookie in other_port.cookies] == [None, None]
    assert [cookie for _, cookie in other_host.cookies] == [None]


@pytest.mark.usefixtures("transport")
async def test_the_jars_cookies_merge_with_the_requests_own_as_aiohttp_merges_them() -> None:
    """A request's own Cookie header (or the fetcher's) is sent with the jar's
    cookies added, a jar cookie replacing a given one of the same name; a hop
    to another origin sends that origin's jar cookies only."""
    async with site() as server, site() as other:
        given = {"Cookie": "session=old; other=1"}
        async with Fetcher(cookies=True) as fetcher:
            await fetcher.gather([f"{server.url}/set", f"{other.url}/set"])
            await fetcher.gather([Request(f"{server.url}/home", headers=given)])
        async with Fetcher(cookies=True, headers={"Cookie": "d=1"}) as fetcher:
            await fetcher.gather([f"{server.url}/set", f"{other.url}/set"])
            await fetcher.gather([f"{server.url}/home", f"{server.url}/go?to={other.url}/home"])
    assert server.cookies[1:] == [
        ("/home", f"other=1; session={SESSION}"),  # sorted by name, as aiohttp
        ("/set", "d=1"),
        ("/home", f"d=1; session={SESSION}"),
        ("/go", f"d=1; session={SESSION}"),
    ]
    assert other.cookies[1:] == [("/set", "d=1"), ("/home", f"session={SESSION}")]


def test_the_jar_keeps_a_bounded_number_of_origins() -> None:
    async def main() -> tuple[int, list[str]]:
        jar = OriginCookieJar(max_origins=2)
        origins = [URL(f"http://127.0.0.1:{port}/") for port in (8001, 8002, 8003)]
        for origin in origins:
            jar.update_cookies({"a": str(origin.port)}, origin)
        jar.filter_cookies(origins[1])  # used: 8003 is now the least recent
        jar.update_cookies({"a": "4"}, URL("http://127.0.0.1:8004/"))
        kept = [str(origin.port) for origin in origins if jar.filter_cookies(origin)]
        return jar.origins, kept

    import asyncio

    assert asyncio.run(main()) == (2, ["8002"])


def test_the_jar_keeps_a_bounded_number_of_cookies_over_all_origins() -> None:
    """aiohttp bounds the cookies of one jar, not those of many: a server that
    sets the most it may at each of many origins (a wildcard DNS name, a
    redirect chain) is held to ``max_cookies`` in all, the origins used least
    recently dropped first."""

    async def main() -> tuple[int, list[int]]:
        jar = OriginCookieJar(max_origins=100, max_cookies=300)
        origins = [URL(f"http://127.0.0.1:{port}/") for port in range(8001, 8006)]
        for origin in origins:
            for first in (0, 50):  # aiohttp keeps 50 cookies of a response
                headers = [f"c{n}={'v' * 10}; Path=/" for n in range(first, first + 50)]
                jar.update_cookies_from_headers(headers, origin)
        kept = [len(jar.filter_cookies(origin)) for origin in origins]
        jar.update_cookies({"late": "1"}, URL("http://127.0.0.1:8009/"))  # 301: 8003 goes
        return len(jar), [*kept, len(jar.filter_cookies(origins[2]))]

    import asyncio

    assert asyncio.run(main()) == (201, [0, 0, 100, 100, 100, 0])


async def test_a_session_given_keeps_its_own_cookie_jar() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with pytest.raises(fanout.ConfigError, match="session= cannot be combined with cookies"):
            Fetcher(session=session, cookies=True)


@pytest.mark.usefixtures("transport")
def test_fetch_takes_cookies() -> None:
    with in_thread(site) as server:
        [result] = fanout.fetch([_login(server.url)], cookies=True)
    assert result.status == 200, result.error


@pytest.mark.usefixtures("transport")
@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_the_commands_take_cookies_and_never_show_them(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["-f", "home=home", "--format", "json"] if command == "aggregate" else ["-X", "POST"]

    def run(*options: str) -> tuple[int, dict[str, Any], str]:
        with pytest.raises(SystemExit) as exited:
            main(["--debug", command, f"{server.url}/login", *extra, "-q", *options])
        captured = capsys.readouterr()
        assert isinstance(exited.value.code, int)
        assert SESSION not in captured.out + captured.err
        return exited.value.code, json.loads(captured.out), captured.err

    with in_thread(site) as server:
        code, output, _ = run("--cookies")
        refused, without, _ = run()
    assert code == 0
    if command == "fetch":
        assert refused == 1
        assert output["status"] == 200
        assert without["status"] == 401
    else:
        assert output["requests"]["ok"] == 1
        assert without["requests"]["failed"] == {"http_status": 1}
