"""The curl transport alone: what it leaves behind when a transfer is cut short,
its choice by option, environment and command line, and its refusals (the
behaviour shared with aiohttp runs in the test files parametrised by the
``transport`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fanout import (
    ConfigError,
    ErrorKind,
    Fetcher,
    FetcherConfig,
    Limits,
    Request,
    Result,
    RetryPolicy,
    Timeouts,
)
from fanout.cli import main
from fanout.demo import DemoServer

pytest.importorskip("pycurl")

ONCE = RetryPolicy(attempts=1)


def _connections_to(port: int) -> int:
    """TCP connections this process holds open to ``port`` on loopback (Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


def _held(fetcher: Fetcher) -> dict[str, int]:
    transport: Any = fetcher._transport
    counts: dict[str, int] = transport.counts()
    return counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp")
@pytest.mark.parametrize(
    ("path", "timeouts", "message"),
    [
        ("/hang", Timeouts(total=0.3), "total deadline of 0.3s for one attempt"),
        ("/hang", Timeouts(read=0.3), "read deadline: no data for 0.3s"),
        ("/stall", Timeouts(read=0.3), "read deadline: no data for 0.3s"),
    ],
    ids=["total", "read-before-headers", "read-in-body"],
)
async def test_a_deadline_leaves_no_handle_socket_or_timer_behind(
    server: DemoServer, path: str, timeouts: Timeouts, message: str
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    async with Fetcher(transport="curl", timeouts=timeouts, retry=ONCE) as fetcher:
        results = await fetcher.gather([f"{server.url}{path}?n={n}" for n in range(3)])
        for result in results:
            assert result.error is not None
            assert result.error.kind is ErrorKind.TIMEOUT
            assert result.error.message == message
        assert _held(fetcher) == {"handles": 0, "sockets": 0, "gap_timers": 0, "timer": 0}
        assert _connections_to(port) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp")
async def test_a_cancelled_exchange_is_removed_at_once(server: DemoServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    async with Fetcher(transport="curl", retry=ONCE) as fetcher:
        task = asyncio.ensure_future(fetcher.gather([f"{server.url}/hang?n={n}" for n in range(4)]))
        async with asyncio.timeout(30):  # the four requests are on the wire
            await server.stats.wait_until(lambda stats: len(stats.seen) == 4)
        assert _connections_to(port) == 4
        assert _held(fetcher)["handles"] == 4
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _held(fetcher) == {"handles": 0, "sockets": 0, "gap_timers": 0, "timer": 0}
        assert _connections_to(port) == 0


async def test_a_completed_run_keeps_only_idle_connections(server: DemoServer) -> None:
    async with Fetcher(transport="curl") as fetcher:
        results = await fetcher.gather([f"{server.url}/items/{n}" for n in range(1, 21)])
        assert all(result.ok for result in results)
        held = _held(fetcher)
        assert held["handles"] == 0
        assert held["gap_timers"] == 0


async def test_a_post_is_sent_once_on_a_connection_of_its_own(server: DemoServer) -> None:
    async with Fetcher(transport="curl") as fetcher:
        [result] = await fetcher.gather(
            [Request(f"{server.url}/echo", method="POST", body=b"payload")]
        )
    assert result.ok, result.error
    echoed = result.json()
    assert echoed["method"] == "POST"
    assert echoed["body"] == "payload"
    headers = echoed["headers"]
    assert headers["Content-Type"] == "application/octet-stream"  # not libcurl's form type
    assert "Expect" not in headers  # no 100-continue round trip
    assert headers["User-Agent"].startswith("fanout/")


async def test_a_pooled_handle_keeps_nothing_of_the_request_before(server: DemoServer) -> None:
    # one handle for every request: a HEAD's, a POST's or a header's option
    # must not reach the plain GET after it
    echo = f"{server.url}/echo"
    requests = [
        Request(echo, method="HEAD"),
        Request(echo),
        Request(echo, method="POST", body=b"payload"),
        Request(echo),
        Request(echo, method="DELETE"),
        Request(echo),
        Request(echo, headers={"X-Once": "1"}),
        Request(echo),
    ]
    async with Fetcher(transport="curl", limits=Limits(concurrency=1), retry=ONCE) as fetcher:
        results = [(await fetcher.gather([request]))[0] for request in requests]
    assert all(result.ok for result in results), [result.error for result in results]
    assert results[0].body == b""
    assert results[6].json()["headers"]["X-Once"] == "1"
    for result in results[1::2]:
        echoed = result.json()
        assert echoed["method"] == "GET"
        assert echoed["body"] == ""
        assert "X-Once" not in echoed["headers"]
        assert "Content-Length" not in echoed["headers"]


async def test_libcurls_timer_alone_ends_a_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNs unanswered (a full accept queue): only libcurl's timer, moved on
    as transfers start, ends the connects (the safety timer is off), each by
    the connect deadline, long before the total one."""
    monkeypatch.setattr("fanout.net.curl._SAFETY_INTERVAL", 3600.0)
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
        timeouts = Timeouts(connect=0.2, total=30)
        async with Fetcher(transport="curl", retry=ONCE, timeouts=timeouts) as fetcher:
            results = await fetcher.gather([f"http://127.0.0.1:{port}/{n}" for n in range(6)])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    for result in results:
        assert result.error is not None
        assert result.error.message == "connect deadline of 0.2s"


def test_missing_pycurl_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycurl", None)  # import pycurl raises ImportError
    with pytest.raises(ConfigError, match=r"needs pycurl.*pip install 'fanout\[curl\]'"):
        FetcherConfig(transport="curl")
    monkeypatch.setenv("FANOUT_TRANSPORT", "curl")
    with pytest.raises(ConfigError, match="needs pycurl"):
        Fetcher()


def test_missing_pycurl_on_the_command_line_is_one_line_and_status_two(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pycurl", None)
    with pytest.raises(SystemExit) as exited:
        main(["fetch", "http://127.0.0.1:9/", "--transport", "curl"])
    captured = capsys.readouterr()
    assert exited.value.code == 2
    [line] = captured.err.splitlines()
    assert line.startswith("fanout: error: ")
    assert "pip install 'fanout[curl]'" in line
    assert captured.out == ""


def test_the_environment_picks_the_transport_the_options_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FANOUT_TRANSPORT", raising=False)
    assert FetcherConfig().transport == "aiohttp"
    monkeypatch.setenv("FANOUT_TRANSPORT", "curl")
    assert FetcherConfig().transport == "curl"
    assert FetcherConfig(transport="aiohttp").transport == "aiohttp"
    monkeypatch.setenv("FANOUT_TRANSPORT", "libcurl")
    with pytest.raises(ConfigError, match="FANOUT_TRANSPORT='libcurl': must be"):
        FetcherConfig()
    with pytest.raises(ConfigError, match="transport must be 'aiohttp' or 'curl'"):
        FetcherConfig(transport="requests")  # type: ignore[arg-type]


async def test_a_session_is_refused() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=r"session= .* cannot be combined with transport"):
            Fetcher(session=session, transport="curl")


@pytest.mark.usefixtures("transport")
async def test_a_request_that_is_not_retry_safe_reaches_the_server_once() -> None:
    """A server that reads the second request of a connection, then closes it
    unanswered: a transport that resends on a reused connection would deliver
    that POST twice (libcurl does so for a request whose reused connection
    ends before any byte of the answer)."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for served in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                seen.append(head.split(b" ", 1)[0].decode())
                if served == 1:
                    break  # the second request of a connection: no answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    try:
        limits = Limits(concurrency=1, per_host=1)
        retry = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.002)
        async with Fetcher(limits=limits, retry=retry) as fetcher:
            [got] = await fetcher.gather([url])
            assert got.ok, got.error
            [posted] = await fetcher.gather([Request(url, method="POST", body=b"once")])
    finally:
        server.close()
        await server.wait_closed()
    assert seen.count("POST") == 1, (seen, posted)


async def _fetch_one_from(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Result:
    """The one Result of a GET to a raw loopback server that answers with ``serve``."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Fetcher(retry=ONCE) as fetcher:
            [result] = await fetcher.gather([f"http://127.0.0.1:{port}/"])
    finally:
        server.close()
        await server.wait_closed()
    return result


@pytest.mark.usefixtures("transport")
@pytest.mark.parametrize(
    "answer",
    [
        b"garbage here\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",
    ],
    ids=[
        "not-http",
        "bad-status",
        "bad-chunk",
        "two-lengths",
        "short-body",
        "nothing",
        "long-header-line",
        "long-header-line-no-body",
        "huge-header-line",
        "headers-cut-in-a-line",
        "headers-cut-after-the-status",
        "headers-cut-after-a-1xx",
    ],
)
async def test_a_malformed_answer_is_a_protocol_failure(answer: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    result = await _fetch_one_from(serve)
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROTOCOL, result.error
    assert not result.error.message.rstrip().endswith(":"), "says what went wrong"
    assert result.attempts == 1


@pytest.mark.usefixtures("transport")
@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nX-A: b\r\n"],
    ids=["after-a-1xx", "inside-the-headers"],
)
async def test_a_reset_before_the_headers_end_is_a_connection_lost(answer: bytes) -> None:
    """Not an "incomplete body": no response had begun its body (aiohttp's words)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.transport.abort()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await serve(reader, writer)

    result = await _fetch_one_from(cut)
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROTOCOL, result.error
    assert result.error.message.startswith("connection lost"), result.error


async def test_the_addresses_of_fanouts_resolver_expire_in_libcurls_cache() -> None:
    """With ``nameservers``, each name's addresses are handed to libcurl as a
    CURLOPT_RESOLVE entry, which lands in the multi's DNS cache. A plain entry
    stays there for good (libcurl never prunes one): one per host:port, for as
    long as the run, and a cache libcurl walks on every transfer (60,000 hosts:
    15 MB, and each transfer 20 times slower). A "+" entry expires as a lookup
    of libcurl's own does; each transfer sets its name's entry again anyway."""
    from yarl import URL

    from fanout.net.curl import CurlTransport
    from tests.stub_dns import StubDNS

    async with StubDNS() as dns:
        transport = CurlTransport(
            concurrency=1, timeouts=Timeouts(), headers={}, nameservers=[dns.nameserver]
        )
        try:
            entry = await transport._resolve(URL("http://a.test:8080/"), None)
        finally:
            await transport.close()
    assert entry == "+a.test:8080:127.0.0.1"
