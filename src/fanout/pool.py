"""The connection pool: sockets bounded by the concurrency, whatever the number of hosts.

aiohttp's ``TCPConnector`` bounds the connections in use (``limit``) but keeps
one idle keep-alive connection per host seen, until its keep-alive timeout:
a run over 5,000 hosts held about 5,000 sockets, and under ``ulimit -n 1024``
most of its requests failed with "Too many open files". :class:`_IdleCapped`
keeps at most :func:`idle_cap` idle connections in all, closing the least
recently used first, and counts the connections it is closing against the
limit, so that a run holds at most ``concurrency`` sockets in use or closing
plus ``idle_cap(concurrency)`` idle ones.

This is the only module that touches the connector's private internals
(:data:`PRIVATE_METHODS`, :data:`PRIVATE_ATTRIBUTES`). Where they are missing
or changed, :func:`make_connector` falls back to a connector that closes every
connection after its request (``force_close=True``): the same bound, without
keep-alive. tests/test_sockets.py checks that the names are still there.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from ssl import SSLContext
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_proto import ResponseHandler

__all__ = ["idle_cap", "make_connector", "private_hooks_missing"]

logger = logging.getLogger("fanout")

# aiohttp's private methods that _IdleCapped overrides or calls, with the
# parameters it relies on (written against aiohttp 3.14).
PRIVATE_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "_release": ("key", "protocol", "should_close"),
    "_available_connections": ("key",),
    "_release_waiter": (),
}
# Its private attributes, found on a connector once made: name, type. ``_conns``
# maps a connection key to a deque of (protocol, time released), oldest first.
PRIVATE_ATTRIBUTES: Final[dict[str, type]] = {"_conns": dict, "_acquired": set, "_closed": bool}


def idle_cap(concurrency: int) -> int:
    """The most idle keep-alive connections kept, over all hosts, for ``concurrency``.

    Half the concurrency keeps a connection for each of the hosts being fetched
    in a run whose hosts come back (an input sorted by host, or few hosts);
    the 8 keep a small run's connections."""
    return concurrency // 2 + 8


def private_hooks_missing(
    connector_class: type[aiohttp.TCPConnector] = aiohttp.TCPConnector,
) -> list[str]:
    """The private methods of ``connector_class`` that :class:`_IdleCapped` needs
    and does not find (or finds with other parameters); empty when all are there."""
    missing = []
    for name, parameters in PRIVATE_METHODS.items():
        method = getattr(connector_class, name, None)
        if not callable(method):
            missing.append(name)
            continue
        try:
            found = inspect.signature(method).parameters
        except (TypeError, ValueError):
            missing.append(name)
            continue
        if any(parameter not in found for parameter in parameters):
            missing.append(name)
    return missing


def _attributes_missing(connector: aiohttp.TCPConnector) -> list[str]:
    return [
        name
        for name, kind in PRIVATE_ATTRIBUTES.items()
        if not isinstance(getattr(connector, name, None), kind)
    ]


# aiohttp's own, called without super(): on CPython 3.11 super() makes an
# object at every call. None where missing (then _IdleCapped is not used).
_aiohttp_release: Any = getattr(aiohttp.TCPConnector, "_release", None)


def _released(item: tuple[Any, deque[tuple[ResponseHandler, float]]]) -> float:
    return item[1][0][1]  # when the oldest idle connection of a host was released


class _IdleCapped(aiohttp.TCPConnector):
    """aiohttp's connector with idle connections capped in total (least recently
    used closed first) and connections being closed counted against ``limit``.

    aiohttp keeps the idle connections of each host in a deque, oldest first,
    with the time each was released, and takes the oldest first: the least
    recently used connection of all is the first of one of the deques. There
    are at most ``idle_cap`` deques, so finding it costs little, and only a
    release past the cap looks for it: the hot path (a connection released
    to a host that has few) counts the deques and adds nothing else."""

    def __init__(self, *, idle_cap: int, **options: Any) -> None:
        super().__init__(**options)
        self._idle_cap = idle_cap
        self._closing: set[ResponseHandler] = set()

    @property
    def idle(self) -> int:
        """Idle keep-alive connections kept."""
        return sum(map(len, self._conns.values()))

    @property
    def closing(self) -> int:
        """Connections closed by this connector whose socket is not yet closed."""
        return len(self._closing)

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        transport = protocol.transport  # aiohttp forgets it when it closes the connection
        _aiohttp_release(self, key, protocol, should_close=should_close)
        pooled = self._conns
        kept = pooled.get(key)
        if kept and kept[-1][0] is protocol:
            cap = self._idle_cap
            if len(kept) > cap or (len(pooled) > 1 and sum(map(len, pooled.values())) > cap):
                self._evict()
        else:
            if transport is not None and (key.is_ssl or transport.get_write_buffer_size()):
                # Bytes of a request given up on that the peer has not read: the
                # socket would stay open, holding its slot, until it does (a peer
                # that never reads would hold it for good). They are dropped.
                # So is a TLS connection (see _evict).
                transport.abort()
            self._closed_by_us(protocol)

    def _available_connections(self, key: Any) -> int:
        available: int = super()._available_connections(key)
        return available - len(self._closing) if self._closing else available

    def _evict(self) -> None:
        """Close the least recently used idle connections past the cap."""
        pooled = self._conns
        excess = sum(map(len, pooled.values())) - self._idle_cap
        for _ in range(excess):
            key, kept = min(pooled.items(), key=_released)
            protocol, _ = kept.popleft()
            if not kept:
                del pooled[key]
            # A TLS connection closed gracefully waits for the peer's close_notify
            # (up to asyncio's 30 s), holding its slot: a silent peer would hold
            # one for each connection evicted. HTTP needs no close_notify.
            if key.is_ssl:
                protocol.abort()
            else:
                protocol.close()
            self._closed_by_us(protocol)

    def _closed_by_us(self, protocol: ResponseHandler) -> None:
        """Count ``protocol`` against the limit until its socket is closed."""
        closed = protocol.closed
        if closed is None or closed.done() or self._closed:
            return
        self._closing.add(protocol)
        closed.add_done_callback(lambda _: self._socket_closed(protocol))

    def _socket_closed(self, protocol: ResponseHandler) -> None:
        self._closing.discard(protocol)
        if not self._closed:
            self._release_waiter()  # a request may wait for the slot


def make_connector(
    *,
    concurrency: int,
    resolver: AbstractResolver,
    hooks_missing: Callable[[], list[str]] = private_hooks_missing,
    ssl: SSLContext | None = None,
) -> aiohttp.TCPConnector:
    """The connector of a run's session: at most ``concurrency`` connections in use
    or closing, at most :func:`idle_cap` idle ones, DNS through ``resolver``, TLS
    with ``ssl`` (None: aiohttp's default context).
    Falls back to a connector without keep-alive when aiohttp's internals are not
    the ones :class:`_IdleCapped` was written against."""
    options: dict[str, Any] = {
        "limit": concurrency,
        "limit_per_host": 0,  # fanout's own scheduler enforces per-host limits
        "use_dns_cache": False,  # fanout.dns caches, honouring TTLs, within bounds
        "resolver": resolver,
    }
    if ssl is not None:
        options["ssl"] = ssl
    missing = hooks_missing()
    if not missing:
        connector = _IdleCapped(idle_cap=idle_cap(concurrency), **options)
        missing = _attributes_missing(connector)
        if not missing:
            return connector
    logger.debug("aiohttp's connector internals changed (%s): no keep-alive", ", ".join(missing))
    return aiohttp.TCPConnector(force_close=True, **options)
