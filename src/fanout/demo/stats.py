"""What the demo server saw: requests per host and path, and a way to wait for them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """What the server saw, per host (the request's Host header, "127.0.0.1:8080").

    It lives on the server's event loop: read it there, or once requests are done.
    """

    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # host, path, monotonic
    by_path: Counter[str] = field(default_factory=Counter)
    _waiters: list[tuple[Callable[[Stats], bool], asyncio.Future[None]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def peak_in_flight(self, host: str) -> int:
        """The most requests in flight at once to ``host``."""
        return self.peak[host]

    def arrivals(self, host: str, prefix: str = "/") -> list[float]:
        """``time.monotonic()`` arrival times of requests to ``host`` under ``prefix``."""
        return [t for h, path, t in self.seen if h == host and path.startswith(prefix)]

    def count(self, path_qs: str) -> int:
        """How many requests asked for exactly ``path_qs`` ("/items?page=2")."""
        return self.by_path[path_qs]

    def enter(self, host: str, path: str, path_qs: str) -> None:
        """Count a request that has just arrived."""
        self.in_flight[host] += 1
        self.peak[host] = max(self.peak[host], self.in_flight[host])
        self.seen.append((host, path, time.monotonic()))
        self.by_path[path_qs] += 1
        self._wake()

    def leave(self, host: str) -> None:
        """Count a request whose handler has returned."""
        self.in_flight[host] -= 1
        self._wake()

    async def wait_until(self, predicate: Callable[[Stats], bool]) -> None:
        """Wait, on the server's loop, until ``predicate(stats)`` holds.

        It is checked after each arrival and departure, so a test can act once
        requests are in flight instead of sleeping and hoping::

            await server.stats.wait_until(lambda s: s.in_flight["127.0.0.1:8080"] == 3)
        """
        if predicate(self):
            return
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        finally:
            self._waiters.remove(waiter)

    def _wake(self) -> None:
        for predicate, future in self._waiters:
            if not future.done() and predicate(self):
                future.set_result(None)
