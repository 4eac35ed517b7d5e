"""What must outlive a host's state in the engine: a bounded, expiring memory.

The engine drops a host's state once it carries nothing a later request
needs (nothing queued or in flight, its rate bucket full again). Some of it
must be kept a while longer for correctness: a cool-down a server asked for
(429 or 503 with Retry-After), the count of consecutive connection failures,
a mark that the host is down, the rate and slots it adapted to, and the
quota its server advertised while its window is open.
:class:`HostMemory` keeps them, for at most ``capacity`` hosts (the least
recently stored forgotten first), each until its last deadline passes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from fanout.urls import HostKey

if TYPE_CHECKING:
    from fanout.engine.adapt import Adaptive
    from fanout.engine.scheduling import _Quota

__all__ = ["DOWN_FOR", "HostMemory", "Remembered", "shown_host"]

DOWN_FOR: Final = 300.0
"""Seconds a host stays marked down, and a failure count is remembered."""


class Remembered:
    """The lasting state of one host: its cool-down (a loop-clock deadline), its
    consecutive connection failures and the last one's message, and, when it
    is down, the reason given to its skipped requests and until when, its
    adapted limits (see :mod:`fanout.engine.adapt`), and its server's quota
    (``hint``) while its window is open."""

    __slots__ = (
        "adaptive",
        "cool_until",
        "down",
        "down_until",
        "expires",
        "failure",
        "failures",
        "hint",
    )

    def __init__(
        self,
        *,
        cool_until: float = -math.inf,
        failures: int = 0,
        failure: str = "",
        down: str | None = None,
        down_until: float = -math.inf,
        adaptive: Adaptive | None = None,
        hint: _Quota | None = None,
        expires: float,
    ) -> None:
        self.adaptive = adaptive
        self.hint = hint
        self.cool_until = cool_until
        self.failures = failures
        self.failure = failure
        self.down = down
        self.down_until = down_until
        self.expires = expires


class HostMemory:
    """At most ``capacity`` hosts' :class:`Remembered` state, each dropped once it
    expires (checked when it is taken, and at the oldest end when one is stored).

    >>> memory = HostMemory(capacity=2)
    >>> memory.put(("http", "a", 80), Remembered(cool_until=5.0, expires=5.0), now=1.0)
    >>> memory.take(("http", "a", 80), now=1.0).cool_until
    5.0
    >>> memory.take(("http", "a", 80), now=1.0) is None  # taken: the host holds it again
    True
    """

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[HostKey, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: HostKey, state: Remembered, now: float) -> None:
        """Keep ``state`` for ``key`` (replacing what was kept); past the
        capacity, the least recently stored host is forgotten."""
        entries = self._entries
        entries[key] = state
        entries.move_to_end(key)
        while len(entries) > self._capacity:
            entries.popitem(last=False)
        # Expired entries are dropped at the oldest end, two at most per call:
        # O(1), and the memory does not sit full of dead entries.
        for _ in range(2):
            oldest = next(iter(entries.values()), None)
            if oldest is None or oldest.expires > now:
                break
            entries.popitem(last=False)

    def peek(self, key: HostKey, now: float) -> Remembered | None:
        """What is kept for ``key`` and still in force at ``now``, left in the
        memory, or None."""
        state = self._entries.get(key)
        if state is None or state.expires <= now:
            return None
        return state

    def take(self, key: HostKey, now: float) -> Remembered | None:
        """What is kept for ``key`` and still in force at ``now``, removed from
        the memory (the host's state holds it again), or None."""
        state = self._entries.pop(key, None)
        if state is None or state.expires <= now:
            return None
        return state


def shown_host(key: HostKey) -> str:
    """``host:port`` of a host key, an IPv6 address in brackets."""
    host = key[1]
    return f"[{host}]:{key[2]}" if ":" in host else f"{host}:{key[2]}"
