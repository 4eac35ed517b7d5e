"""``Fetcher(session=...)``: a session of the user's own carries the requests and
is left open, and the engine's guarantees hold on it (deadlines, max_bytes
counted decoded, redirects followed by fanout, credentials kept to their
origin, no hidden resend); the options that need fanout's own connector are
refused with it rather than silently dropped."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fanout import Caps, ConfigError, ErrorKind, Fetcher, Request, RetryPolicy, Timeouts
from fanout.demo import DemoServer
from tests.background import in_thread
from tests.hostile import Reply, Traps
from tests.tls_server import TLSFiles

ONCE = RetryPolicy(attempts=1)


@pytest.fixture
async def odd_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose defaults are all unlike fanout's: statuses raised, bodies
    not decoded, no deadlines, redirects followed, a header of its own."""
    async with aiohttp.ClientSession(
        headers={"X-From-Session": "yes"},
        raise_for_status=True,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None, connect=None),
    ) as session:
        yield session


async def test_the_session_given_carries_the_requests_and_is_left_open(
    server: DemoServer, odd_session: aiohttp.ClientSession
) -> None:
    options: dict[str, Any] = {"user_agent": "agent/1", "headers": {"X-Fetcher": "1"}}
    async with Fetcher(session=odd_session, retry=ONCE, **options) as fetcher:
        [result] = await fetcher.gather([f"{server.url}/echo"])
        assert fetcher.dns_stats is None  # the session's resolver, not fanout's
    assert not odd_session.closed
    headers = result.json()["headers"]
    assert headers["X-From-Session"] == "yes"
    assert headers["User-Agent"] == "agent/1"
    assert headers["X-Fetcher"] == "1"
    async with odd_session.get(f"{server.url}/items/1") as response:  # still usable
        assert response.status == 200


async def test_the_session_given_keeps_its_middlewares(server: DemoServer) -> None:
    """Also where fanout sends each request with a client middleware of its own
    (``FANOUT_AIOHTTP_INTERNALS=off``: aiohttp's resend stopped so), which would
    replace the session's."""

    async def tag(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        request.headers["X-From-Middleware"] = "yes"
        return await handler(request)

    async with (
        aiohttp.ClientSession(middlewares=(tag,)) as session,
        Fetcher(session=session, retry=ONCE) as fetcher,
    ):
        [result] = await fetcher.gather([f"{server.url}/echo"])
    assert result.json()["headers"]["X-From-Middleware"] == "yes"


async def test_the_engine_guarantees_hold_on_a_session_given(
    server: DemoServer, odd_session: aiohttp.ClientSession
) -> None:
    base = server.url
    urls = [
        f"{base}/status/404",
        f"{base}/gzip-bomb?size=100000",
        f"{base}/stall",
        f"{base}/redirect/2",
    ]
    caps = Caps(max_bytes=10_000)
    timeouts = Timeouts(read=0.2, total=10.0)
    async with Fetcher(session=odd_session, retry=ONCE, caps=caps, timeouts=timeouts) as fetcher:
        missing, bomb, stalled, redirected = await fetcher.gather(urls)
    assert (missing.status, missing.error and missing.error.kind) == (404, ErrorKind.HTTP_STATUS)
    assert bomb.error is not None
    assert bomb.error.kind is ErrorKind.TOO_LARGE
    assert "decoded" in bomb.error.message
    assert stalled.error is not None
    assert stalled.error.kind is ErrorKind.TIMEOUT
    assert "read deadline" in stalled.error.message
    assert redirected.status == 200
    assert redirected.final_url != redirected.request.url  # fanout followed the hops


async def test_credentials_stay_with_their_origin_on_a_session_given(
    servers: DemoServer, odd_session: aiohttp.ClientSession
) -> None:
    a, b = servers.urls[0], servers.urls[1]
    headers = {"Authorization": "Bearer secret", "X-Plain": "1"}
    urls = [f"{a}/echo", f"{a}/redirect-to?url={b}/echo", f"{a}/redirect-to?url={a}/echo"]
    async with Fetcher(session=odd_session, retry=ONCE, headers=headers) as fetcher:
        direct, other, same = await fetcher.gather(urls)
    assert direct.json()["headers"]["Authorization"] == "Bearer secret"
    assert str(other.final_url).startswith(b)
    assert "Authorization" not in other.json()["headers"]
    assert other.json()["headers"]["X-Plain"] == "1"
    assert same.json()["headers"]["Authorization"] == "Bearer secret"


def test_a_request_marked_not_idempotent_is_sent_once_on_a_session_given() -> None:
    """aiohttp resends a PUT whose connection is reset, unseen, unless told not
    to: fanout tells a session given too."""

    async def put(url: str) -> tuple[ErrorKind | None, bool]:
        request = Request(url, method="PUT", body=b"payload", idempotent=False)
        async with aiohttp.ClientSession() as session:
            retry = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.01)
            async with Fetcher(session=session, retry=retry) as fetcher:
                [result] = await fetcher.gather([request])
            return (None if result.error is None else result.error.kind), session.closed

    with in_thread(Traps) as traps:
        traps.route("/reset", Reply(b"", end="reset"))
        base = traps.base("127.0.0.1")
        kind, closed = asyncio.run(put(f"{base}/reset"))
        sent = [(s.method, s.body) for s in traps.seen(base, "/reset")]
    assert kind is ErrorKind.PROTOCOL
    assert sent == [("PUT", b"payload")]
    assert not closed


@pytest.mark.parametrize(
    "option",
    ["deny_private", "allow_hosts", "deny_hosts", "nameservers", "cacert", "verify", "client_cert"],
)
async def test_options_of_fanouts_own_connector_are_refused_with_a_session(
    option: str, tls_files: TLSFiles
) -> None:
    values: dict[str, Any] = {
        "deny_private": True,
        "allow_hosts": ["*.example"],
        "deny_hosts": ["10.0.0.0/8"],
        "nameservers": ["127.0.0.1"],
        "cacert": tls_files.cacert,
        "verify": False,
        "client_cert": (tls_files.cert, tls_files.key),
    }
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=rf"session= cannot be combined with {option}:"):
            Fetcher(session=session, **{option: values[option]})


@pytest.mark.parametrize(
    ("session_options", "named"),
    [
        ({"auth": ("user", "pw")}, "auth"),
        ({"headers": {"authorization": "Bearer x"}}, "Authorization"),
        ({"headers": {"Cookie": "a=b"}}, "Cookie"),
    ],
)
async def test_a_session_with_default_credentials_is_refused(
    session_options: dict[str, Any], named: str
) -> None:
    with warnings.catch_warnings():  # auth= is deprecated in aiohttp 3.14, still honoured
        warnings.simplefilter("ignore", DeprecationWarning)
        if "auth" in session_options:
            session_options = {"auth": aiohttp.BasicAuth(*session_options["auth"])}
        session = aiohttp.ClientSession(**session_options)
    async with session:
        with pytest.raises(ConfigError, match=rf"default credentials \({named}\)"):
            Fetcher(session=session)


async def test_a_closed_session_is_refused(tmp_path: Path) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    with pytest.raises(ConfigError, match="session= is closed"):
        Fetcher(session=session)
