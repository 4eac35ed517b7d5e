"""Sockets bounded by the concurrency, whatever the number of hosts (fanout.net.pool),
and the file descriptor limit checked at start (fanout.net.fdlimit).

The hosts are the ports of one server process (tests/many_hosts.py), so the
sockets counted in this process are the client's own."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fanout import ErrorKind, Fetcher, Limits, Request, RetryPolicy, Timeouts
from fanout.net import aiohttp_internals as internals
from fanout.net.aiohttp_internals import IN_USE, private_hooks_missing
from fanout.net.fdlimit import concurrency_for, descriptors_needed, fit_concurrency
from fanout.net.pool import idle_cap, make_connector
from fanout.net.transport import AiohttpTransport
from tests.many_hosts import ManyHosts, many_hosts, open_sockets

FANOUT = [sys.executable, "-m", "fanout"]
# The idle cap and the counting of closing connections are the patched pool's;
# its fallback keeps no connection (test_the_fallback_keeps_no_connection).
patched_pool = pytest.mark.skipif(
    not IN_USE["pool"], reason="the patched pool's property (FANOUT_AIOHTTP_INTERNALS=off)"
)


@pytest.fixture(scope="module")
def hosts() -> Iterator[ManyHosts]:
    with many_hosts(120) as running:
        yield running


def _limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _run_limited(
    args: list[str], soft: int, hard: int, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: _limited(soft, hard),
    )


async def _ports(fetcher: Fetcher, urls: list[str]) -> list[str]:
    """The client port each request was made from, as the server saw it, in order."""
    ports = []
    for url in urls:
        [result] = await fetcher.gather([url])
        assert result.ok, result.error
        assert result.body is not None
        ports.append(result.body.decode())
    return ports


def _session(fetcher: Fetcher) -> aiohttp.ClientSession:
    transport = fetcher._transport
    assert isinstance(transport, AiohttpTransport)
    return transport.session


def _connector(fetcher: Fetcher) -> aiohttp.BaseConnector:
    session = _session(fetcher)
    assert session.connector is not None
    return session.connector


# ------------------------------------------------------------------ the pool


async def test_idle_sockets_are_capped_over_many_hosts(hosts: ManyHosts) -> None:
    """The idle cap is the patched pool's; the fallback keeps no idle socket."""
    before = open_sockets()
    async with Fetcher(limits=Limits(concurrency=4, per_host=1)) as fetcher:
        results = await fetcher.gather([f"{url}/a" for url in hosts.urls])
        assert all(result.ok for result in results)
        connector = _connector(fetcher)
        if IN_USE["pool"]:
            assert isinstance(connector, internals._IdleCapped)
            assert connector.idle <= idle_cap(4)
            # Open now: the idle ones and those being closed (at most the concurrency).
            assert 1 <= open_sockets() - before <= idle_cap(4) + 4
        else:
            assert connector.force_close
            assert open_sockets() - before <= 4  # only those being closed
    assert open_sockets() - before <= 4  # closed with the fetcher (but for the closing)


async def test_keep_alive_is_kept_for_a_host_that_comes_back(hosts: ManyHosts) -> None:
    """Keep-alive is the patched pool's; the fallback opens a new connection."""
    async with Fetcher(limits=Limits(concurrency=2, per_host=1)) as fetcher:
        first, again = await _ports(fetcher, [hosts.urls[0], hosts.urls[0]])
    assert (first == again) is IN_USE["pool"]


@patched_pool
async def test_the_least_recently_used_idle_connection_is_closed_first(
    hosts: ManyHosts,
) -> None:
    cap = idle_cap(1)
    urls = hosts.urls[: cap + 1]
    async with Fetcher(limits=Limits(concurrency=1, per_host=1)) as fetcher:
        ports = await _ports(fetcher, urls)  # one past the cap: the first is closed
        second, first = await _ports(fetcher, [urls[1], urls[0]])
    assert second == ports[1]  # still kept
    assert first != ports[0]  # closed: a new connection


@patched_pool
async def test_a_reused_connection_is_not_idle_and_becomes_the_most_recent(
    hosts: ManyHosts,
) -> None:
    cap = idle_cap(1)
    urls = hosts.urls[:cap]
    async with Fetcher(limits=Limits(concurrency=1, per_host=1)) as fetcher:
        connector = _connector(fetcher)
        assert isinstance(connector, internals._IdleCapped)
        ports = await _ports(fetcher, urls)  # the cap reached: urls[0] is the oldest
        session = _session(fetcher)
        async with session.get(f"{urls[0]}/big") as response:
            assert connector.idle == cap - 1  # the one in use is not idle
            await response.read()
        await _ports(fetcher, [hosts.urls[cap]])  # one past the cap
        first, second = await _ports(fetcher, [urls[0], urls[1]])
    assert first == ports[0]  # used last before the new host: kept
    assert second != ports[1]  # the oldest then: closed


async def test_the_fallback_keeps_no_connection(
    hosts: ManyHosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(internals.PRIVATE_METHODS, "_renamed_in_a_new_aiohttp", ())
    monkeypatch.setattr(internals, "_fallen_back", dict(internals._fallen_back))
    before = open_sockets()
    async with Fetcher(limits=Limits(concurrency=4, per_host=1)) as fetcher:
        connector = _connector(fetcher)
        assert not isinstance(connector, internals._IdleCapped)
        assert connector.force_close
        first, again = await _ports(fetcher, [hosts.urls[0], hosts.urls[0]])
        results = await fetcher.gather([f"{url}/b" for url in hosts.urls])
        assert all(result.ok for result in results)
        assert open_sockets() - before <= 4  # only those being closed
    assert first != again


@patched_pool
async def test_a_connection_being_closed_counts_against_the_limit(hosts: ManyHosts) -> None:
    connector = make_connector(concurrency=1, resolver=aiohttp.ThreadedResolver())
    assert isinstance(connector, internals._IdleCapped)
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.get(f"{hosts.urls[0]}/big")
        assert response.connection is not None
        key, protocol = response.connection._key, response.connection.protocol
        assert protocol is not None
        closed = protocol.closed
        assert closed is not None
        waiting = asyncio.create_task(session.get(f"{hosts.urls[0]}/a"))
        for _ in range(100):  # until it waits for the one slot (a few loop turns)
            if connector._waiters:
                break
            await asyncio.sleep(0)
        assert connector._waiters
        response.close()  # the pool closes the connection; its socket closes later
        assert connector.closing == 1
        assert connector._available_connections(key) == 0  # the slot is still taken
        await closed
        assert connector.closing == 0
        # The socket closed, the waiting request goes (bounded: it would hang).
        again = await asyncio.wait_for(waiting, timeout=30)
        assert again.status == 200
        again.release()


async def test_a_connection_in_use_is_never_evicted(hosts: ManyHosts) -> None:
    """aiohttp skips a broken idle connection and takes the host's next one;
    the evictions that follow close idle connections only."""
    a, b, c = hosts.urls[:3]
    connector = internals._IdleCapped(idle_cap=2, limit=4, resolver=aiohttp.ThreadedResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        first, second = await asyncio.gather(session.get(f"{a}/a"), session.get(f"{a}/a"))
        await first.read()
        await second.read()
        [kept] = connector._conns.values()
        assert len(kept) == 2
        kept[0][0].close()  # as if the server had closed it
        big = await session.get(f"{a}/big")  # on the other one
        for url in (b, c):  # two new idle connections: one past the cap
            done = await session.get(f"{url}/a")
            await done.read()
        assert len(await big.read()) == 4 << 20


async def test_canary_aiohttps_private_connector_internals_are_still_there() -> None:
    """Fails when a new aiohttp renames what fanout's pool relies on: the run would
    then go on without keep-alive (the fallback). Update fanout.net.aiohttp_internals.
    With FANOUT_AIOHTTP_INTERNALS=off, the fallback is what is made."""
    assert private_hooks_missing() == []
    connector = make_connector(concurrency=4, resolver=aiohttp.ThreadedResolver())
    try:
        assert internals._attributes_missing(connector) == []
        assert isinstance(connector, internals._IdleCapped) is IN_USE["pool"]
        assert connector.force_close is not IN_USE["pool"]
    finally:
        await connector.close()


def test_a_changed_signature_counts_as_missing() -> None:
    class Changed(aiohttp.TCPConnector):
        def _release(self, key: object, proto: object) -> None:  # type: ignore[override]
            pass

    assert private_hooks_missing(Changed) == ["_release"]


# ------------------------------------------------------------------ the CLI


def test_cli_fetches_many_hosts_under_a_low_descriptor_limit(hosts: ManyHosts) -> None:
    # 120 hosts at -c 8 under ulimit -n 100: every host kept idle would not fit.
    assert descriptors_needed(8) <= 100 < len(hosts.urls)
    urls = "".join(f"{url}/c\n" for url in hosts.urls)
    done = _run_limited([*FANOUT, "fetch", "-c", "8", "-q", "-i", "-"], 100, 100, stdin=urls)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == len(hosts.urls)
    assert all(record["ok"] for record in records), [r["error"] for r in records][:3]


def test_cli_raises_the_soft_limit_toward_the_hard_one(hosts: ManyHosts) -> None:
    script = textwrap.dedent(
        """
        import resource, sys
        from fanout.cli import main
        try:
            main(sys.argv[1:])
        finally:
            print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], file=sys.stderr)
        """
    )
    args = [sys.executable, "-c", script, "fetch", "-c", "200", "-q", f"{hosts.urls[0]}/d"]
    done = _run_limited(args, 100, 1024)
    assert done.returncode == 0, done.stderr
    assert "lowered" not in done.stderr
    assert int(done.stderr.split()[-1]) == descriptors_needed(200)
    assert json.loads(done.stdout)["ok"]


def test_cli_lowers_the_concurrency_when_the_hard_limit_is_low(hosts: ManyHosts) -> None:
    done = _run_limited([*FANOUT, "fetch", "-c", "64", "-q", f"{hosts.urls[0]}/e"], 100, 100)
    assert done.returncode == 0, done.stderr
    lowered = concurrency_for(100)
    assert done.stderr == f"fanout: ulimit -n is 100: concurrency lowered from 64 to {lowered}\n"
    assert json.loads(done.stdout)["ok"]


def test_aggregate_lowers_the_concurrency_too(server_thread: str) -> None:
    args = [*FANOUT, "aggregate", "-c", "64", f"{server_thread}/items/1", "-f", "price"]
    done = _run_limited(args, 100, 100)
    assert done.returncode == 0, done.stderr
    lowered = concurrency_for(100)
    first = done.stderr.splitlines()[0]
    assert first == f"fanout: ulimit -n is 100: concurrency lowered from 64 to {lowered}"
    assert "Traceback" not in done.stderr


def test_the_library_lowers_its_own_concurrency_and_warns(hosts: ManyHosts) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, resource
        from fanout import Fetcher, Limits
        async def main():
            async with Fetcher(limits=Limits(concurrency=64)) as fetcher:
                [result] = await fetcher.gather([{hosts.urls[0] + "/f"!r}])
                print(result.ok, fetcher._concurrency)
        asyncio.run(main())
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    done = _run_limited([sys.executable, "-c", script], 100, 1024)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", str(concurrency_for(100)), "100"]  # limit unchanged
    assert "ulimit -n is 100: concurrency lowered from 64 to" in done.stderr


# ------------------------------------------------------------------ the figures


def test_concurrency_for_is_the_highest_that_fits() -> None:
    for limit in (1, 20, 73, 74, 100, 256, 1024, 4096):
        found = concurrency_for(limit)
        assert found >= 1
        if found > 1:
            assert descriptors_needed(found) <= limit
        assert descriptors_needed(found + 1) > limit


def test_fit_concurrency_keeps_what_fits(caplog: pytest.LogCaptureFixture) -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    small = 1 if soft == resource.RLIM_INFINITY else concurrency_for(soft)
    with caplog.at_level(logging.WARNING):
        assert fit_concurrency(small) == (small, None)
    assert not caplog.records


# aiohttp warns that a large bytes body is sent in one piece: the point here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_connection_whose_peer_never_reads_does_not_hold_its_slot_forever() -> None:
    """A server that accepts a large upload and never reads it: the request
    ends at its deadline and its connection is closed with unsent bytes.
    Its socket would close only once the peer read them (never), so counting
    it against the limit until then took the slot for good: every later
    request, to any host, waited for it and failed its connect deadline
    (and, counted as a connection failure, could get a healthy host skipped)."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # kept open, never read

    sink = await asyncio.start_server(never_read, "127.0.0.1", 0)
    healthy = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    port = healthy.sockets[0].getsockname()[1]
    body = b"x" * (32 << 20)  # far more than the socket buffers hold
    try:
        timeouts = Timeouts(connect=5.0, read=1.0, total=1.0)
        limits = Limits(concurrency=1)
        retry = RetryPolicy(attempts=1)
        async with Fetcher(limits=limits, timeouts=timeouts, retry=retry) as fetcher:
            [stuck] = await fetcher.gather(
                [Request(f"http://127.0.0.1:{sink_port}/up", method="POST", body=body)]
            )
            assert stuck.error is not None
            assert stuck.error.kind is ErrorKind.TIMEOUT
            [after] = await fetcher.gather([f"http://127.0.0.1:{port}/"])
            assert after.ok, after.error
    finally:
        for writer in accepted:
            writer.transport.abort()
        sink.close()
        healthy.close()


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    writer.close()


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a throwaway self-signed certificate (openssl)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec"]
    command += ["-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=t"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def _tls_ignoring_close_notify(
    context: ssl.SSLContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    response: bytes,
) -> None:
    """TLS by hand: answer one request with ``response``, then read and ignore
    whatever comes (the client's close_notify included) without answering or
    closing."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)

    async def flush() -> None:
        if data := outgoing.read():
            writer.write(data)
            await writer.drain()

    async def more() -> bool:
        await flush()
        data = await reader.read(65536)
        incoming.write(data)
        return bool(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if not await more():
                return
    request = b""
    while b"\r\n\r\n" not in request:
        try:
            request += tls.read(65536)
        except ssl.SSLWantReadError:
            if not await more():
                return
    tls.write(response)
    await flush()
    while await reader.read(65536):
        pass  # close_notify: no answer, the socket stays open


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
async def test_an_evicted_tls_connection_does_not_hold_a_slot_while_its_peer_is_silent(
    tmp_path: Path, connection: str
) -> None:
    """A TLS connection closed by the pool (evicted past the idle cap, or closed
    as its response asked) waits for the peer's close_notify (up to asyncio's
    30 s) before its socket closes; counted against the limit all that while,
    a server that never answers it took a slot for 30 s with every connection
    closed, and the requests to other hosts waited for them."""
    response = f"HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: 2\r\n\r\nok"
    context = _self_signed(tmp_path)
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await _tls_ignoring_close_notify(context, reader, writer, response.encode())

    silent = await asyncio.start_server(handle, "127.0.0.1", 0)
    healthy = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{silent.sockets[0].getsockname()[1]}/"
    other = f"http://127.0.0.1:{healthy.sockets[0].getsockname()[1]}/"
    connector = internals._IdleCapped(idle_cap=0, limit=1, resolver=aiohttp.ThreadedResolver())
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            first = await session.get(url, ssl=False)
            assert await first.read() == b"ok"  # released, then evicted: past the cap of 0
            # Bounded: the slot came back only after 30 s.
            second = await asyncio.wait_for(session.get(other), timeout=10)
            assert await second.read() == b"ok"
    finally:
        for writer in writers:
            writer.transport.abort()
        silent.close()
        healthy.close()
