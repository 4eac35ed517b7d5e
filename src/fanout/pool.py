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
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection

__all__ = ["idle_cap", "make_connector", "private_hooks_missing"]

logger = logging.getLogger("fanout")

# aiohttp's private methods that _IdleCapped overrides or calls, with the
# parameters it relies on (aiohttp 3.10 to 3.14).
PRIVATE_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "_get": ("key", "traces"),
    "_release": ("key", "protocol", "should_close"),
    "_available_connections": ("key",),
    "_release_waiter": (),
    "_cleanup": (),
}
# Its private attributes, found on a connector once made: name, type.
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
_aiohttp_get: Any = getattr(aiohttp.TCPConnector, "_get", None)
_aiohttp_release: Any = getattr(aiohttp.TCPConnector, "_release", None)


class _IdleCapped(aiohttp.TCPConnector):
    """aiohttp's connector with idle connections capped in total (least recently
    used closed first) and connections being closed counted against ``limit``."""

    def __init__(self, *, idle_cap: int, **options: Any) -> None:
        super().__init__(**options)
        self._idle_cap = idle_cap
        # Idle connections, least recently released first. An entry may outlive
        # its connection's stay in the pool: aiohttp drops broken or expired
        # connections in _get without telling, and _get forgets only the first
        # connection of the host, the one aiohttp takes unless it is broken.
        # A stale entry counts one too many until it is evicted, which then
        # closes nothing in use (see _evict).
        self._idle: OrderedDict[ResponseHandler, Any] = OrderedDict()
        self._closing: set[ResponseHandler] = set()

    @property
    def idle(self) -> int:
        """Idle keep-alive connections kept (an upper bound, see ``_idle``)."""
        return len(self._idle)

    @property
    def closing(self) -> int:
        """Connections closed by this connector whose socket is not yet closed."""
        return len(self._closing)

    # Not a coroutine: a coroutine around aiohttp's would cost about 1 % of a
    # small request's instructions. aiohttp takes the first connection of the
    # host's deque (oldest first) unless it is broken or expired, then closes it.
    def _get(self, key: Any, traces: list[Any]) -> Coroutine[Any, Any, Connection | None]:
        kept = self._conns.get(key)
        if kept:
            self._idle.pop(kept[0][0], None)
        getting: Coroutine[Any, Any, Connection | None] = _aiohttp_get(self, key, traces)
        return getting

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        _aiohttp_release(self, key, protocol, should_close=should_close)
        kept = self._conns.get(key)
        if kept and kept[-1][0] is protocol:
            idle = self._idle
            if protocol in idle:  # a stale entry (see __init__)
                idle.move_to_end(protocol)
            else:
                idle[protocol] = key
            if len(idle) > self._idle_cap:
                self._evict()
        else:
            self._closed_by_us(protocol)

    def _available_connections(self, key: Any) -> int:
        available: int = super()._available_connections(key)
        return available - len(self._closing) if self._closing else available

    def _cleanup(self) -> None:
        super()._cleanup()  # closes the connections past their keep-alive timeout
        if self._idle:
            pooled = {protocol for kept in self._conns.values() for protocol, _ in kept}
            for protocol in [protocol for protocol in self._idle if protocol not in pooled]:
                del self._idle[protocol]
                self._closed_by_us(protocol)

    def _evict(self) -> None:
        """Close the least recently used idle connections past the cap."""
        idle = self._idle
        while len(idle) > self._idle_cap:
            protocol, key = idle.popitem(last=False)
            if protocol in self._acquired:  # a stale entry, in use again
                continue
            kept = self._conns.get(key)
            if kept:
                # The oldest of its host is first (aiohttp appends and takes from the left).
                if kept[0][0] is protocol:
                    kept.popleft()
                else:
                    for index, (pooled, _) in enumerate(kept):
                        if pooled is protocol:
                            del kept[index]
                            break
                if not kept:
                    del self._conns[key]
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
) -> aiohttp.TCPConnector:
    """The connector of a run's session: at most ``concurrency`` connections in use
    or closing, at most :func:`idle_cap` idle ones, DNS through ``resolver``.
    Falls back to a connector without keep-alive when aiohttp's internals are not
    the ones :class:`_IdleCapped` was written against."""
    options: dict[str, Any] = {
        "limit": concurrency,
        "limit_per_host": 0,  # fanout's own scheduler enforces per-host limits
        "use_dns_cache": True,
        "ttl_dns_cache": 300,
        "resolver": resolver,
    }
    missing = hooks_missing()
    if not missing:
        connector = _IdleCapped(idle_cap=idle_cap(concurrency), **options)
        missing = _attributes_missing(connector)
        if not missing:
            return connector
    logger.debug("aiohttp's connector internals changed (%s): no keep-alive", ", ".join(missing))
    return aiohttp.TCPConnector(force_close=True, **options)
