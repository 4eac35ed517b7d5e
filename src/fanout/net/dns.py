"""fanout's DNS resolver: c-ares (pycares) behind a cache that honours TTLs.

One :class:`Resolver` serves a run. A name is looked up with c-ares's
``getaddrinfo`` (so ``/etc/hosts`` and the system's search rules apply as
they do for other programs), and its answer is kept for the record's TTL,
clamped to ``[min_ttl, max_ttl]``; an answer with a TTL of 0 (as an
``/etc/hosts`` entry has) is not kept. Names that do not exist (NXDOMAIN)
or have no address (NODATA) are remembered ``negative_ttl`` seconds, other
failures (SERVFAIL, no answer in time, ...) ``failure_ttl`` seconds. The cache
holds at most ``max_names`` names, the least recently used dropped first.

Lookups of a name already being looked up wait for that one (one query,
many waiters); at most ``max_in_flight`` lookups run at once; each has its
own deadline, so a DNS server that never answers fails a request after
``timeout`` seconds instead of holding it.

A failure raises :class:`DNSError` (an OSError, which aiohttp wraps in
``ClientConnectorDNSError``) whose message is the reason, e.g.
``NXDOMAIN for nx.example`` or ``no answer from DNS server 10.0.0.2:53 within 5 s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pycares
from aiohttp.abc import AbstractResolver, ResolveResult

from fanout.net.aiohttp_internals import without_query_cache
from fanout.net.transport import DNSError

__all__ = ["DNSError", "DNSStats", "Resolver"]

_FLAGS: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
# c-ares's getaddrinfo reports NXDOMAIN as ENOTFOUND and NODATA as ENODATA.
_NEGATIVE: Final = frozenset({pycares.errno.ARES_ENOTFOUND, pycares.errno.ARES_ENODATA})
_CLOSED: Final = frozenset({pycares.errno.ARES_ECANCELLED, pycares.errno.ARES_EDESTRUCTION})
MAX_ADDRESSES: Final = 16
"""Addresses kept for a name, of each family, the first of its answer: a DNS
server chooses how many it gives (thousands fit in one large datagram), and
aiohttp tries them one after another, so more would only cost memory in the
cache."""


@dataclass(slots=True)
class DNSStats:
    """What a :class:`Resolver` did: ``lookups`` asked of it, answered from its
    ``cache_hits`` (answers and remembered failures), by waiting for the same
    name's lookup in flight (``coalesced``), or by ``queries`` to the DNS
    servers (a c-ares lookup: one question per address family); ``failures``
    among the lookups."""

    lookups: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    queries: int = 0
    failures: int = 0


@dataclass(slots=True)
class _Entry:
    expires: float
    addresses: tuple[tuple[int, str], ...]
    error: DNSError | None


class Resolver(AbstractResolver):
    """An aiohttp resolver on c-ares with a bounded TTL cache (see the module).

    ``nameservers`` ("IP" or "IP:PORT") replace the system's servers;
    ``timeout`` is the deadline of one lookup in seconds (None: c-ares's own
    timeouts only). ``clock`` (seconds, monotonic) is for tests. The c-ares
    channel, a thread and a few file descriptors, is made on the first lookup.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        timeout: float | None = 5.0,
        min_ttl: float = 5.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        failure_ttl: float = 5.0,
        max_names: int = 10_000,
        max_in_flight: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nameservers = None if nameservers is None else list(nameservers)
        self._timeout = timeout
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._failure_ttl = failure_ttl
        self._max_names = max_names
        self._clock = clock
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._pending: dict[tuple[str, int], asyncio.Task[tuple[tuple[int, str], ...]]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._channel: pycares.Channel | None = None
        self._servers = ""
        self._closed = False
        self.stats = DNSStats()

    @property
    def cached_names(self) -> int:
        """Entries in the cache (answers and remembered failures)."""
        return len(self._cache)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host`` (of ``family``; AF_UNSPEC for both), or
        :class:`DNSError`."""
        stats = self.stats
        stats.lookups += 1
        key = (host.lower(), int(family))
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > self._clock():
                self._cache.move_to_end(key)
                stats.cache_hits += 1
                if entry.error is not None:
                    stats.failures += 1
                    raise DNSError(entry.error.message, negative=entry.error.negative)
                return _results(host, port, entry.addresses)
            del self._cache[key]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(key))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        else:
            stats.coalesced += 1
        try:
            # Shielded: a request cancelled while it waits leaves the lookup to the others.
            addresses = await asyncio.shield(task)
        except DNSError as exc:
            stats.failures += 1
            raise DNSError(exc.message, negative=exc.negative) from None  # one per waiter
        return _results(host, port, addresses)

    def _done(self, key: tuple[str, int], task: asyncio.Task[Any]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _lookup(self, key: tuple[str, int]) -> tuple[tuple[int, str], ...]:
        name, family = key
        async with self._slots:
            self.stats.queries += 1
            try:
                ttl, addresses = await self._ask(name, family)
            except DNSError as exc:
                if not self._closed:
                    self._remember(key, _Entry(self._clock() + self._kept_for(exc), (), exc))
                raise
        if ttl > 0:
            ttl = min(max(ttl, self._min_ttl), self._max_ttl)
            self._remember(key, _Entry(self._clock() + ttl, addresses, None))
        return addresses

    def _remember(self, key: tuple[str, int], entry: _Entry) -> None:
        cache = self._cache
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self._max_names:
            cache.popitem(last=False)

    async def _ask(self, name: str, family: int) -> tuple[float, tuple[tuple[int, str], ...]]:
        """One c-ares getaddrinfo: the smallest TTL of the answer and its addresses."""
        if self._closed:
            raise DNSError(f"resolver closed before looking up {name}")
        channel = self._channel or self._open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int | None]] = loop.create_future()

        def settle(result: Any, errno: int | None) -> None:
            if not future.done():
                future.set_result((result, errno))

        def callback(result: Any, errno: int | None) -> None:  # on c-ares's thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle, result, errno)

        try:
            channel.getaddrinfo(
                name,
                None,
                family=socket.AddressFamily(family),
                type=socket.SOCK_STREAM,
                callback=callback,
            )
        except (pycares.AresError, UnicodeError, ValueError) as exc:
            raise DNSError(f"cannot look up {name!r}: {exc}") from None
        try:
            async with asyncio.timeout(self._timeout):
                result, errno = await future
        except TimeoutError:
            raise DNSError(self._silent()) from None
        if errno is not None:
            raise DNSError(self._reason(name, errno), negative=errno in _NEGATIVE)
        seen: dict[tuple[int, str], None] = {}
        kept: dict[int, int] = {}  # addresses of each family
        ttl = math.inf
        for node in result.nodes:
            if kept.get(node.family, 0) >= MAX_ADDRESSES:
                continue
            kept[node.family] = kept.get(node.family, 0) + 1
            address = node.addr[0]
            text = address.decode() if isinstance(address, bytes) else str(address)
            if node.family == socket.AF_INET6 and len(node.addr) > 3 and node.addr[3]:
                text = f"{text}%{node.addr[3]}"  # the scope of a link-local address
            seen[int(node.family), text] = None
            ttl = min(ttl, node.ttl)
        if not seen:
            raise DNSError(f"no address for {name} (NODATA)", negative=True)
        return ttl, tuple(seen)

    def _silent(self) -> str:
        servers = self._servers or "of the system"
        return f"no answer from DNS server {servers} within {self._timeout:g} s"

    def _reason(self, name: str, errno: int) -> str:
        e = pycares.errno
        if errno == e.ARES_ENOTFOUND:
            return f"NXDOMAIN for {name}"
        if errno == e.ARES_ENODATA:
            return f"no address for {name} (NODATA)"
        if errno == e.ARES_ESERVFAIL:
            return f"SERVFAIL for {name}"
        if errno == e.ARES_EREFUSED:
            return f"REFUSED for {name} by DNS server {self._servers}"
        if errno == e.ARES_ETIMEOUT:
            return self._silent()
        if errno == e.ARES_ECONNREFUSED:
            return f"cannot reach DNS server {self._servers} (connection refused) for {name}"
        if errno in _CLOSED:
            return f"resolver closed while looking up {name}"
        reason: str | bytes = pycares.errno.strerror(errno)
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
        return f"{text} for {name}"

    def _open(self) -> pycares.Channel:
        options: dict[str, Any] = {}
        if self._timeout is not None:
            # Two tries within the deadline, so one lost datagram is not a failure.
            options.update(timeout=self._timeout / 2, tries=2)
        try:
            channel = pycares.Channel(servers=self._nameservers, **options)
        except pycares.AresError as exc:
            raise DNSError(f"cannot start the DNS resolver: {exc}") from None
        self.query_cache_off = without_query_cache(channel)
        self._servers = ", ".join(channel.servers)
        self._channel = channel
        return channel

    async def close(self) -> None:
        """Stop: lookups in flight fail, the c-ares channel is released."""
        self._closed = True
        for task in list(self._pending.values()):
            task.cancel()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _kept_for(self, exc: DNSError) -> float:
        """How long a failure is remembered: negative answers longer than the rest."""
        return self._negative_ttl if exc.negative else self._failure_ttl

    query_cache_off: bool = False
    """Whether c-ares's own query cache is off (see
    :func:`fanout.net.aiohttp_internals.without_query_cache`)."""


def _results(host: str, port: int, addresses: tuple[tuple[int, str], ...]) -> list[ResolveResult]:
    return [
        {
            "hostname": host,
            "host": address,
            "port": port,
            "family": family,
            "proto": 0,
            "flags": _FLAGS,
        }
        for family, address in addresses
    ]
