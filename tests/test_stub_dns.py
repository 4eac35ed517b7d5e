"""The stub DNS server, asked through c-ares (aiodns, and aiohttp's AsyncResolver),
the resolver fanout uses."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiodns
import aiohttp
import pycares
import pytest

from tests.stub_dns import Name, StubDNS


@pytest.fixture
async def dns() -> AsyncIterator[StubDNS]:
    async with StubDNS() as running:
        yield running


def resolver(dns: StubDNS) -> aiodns.DNSResolver:
    # c-ares takes "127.0.0.1:PORT" as a nameserver; one try, soon over, if it did not.
    return aiodns.DNSResolver(nameservers=[dns.nameserver], timeout=2, tries=1)


async def addresses(dns: StubDNS, name: str, qtype: str) -> list[tuple[str, int]]:
    result = await resolver(dns).query_dns(name, qtype)
    found = []
    for record in result.answer:
        assert isinstance(record.data, pycares.ARecordData | pycares.AAAARecordData)
        found.append((record.data.addr, record.ttl))
    return found


async def test_fixed_names_answer_with_their_addresses_and_ttl(dns: StubDNS) -> None:
    assert await addresses(dns, "a.test", "A") == [("127.0.0.1", 60)]
    assert await addresses(dns, "b.test", "A") == [("127.0.0.2", 60)]
    assert await addresses(dns, "six.test", "AAAA") == [("::1", 60)]
    assert await addresses(dns, "A.TEST.", "A") == [("127.0.0.1", 60)]  # any case, rooted
    with pytest.raises(aiodns.error.DNSError) as caught:  # NOERROR with no answer
        await addresses(dns, "six.test", "A")
    assert caught.value.args[0] == aiodns.error.ARES_ENODATA
    assert ("a.test", "A") in dns.queries
    assert ("six.test", "AAAA") in dns.queries


async def test_unknown_names_are_nxdomain_and_never_forwarded(dns: StubDNS) -> None:
    for name in ("nx.test", "example.com"):
        with pytest.raises(aiodns.error.DNSError) as caught:
            await resolver(dns).query_dns(name, "A")
        assert caught.value.args[0] == aiodns.error.ARES_ENOTFOUND
    assert [name for name, _ in dns.queries] == ["nx.test", "example.com"]


async def test_rebind_answers_public_first_then_loopback(dns: StubDNS) -> None:
    """Resolved only, never connected to: its first answer is a public address."""
    first = await addresses(dns, "rebind.test", "A")
    second = await addresses(dns, "rebind.test", "A")
    assert first == [("93.184.216.34", 0)]
    assert second == [("127.0.0.1", 0)]


async def test_a_zone_and_ttl_of_ones_own() -> None:
    zone = {"both.test": Name.fixed("127.0.0.3", "::1", ttl=7)}
    async with StubDNS(zone) as dns:
        assert await addresses(dns, "both.test", "A") == [("127.0.0.3", 7)]
        assert await addresses(dns, "both.test", "AAAA") == [("::1", 7)]
        with pytest.raises(aiodns.error.DNSError):
            await addresses(dns, "a.test", "A")  # not in this zone


async def test_aiohttp_async_resolver_takes_the_stub_with_its_port(dns: StubDNS) -> None:
    """What fanout's session is built on: aiohttp's AsyncResolver(nameservers=[...])."""
    async_resolver = aiohttp.AsyncResolver(nameservers=[dns.nameserver], timeout=2, tries=1)
    try:
        (v4,) = await async_resolver.resolve("b.test", 8080, socket.AF_INET)
        (v6,) = await async_resolver.resolve("six.test", 8080, socket.AF_INET6)
        with pytest.raises(OSError, match="not found"):
            await async_resolver.resolve("nx.test", 8080, socket.AF_INET)
    finally:
        await async_resolver.close()
    assert (v4["host"], v4["port"]) == ("127.0.0.2", 8080)
    assert (v6["host"], v6["port"]) == ("::1", 8080)


def test_garbage_and_replies_get_no_answer() -> None:
    stub = StubDNS()
    assert stub.answer(b"\x00\x01garbage") is None
    assert stub.answer(b"") is None
    assert stub.queries == []
