"""fanout's resolver (fanout.net.dns) against the stub DNS server on loopback:
TTLs, negative caching, coalescing, the bound on lookups in flight, the
deadline, and dns records with the resolver's reason. No real name is ever
resolved: every Resolver here is pointed at the stub."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanout import ConfigError, ErrorKind, Fetcher, Limits, RetryPolicy, Timeouts
from fanout.cli import cli, main
from fanout.demo import DemoServer, ServerThread
from fanout.net import aiohttp_internals as internals
from fanout.net import dns as dns_module
from fanout.net.aiohttp_internals import IN_USE
from fanout.net.dns import Resolver
from fanout.net.nameservers import parse_nameserver
from fanout.net.transport import DNSError, dns_deadline
from tests.background import in_thread
from tests.stub_dns import DEFAULT_ZONE, Name, StubDNS

ZONE = {
    **DEFAULT_ZONE,
    "t.test": Name.fixed("127.0.0.1", ttl=60),
    "zero.test": Name.fixed("127.0.0.1", ttl=0),
    "slow.test": Name.fixed("127.0.0.1"),
    **{f"h{i}.test": Name.fixed(f"127.0.0.{i + 1}") for i in range(8)},
    **{f"n{i}.test": Name.fixed("127.0.0.1") for i in range(10)},
    "many.test": Name.fixed(*(f"127.0.{i // 250}.{i % 250 + 1}" for i in range(2000))),
}
ONCE = RetryPolicy(attempts=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub() -> AsyncIterator[StubDNS]:
    async with StubDNS(ZONE) as running:
        yield running


@pytest.fixture
async def clock() -> Clock:
    return Clock()


async def resolve(resolver: Resolver, name: str) -> list[str]:
    return [r["host"] for r in await resolver.resolve(name, 80, socket.AF_INET)]


async def test_answers_are_kept_for_their_ttl(stub: StubDNS, clock: Clock) -> None:
    resolver = Resolver([stub.nameserver], clock=clock)
    try:
        assert await resolve(resolver, "t.test") == ["127.0.0.1"]
        clock.now += 59
        assert await resolve(resolver, "T.test") == ["127.0.0.1"]  # any case
        assert stub.count("t.test") == 1
        clock.now += 2  # past the TTL of 60 s
        assert await resolve(resolver, "t.test") == ["127.0.0.1"]
        # Asked again: c-ares's own cache is off. Its fallback (the cache on, which
        # counts real seconds, not this clock's) answers from memory.
        assert stub.count("t.test") == (2 if IN_USE["dns_cache"] else 1)
        assert resolver.query_cache_off is IN_USE["dns_cache"]
        assert resolver.stats.cache_hits == 1
        assert resolver.stats.queries == 2
    finally:
        await resolver.close()


def _asked(stub: StubDNS, resolver: Resolver, name: str) -> int:
    """How often ``name`` was looked up past the Resolver's cache: at the stub when
    c-ares's own cache is off, else (its fallback: c-ares's cache may answer)
    as the Resolver counts its queries (of this one name)."""
    return stub.count(name) if IN_USE["dns_cache"] else resolver.stats.queries


async def test_ttls_are_clamped(stub: StubDNS, clock: Clock) -> None:
    resolver = Resolver([stub.nameserver], clock=clock, max_ttl=2, min_ttl=1)
    try:
        await resolve(resolver, "t.test")
        clock.now += 1.5
        await resolve(resolver, "t.test")
        assert _asked(stub, resolver, "t.test") == 1
        clock.now += 1  # past the clamp of 2 s, within the record's 60
        await resolve(resolver, "t.test")
        assert _asked(stub, resolver, "t.test") == 2
    finally:
        await resolver.close()


async def test_a_ttl_of_zero_is_not_cached(stub: StubDNS, clock: Clock) -> None:
    resolver = Resolver([stub.nameserver], clock=clock)
    try:
        for _ in range(3):
            assert await resolve(resolver, "zero.test") == ["127.0.0.1"]
        assert stub.count("zero.test") == 3
        assert resolver.cached_names == 0
    finally:
        await resolver.close()


async def test_negative_answers_and_failures_are_remembered(stub: StubDNS, clock: Clock) -> None:
    resolver = Resolver([stub.nameserver], clock=clock, negative_ttl=30, failure_ttl=5)

    def asked() -> tuple[int, int]:
        return stub.count("nx.test"), stub.count("fail.test")  # c-ares retries a SERVFAIL

    try:
        for round in range(2):
            with pytest.raises(DNSError, match=r"^NXDOMAIN for nx\.test$") as caught:
                await resolve(resolver, "nx.test")
            assert caught.value.negative
            with pytest.raises(DNSError, match=r"^SERVFAIL for fail\.test$"):
                await resolve(resolver, "fail.test")
            if round == 0:
                first = asked()
        assert asked() == first
        clock.now += 6  # past the failure's 5 s, within the negative answer's 30
        for name in ("nx.test", "fail.test"):
            with pytest.raises(DNSError):
                await resolve(resolver, name)
        assert asked()[0] == first[0]
        assert asked()[1] > first[1]
        clock.now += 30
        with pytest.raises(DNSError):
            await resolve(resolver, "nx.test")
        assert asked()[0] > first[0]
        assert resolver.stats.failures == 7
        assert resolver.stats.queries == 4
    finally:
        await resolver.close()


async def test_no_address_of_the_family_asked_is_nodata(stub: StubDNS) -> None:
    resolver = Resolver([stub.nameserver])
    try:
        with pytest.raises(DNSError, match=r"^no address for six\.test \(NODATA\)$"):
            await resolve(resolver, "six.test")
    finally:
        await resolver.close()


async def test_concurrent_lookups_of_one_name_make_one_query(stub: StubDNS) -> None:
    resolver = Resolver([stub.nameserver])
    stub.hold("t.test")  # so that all 100 wait for the same lookup
    try:
        lookups = [asyncio.create_task(resolve(resolver, "t.test")) for _ in range(100)]
        await asyncio.wait_for(stub.until(lambda: stub.count("t.test") == 1), 10)
        stub.release("t.test")
        assert await asyncio.gather(*lookups) == [["127.0.0.1"]] * 100
        assert stub.count("t.test") == 1
        assert resolver.stats.coalesced == 99
    finally:
        await resolver.close()


async def test_lookups_in_flight_are_bounded(stub: StubDNS) -> None:
    names = [f"h{i}.test" for i in range(8)]
    stub.hold(*names)
    resolver = Resolver([stub.nameserver], max_in_flight=3, timeout=30)

    def asked() -> list[str]:
        return list(dict.fromkeys(n for n, _ in stub.queries if n in names))

    def reached(count: int) -> bool:
        return len(asked()) >= count

    peak = 0
    try:
        lookups = [asyncio.create_task(resolve(resolver, name)) for name in names]
        for released in range(len(names)):
            expected = min(released + 3, len(names))
            await asyncio.wait_for(stub.until(functools.partial(reached, expected)), 10)
            peak = max(peak, len(asked()) - released)
            stub.release(asked()[released])  # the oldest question held
        results = await asyncio.gather(*lookups)
    finally:
        await resolver.close()
    assert peak == 3
    assert results == [[f"127.0.0.{i + 1}"] for i in range(8)]


async def test_a_server_that_never_answers_is_a_dns_failure_at_the_deadline(
    stub: StubDNS,
) -> None:
    stub.hold("slow.test")  # never released
    resolver = Resolver([stub.nameserver], timeout=0.2)
    try:
        with pytest.raises(DNSError) as caught:
            await resolve(resolver, "slow.test")
    finally:
        await resolver.close()
    assert str(caught.value) == f"no answer from DNS server {stub.nameserver} within 0.2 s"


async def test_the_cache_is_bounded_least_recently_used_first(stub: StubDNS) -> None:
    resolver = Resolver([stub.nameserver], max_names=5)
    try:
        for i in range(10):
            await resolve(resolver, f"n{i}.test")
            await resolve(resolver, "n0.test")  # kept: used every time
        assert resolver.cached_names == 5
        await resolve(resolver, "n0.test")
        await resolve(resolver, "n9.test")
        assert resolver.stats.queries == 10  # both kept
        await resolve(resolver, "n1.test")  # dropped long ago
        assert resolver.stats.queries == 11
        if IN_USE["dns_cache"]:
            assert (stub.count("n0.test"), stub.count("n9.test")) == (1, 1)
            assert stub.count("n1.test") == 2
    finally:
        await resolver.close()


async def test_without_the_private_switch_the_resolver_still_works(
    stub: StubDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dns_module, "without_query_cache", lambda channel: False)
    resolver = Resolver([stub.nameserver])
    try:
        assert await resolve(resolver, "t.test") == ["127.0.0.1"]
        assert not resolver.query_cache_off
    finally:
        await resolver.close()


def test_the_private_switch_refuses_what_it_does_not_know() -> None:
    assert internals.without_query_cache(object()) is False  # type: ignore[arg-type]


@pytest.mark.usefixtures("transport")
async def test_dns_failures_are_dns_records_and_the_run_goes_on(
    stub: StubDNS, server: DemoServer
) -> None:
    port = server.url.rsplit(":", 1)[1]
    urls = [f"http://{name}:{port}/items/1" for name in ("nx.test", "a.test", "fail.test")]
    urls.append(f"http://slow.test:{port}/items/2")
    stub.hold("slow.test")
    timeouts = Timeouts(dns=0.3)
    async with Fetcher(nameservers=[stub.nameserver], retry=ONCE, timeouts=timeouts) as fetcher:
        nx, ok, fail, slow = await fetcher.gather(urls)
    assert ok.ok, ok.error
    for result, message in (
        (nx, "NXDOMAIN for nx.test"),
        (fail, "SERVFAIL for fail.test"),
        (slow, f"no answer from DNS server {stub.nameserver} within 0.3 s"),
    ):
        assert result.error is not None
        assert result.error.kind is ErrorKind.DNS
        assert result.error.message == message


@pytest.mark.usefixtures("transport")
async def test_a_proxy_named_by_a_name_is_resolved_with_the_dns_servers(
    stub: StubDNS, server: DemoServer
) -> None:
    """With a proxy, the name resolved is the proxy's (the proxy resolves the
    target's); a proxy whose name does not resolve is a ``proxy`` record."""
    from tests.forward_proxy import forward_proxy

    url = f"{server.url}/items/1"
    async with forward_proxy() as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        for name in ("t.test", "nx.test"):
            given = f"http://{name}:{port}"
            async with Fetcher(nameservers=[stub.nameserver], proxy=given, retry=ONCE) as fetcher:
                (result,) = await fetcher.gather([url])
            if name == "t.test":
                assert result.ok, result.error
                assert [seen.target for seen in proxy.seen] == [url]
            else:
                assert result.error is not None
                assert result.error.kind is ErrorKind.PROXY, result.error
                assert (
                    result.error.message
                    == f"cannot connect to the proxy {given}: NXDOMAIN for nx.test"
                )
    assert stub.count("t.test") >= 1
    assert len(proxy.seen) == 1


@pytest.mark.usefixtures("transport")
async def test_robots_txt_is_resolved_with_the_dns_servers_too(
    stub: StubDNS, server: DemoServer
) -> None:
    """robots.txt (a 404 here: all allowed) is asked for on the name the DNS
    servers resolve; a name they alone know would otherwise leave no rules,
    which disallows the host."""
    port = server.url.rsplit(":", 1)[1]
    async with Fetcher(nameservers=[stub.nameserver], robots=True, retry=ONCE) as fetcher:
        (result,) = await fetcher.gather([f"http://t.test:{port}/items/1"])
    assert result.ok, result.error
    assert "/robots.txt" in [path for _, path, _ in server.stats.seen]


@pytest.mark.usefixtures("transport")
async def test_the_guard_still_sees_every_address(stub: StubDNS, server: DemoServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    async with Fetcher(nameservers=[stub.nameserver], deny_private=True, retry=ONCE) as fetcher:
        for _ in range(2):  # the second from the cache
            (result,) = await fetcher.gather([f"http://a.test:{port}/items/1"])
            assert result.error is not None
            assert result.error.kind is ErrorKind.DENIED
    assert stub.count("a.test") >= 1
    assert server.stats.seen == []


def test_dns_timeout_is_at_most_the_connect_timeout() -> None:
    assert dns_deadline(Timeouts()) == 5.0
    assert dns_deadline(Timeouts(connect=2, dns=5)) == 2
    assert dns_deadline(Timeouts(connect=10, dns=5, total=1)) == 1
    assert dns_deadline(Timeouts(connect=None, dns=None, total=None)) is None
    with pytest.raises(ConfigError):
        Timeouts(dns=0)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("::1", "::1"),
        ("[::1]:53", "[::1]:53"),
    ],
)
def test_nameservers_are_ip_or_ip_and_port(text: str, parsed: str) -> None:
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""])
def test_bad_nameservers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|bad port"):
        parse_nameserver(text)
    with pytest.raises(ConfigError):
        Fetcher(nameservers=[text])


@pytest.fixture
def stub_thread() -> Iterator[StubDNS]:
    with in_thread(lambda: StubDNS(ZONE)) as running:
        yield running


@pytest.fixture
def demo_thread() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_dns_server_option_end_to_end(
    stub_thread: StubDNS, demo_thread: ServerThread, tmp_path: Path, command: str, transport: str
) -> None:
    port = demo_thread.url.rsplit(":", 1)[1]
    urls = [f"http://a.test:{port}/items/1", f"http://nx.test:{port}/items/2"]
    options = ["--dns-server", stub_thread.nameserver, "--dns-timeout", "2s", "--retries", "0"]
    out = tmp_path / "out.jsonl"
    if command == "fetch":
        stats = tmp_path / "stats.json"
        args = ["fetch", *urls, *options, "--ordered", "-o", str(out), "--stats-json", str(stats)]
    else:
        args = ["aggregate", *urls, *options, "-q", "-f", "id"]
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    assert stub_thread.count("a.test") >= 1
    if command == "fetch":
        ok, nx = [json.loads(line) for line in out.read_text().splitlines()]
        assert ok["ok"] is True
        assert nx["error"] == {
            "kind": "dns",
            "message": "NXDOMAIN for nx.test",
            # the exception: aiohttp's around fanout's resolver's, or the resolver's
            "cause": "ClientConnectorDNSError" if transport == "aiohttp" else "DNSError",
        }
        dns = json.loads(stats.read_text())["dns"]
        assert dns["lookups"] == 2
        assert dns["failures"] == 1
        assert "  dns:     2 lookups: " in result.output  # the summary's line
    else:
        assert "NXDOMAIN for nx.test" in result.output
    assert stub_thread.count("nx.test") >= 1


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:99999"])
def test_a_bad_dns_server_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "http://127.0.0.1:9/", "--dns-server", value])
    captured = capsys.readouterr()
    assert exited.value.code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert "--dns-server" in lines[0]


@pytest.mark.usefixtures("transport")
async def test_names_whose_server_never_answers_do_not_get_another_host_skipped(
    stub: StubDNS, server: DemoServer
) -> None:
    """Many lookups of names whose DNS server is silent (a dead domain in a
    crawl) hold the resolver's lookups in flight until their deadline. A
    request to a healthy host then waited behind them for a lookup slot,
    failed its connect deadline before its name was even asked, and, counted
    as a connection failure, got the healthy host skipped (host_down)."""
    port = server.url.rsplit(":", 1)[1]
    silent = [f"silent{i}.test" for i in range(70)]
    stub.hold(*silent)  # never released
    urls = [f"http://{name}:{port}/items/1" for name in silent]
    urls += [f"http://a.test:{port}/items/{i}" for i in range(1, 7)]
    timeouts = Timeouts(dns=0.5, connect=0.9)
    limits = Limits(concurrency=80, per_host=8)
    async with Fetcher(
        nameservers=[stub.nameserver], retry=ONCE, timeouts=timeouts, limits=limits
    ) as fetcher:
        results = await fetcher.gather(urls)
    for result in results[len(silent) :]:
        assert result.ok, result.error
    for result in results[: len(silent)]:  # each at its own DNS deadline, saying so
        assert result.error is not None
        assert result.error.kind is ErrorKind.DNS


async def test_the_addresses_kept_for_a_name_are_bounded(stub: StubDNS) -> None:
    """A DNS server chooses how many addresses a name has: 2,000 in one answer
    (c-ares takes a large datagram) were all kept, so the cache's bound on
    names did not bound its memory (10,000 such names: gigabytes), and every
    lookup built a list of 2,000 for aiohttp to try in turn."""
    resolver = Resolver([stub.nameserver])
    try:
        addresses = await resolve(resolver, "many.test")
        again = await resolve(resolver, "many.test")  # from the cache
    finally:
        await resolver.close()
    assert 1 <= len(addresses) <= dns_module.MAX_ADDRESSES
    assert again == addresses
    assert all(address.startswith("127.0.") for address in addresses)
