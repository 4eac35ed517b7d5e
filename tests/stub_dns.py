"""A stub DNS server for tests: fixed names on 127.0.0.1, over UDP, never forwarding.

Point a resolver at :attr:`StubDNS.nameserver` (``"127.0.0.1:PORT"``; c-ares,
so aiodns and aiohttp's ``AsyncResolver(nameservers=[...])``, accept the
port). Every name not in the zone is NXDOMAIN: nothing is ever asked of
another server. Packets are encoded and decoded with dnslib.

The default zone (:data:`DEFAULT_ZONE`)::

    a.test       A     127.0.0.1
    b.test       A     127.0.0.2
    six.test     AAAA  ::1
    rebind.test  A     93.184.216.34 on the first query, 127.0.0.1 after (TTL 0)
    fail.test    SERVFAIL
    nx.test      NXDOMAIN (as any other name)

A zone may also hold names with other TTLs (``Name.fixed(..., ttl=0)``) and
names that fail (``Name.failing("SERVFAIL")``). :meth:`StubDNS.hold` keeps the
replies for a name until :meth:`StubDNS.release` (never, for a server that
does not answer); :meth:`StubDNS.count` counts the questions about a name, and
:meth:`StubDNS.until` waits for a condition on them.

``rebind.test`` models DNS rebinding: a check that resolves the name sees a
public address, the connection made a moment later would go to loopback.
Its first answer is a real public address: never let a client connect with
it (use it only where the client is expected to refuse, or to resolve
without connecting).

>>> async def example() -> None:  # doctest: +SKIP
...     async with StubDNS() as dns:
...         resolver = aiohttp.AsyncResolver(nameservers=[dns.nameserver])
...         await resolver.resolve("a.test", 80)  # 127.0.0.1

For code that runs its own event loop, serve it in a thread:
``with tests.background.in_thread(StubDNS) as dns: ...``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Self, cast

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

__all__ = ["DEFAULT_ZONE", "Name", "StubDNS"]


@dataclass(frozen=True, slots=True)
class Name:
    """The answers of one name: ``rounds[n]`` holds the addresses (IPv4 and
    IPv6 mixed) given to the n-th query of a type, the last round repeating;
    ``ttl`` is the TTL of every answer."""

    rounds: tuple[tuple[str, ...], ...]
    ttl: int = 60
    rcode: str | None = None

    @classmethod
    def fixed(cls, *addresses: str, ttl: int = 60) -> Name:
        """A name that always resolves to ``addresses``."""
        return cls((addresses,), ttl)

    @classmethod
    def failing(cls, rcode: str) -> Name:
        """A name whose every query is answered with ``rcode`` (e.g. "SERVFAIL", "REFUSED")."""
        return cls(((),), 60, rcode)

    def answers(self, query: int, family: int) -> list[str]:
        """The addresses of IP ``family`` (4 or 6) for the ``query``-th query (from 0)."""
        chosen = self.rounds[min(query, len(self.rounds) - 1)]
        return [a for a in chosen if ipaddress.ip_address(a).version == family]


DEFAULT_ZONE: Mapping[str, Name] = MappingProxyType(
    {
        "a.test": Name.fixed("127.0.0.1"),
        "b.test": Name.fixed("127.0.0.2"),
        "six.test": Name.fixed("::1"),
        "rebind.test": Name((("93.184.216.34",), ("127.0.0.1",)), ttl=0),
        "fail.test": Name.failing("SERVFAIL"),
    }
)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stub: StubDNS) -> None:
        self._stub = stub
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._stub.answer(data)
        if reply is not None and self._transport is not None:
            name, packet = reply
            if name in self._stub.held:
                self._stub.held[name].append((packet, addr))
            else:
                self._transport.sendto(packet, addr)
        self._stub.notify()

    def send(self, packet: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is not None:
            self._transport.sendto(packet, addr)


class StubDNS:
    """The stub server on 127.0.0.1 (an async context manager). ``queries``
    lists every question received, as ``(name, type)``, e.g. ``("a.test", "A")``."""

    def __init__(self, zone: Mapping[str, Name] = DEFAULT_ZONE) -> None:
        self.zone = {name.lower().rstrip("."): entry for name, entry in zone.items()}
        self.queries: list[tuple[str, str]] = []
        self._asked: dict[tuple[str, str], int] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.held: dict[str, list[tuple[bytes, tuple[str | int, ...]]]] = {}
        self.port = 0

    def count(self, name: str) -> int:
        """Questions received about ``name`` (of any type)."""
        return sum(1 for asked, _ in self.queries if asked == name)

    def hold(self, *names: str) -> None:
        """Keep the replies for ``names`` until :meth:`release`."""
        for name in names:
            self.held.setdefault(name, [])

    def release(self, name: str) -> None:
        """Send the replies kept for ``name``, and answer it at once from now on."""
        for packet, addr in self.held.pop(name, []):
            if self._protocol is not None:
                self._protocol.send(packet, addr)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked at each question received."""
        while not condition():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    @property
    def nameserver(self) -> str:
        """``"127.0.0.1:PORT"``, as resolvers take it."""
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self._protocol = protocol
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.close()

    def answer(self, packet: bytes) -> tuple[str, bytes] | None:
        """The name asked and the reply to one query packet (None for a packet
        that is not a query)."""
        try:
            query = DNSRecord.parse(packet)
        except Exception:  # dnslib raises several kinds on garbage: drop the packet
            return None
        if query.header.qr or not query.questions:
            return None
        reply = query.reply()
        question = query.q
        name = str(question.qname).lower().rstrip(".")
        qtype = QTYPE.get(question.qtype, str(question.qtype))
        self.queries.append((name, qtype))
        entry = self.zone.get(name)
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return name, bytes(reply.pack())
        if entry.rcode is not None:
            reply.header.rcode = getattr(RCODE, entry.rcode)
            return name, bytes(reply.pack())
        asked = self._asked.get((name, qtype), 0)
        self._asked[name, qtype] = asked + 1
        for address in self._addresses(entry, asked, qtype):
            rdata = A(address) if ":" not in address else AAAA(address)
            rtype = QTYPE.A if ":" not in address else QTYPE.AAAA
            reply.add_answer(RR(question.qname, rtype, rdata=rdata, ttl=entry.ttl))
        return name, bytes(reply.pack())

    @staticmethod
    def _addresses(entry: Name, asked: int, qtype: str) -> Sequence[str]:
        if qtype == "A":
            return entry.answers(asked, 4)
        if qtype == "AAAA":
            return entry.answers(asked, 6)
        return ()  # other types: no data (NOERROR, empty answer)
