"""The connection pool: sockets bounded by the concurrency, whatever the number of hosts.

aiohttp's ``TCPConnector`` bounds the connections in use (``limit``) but keeps
one idle keep-alive connection per host seen, until its keep-alive timeout:
a run over 5,000 hosts held about 5,000 sockets, and under ``ulimit -n 1024``
most of its requests failed with "Too many open files". fanout's connector
keeps at most :func:`idle_cap` idle connections in all, closing the least
recently used first, and counts the connections it is closing against the
limit, so that a run holds at most ``concurrency`` sockets in use or closing
plus ``idle_cap(concurrency)`` idle ones.

The connector that does this lives in :mod:`fanout.net.aiohttp_internals`, with
aiohttp's other private internals: where they are missing or changed, it
falls back to a connector that closes every connection after its request
(``force_close=True``): the same bound, without keep-alive.
"""

from __future__ import annotations

from ssl import SSLContext
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from fanout.net.aiohttp_internals import pooled_connector

__all__ = ["idle_cap", "make_connector"]


def idle_cap(concurrency: int) -> int:
    """The most idle keep-alive connections kept, over all hosts, for ``concurrency``.

    Half the concurrency keeps a connection for each of the hosts being fetched
    in a run whose hosts come back (an input sorted by host, or few hosts);
    the 8 keep a small run's connections."""
    return concurrency // 2 + 8


def make_connector(
    *, concurrency: int, resolver: AbstractResolver, ssl: SSLContext | None = None
) -> aiohttp.TCPConnector:
    """The connector of a run's session: at most ``concurrency`` connections in use
    or closing, at most :func:`idle_cap` idle ones, DNS through ``resolver``, TLS
    with ``ssl`` (None: aiohttp's default context).
    Without keep-alive where aiohttp's internals are not the ones fanout's
    connector was written against (see :mod:`fanout.net.aiohttp_internals`)."""
    options: dict[str, Any] = {
        "limit": concurrency,
        "limit_per_host": 0,  # fanout's own scheduler enforces per-host limits
        "use_dns_cache": False,  # fanout.net.dns caches, honouring TTLs, within bounds
        "resolver": resolver,
    }
    if ssl is not None:
        options["ssl"] = ssl
    return pooled_connector(idle_cap(concurrency), options)
