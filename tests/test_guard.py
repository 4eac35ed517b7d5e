"""The guard for services: deny_private, allow_hosts and deny_hosts refuse before
anything is sent, on the addresses actually connected to, at every hop, on both
transports (aiohttp: in its resolver; curl: in libcurl's socket opener)."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import pytest
from yarl import URL

from fanout import ConfigError, ErrorKind, Fetcher, RetryPolicy
from fanout.demo import DemoServer
from fanout.net.guard import HostGuard

from .stub_dns import Name, StubDNS


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.9.9.9", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
     "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "fe80::1", "fc00::1", "240.0.0.1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "192.0.2.1"],
)  # fmt: skip
def test_private_addresses_are_refused(address: str) -> None:
    guard = HostGuard(deny_private=True)
    reason = guard.check_address("h.example", address)
    assert reason is not None
    assert "deny_private" in reason
    assert HostGuard().check_address("h.example", address) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert HostGuard(deny_private=True).check_address("h.example", address) is None


def test_patterns_of_names_and_networks() -> None:
    guard = HostGuard(allow_hosts=["*.example.com", "10.0.0.0/8"], deny_hosts=["bad.example.com"])
    assert guard.check_host("api.example.com") is None
    assert guard.check_host("API.Example.COM.") is None
    assert guard.check_host("bad.example.com") is not None
    assert guard.check_host("10.2.3.4") is None
    assert guard.check_host("11.2.3.4") is not None
    # A name outside the name patterns is checked on its addresses, after DNS.
    assert guard.check_host("other.test") is None
    assert guard.check_address("other.test", "10.9.9.9") is None
    assert guard.check_address("other.test", "11.9.9.9") is not None
    names_only = HostGuard(allow_hosts=["*.example.com"])
    assert names_only.check_host("other.test") is not None  # refused before DNS
    deny_net = HostGuard(deny_hosts=["192.168.0.0/16"])
    assert deny_net.check_address("nas.test", "192.168.1.20") is not None
    assert deny_net.check_address("nas.test", "192.169.1.20") is None


@pytest.mark.parametrize("patterns", [["http://x/"], [""], ["a b"], "*.example.com", [3]])
def test_bad_patterns_are_config_errors(patterns: object) -> None:
    with pytest.raises(ConfigError):
        HostGuard(deny_hosts=patterns)  # type: ignore[arg-type]


@pytest.mark.usefixtures("transport")
async def test_deny_private_refuses_loopback_without_connecting(servers: DemoServer) -> None:
    urls = [f"{base}/items/1" for base in servers.urls]
    async with Fetcher(deny_private=True) as fetcher:
        results = await fetcher.gather(urls)
    for result in results:
        assert result.error is not None
        assert result.error.kind is ErrorKind.DENIED
        assert "loopback" in result.error.message
        assert result.attempts == 0
    assert servers.stats.seen == []
    async with Fetcher() as fetcher:  # the guard off: the same URLs are fetched
        assert all(r.ok for r in await fetcher.gather(urls))


@pytest.mark.usefixtures("transport")
async def test_deny_private_checks_resolved_addresses(server: DemoServer) -> None:
    # "localhost" is a name: only its address, from the resolver, says it is loopback.
    url = server.url.replace("127.0.0.1", "localhost") + "/items/1"
    async with Fetcher(deny_private=True) as fetcher:
        (result,) = await fetcher.gather([url])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DENIED, result.error
    assert result.error.message.startswith("localhost has no address allowed: ")
    assert "is a loopback address" in result.error.message
    assert server.stats.seen == []


@pytest.mark.usefixtures("transport")
async def test_redirect_hops_are_guarded(servers: DemoServer) -> None:
    a, b, _ = servers.urls
    url = f"{a}/redirect-to?url={quote(b + '/items/1', safe='')}"
    host_b = b.split("://", 1)[1].rsplit(":", 1)[0]
    for guard in ({"deny_hosts": [host_b]}, {"allow_hosts": ["127.0.0.1"]}):
        async with Fetcher(**guard) as fetcher:  # type: ignore[arg-type]
            (result,) = await fetcher.gather([url])
        assert result.error is not None
        assert result.error.kind is ErrorKind.DENIED
        assert result.status == 302
    assert not [seen for seen in servers.stats.seen if seen[0].startswith(host_b)]


@pytest.mark.usefixtures("transport")
async def test_a_redirect_to_a_name_of_a_refused_address_is_refused_at_that_hop(
    servers: DemoServer,
) -> None:
    """The first hop's address is allowed; the second names the loopback
    server by a name ("localhost", resolved without DNS) whose every address
    is refused: only the address connected to can tell."""
    _, b, _ = servers.urls
    target = f"http://localhost:{URL(b).port}/items/1"
    url = f"{b}/redirect-to?url={quote(target, safe='')}"
    async with Fetcher(deny_hosts=["127.0.0.1/32", "::1/128"]) as fetcher:
        (result,) = await fetcher.gather([url])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DENIED, result.error
    assert result.error.message.startswith("localhost has no address allowed: ")
    assert [seen[0].startswith("127.0.0.2") for seen in servers.stats.seen] == [True]


@pytest.mark.usefixtures("transport")
async def test_a_name_is_connected_to_on_its_allowed_address_only(server: DemoServer) -> None:
    # "localhost" is ::1 and 127.0.0.1; the demo server listens on 127.0.0.1 only.
    url = server.url.replace("127.0.0.1", "localhost") + "/items/1"
    async with Fetcher(deny_hosts=["::1/128"]) as fetcher:
        (result,) = await fetcher.gather([url])
    assert result.ok, result.error
    async with Fetcher(deny_hosts=["127.0.0.0/8"], retry=RetryPolicy(attempts=1)) as fetcher:
        (result,) = await fetcher.gather([url])
    assert result.error is not None
    # ::1 allowed and tried: nothing listens there, a failed connection, not a refusal
    assert result.error.kind is ErrorKind.CONNECT, result.error


def _fanout(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args], capture_output=True, timeout=120, check=False
    )


@pytest.mark.usefixtures("transport")
def test_the_command_line_guard(server_thread: str) -> None:
    url = f"{server_thread}/items/1"
    refused = _fanout("fetch", "--deny-private", "-q", url)
    assert refused.returncode == 1
    (record,) = (json.loads(line) for line in refused.stdout.splitlines())
    assert record["error"]["kind"] == "denied"
    allowed = _fanout("fetch", "--allow-host", "127.0.0.0/8", "-q", url)
    assert allowed.returncode == 0, allowed.stderr
    denied = _fanout("aggregate", "--deny-host", "127.0.0.1", "-q", url)
    assert b"Traceback" not in denied.stderr
    assert b"denied" in denied.stdout
    bad = _fanout("fetch", "--deny-host", "http://x/", url)
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"fanout: error: ")
    assert bad.stderr.count(b"\n") == 1


@pytest.mark.usefixtures("transport")
async def test_the_guard_judges_each_resolution_not_the_name() -> None:
    # A name whose address changes between lookups (DNS rebinding): what is
    # checked is the address each connection would use, from that lookup.
    zone = {"moving.test": Name((("127.0.0.2",), ("127.0.0.1",)), ttl=0)}
    async with StubDNS(zone) as dns, DemoServer("127.0.0.2") as server:
        url = f"http://moving.test:{URL(server.url).port}/items/1"
        guard = {"allow_hosts": ["127.0.0.2"], "nameservers": [dns.nameserver]}
        async with Fetcher(**guard) as fetcher:  # type: ignore[arg-type]
            (first,) = await fetcher.gather([url])
        async with Fetcher(**guard) as fetcher:  # type: ignore[arg-type]
            (second,) = await fetcher.gather([url])
    assert first.ok, first.error
    assert second.error is not None
    assert second.error.kind is ErrorKind.DENIED  # refused, not a failed connection
    assert "127.0.0.1" in second.error.message
