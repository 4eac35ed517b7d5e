"""Rate limiting as pure arithmetic: given ``now``, say how long to wait.

:class:`TokenBucket` is the Generic Cell Rate Algorithm (GCRA, ITU-T I.371):
one "theoretical arrival time" replaces the bucket's token count, so taking a
token is O(1) and needs no timer.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]

_EPSILON = 1e-9


class TokenBucket:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second.

    At most ``burst + rate * t`` tokens are taken in any window of ``t``
    seconds. It never sleeps: :meth:`wait` says how long until a token is
    free, :meth:`take` takes one.

    >>> bucket = TokenBucket(rate=2.0, burst=1)
    >>> bucket.take(10.0); bucket.wait(10.0)
    0.5
    """

    __slots__ = ("_interval", "_tat", "_tolerance")

    def __init__(self, rate: float, burst: int = 1) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._tat = float("-inf")

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until a token is available (0 when one is)."""
        wait = self._tat - self._tolerance - now
        return wait if wait > _EPSILON else 0.0  # float error must not leave a token unusable

    def take(self, now: float) -> None:
        """Take a token at ``now``; call only when :meth:`wait` returned 0."""
        self._tat = max(self._tat, now) + self._interval

    def time_for(self, tokens: float, now: float) -> float:
        """Seconds from ``now`` until the last of ``tokens`` tokens is taken,
        each taken as soon as it is free (0 for a burst's worth, or none)."""
        if tokens <= 0:
            return 0.0
        last = max(self._tat, now) + (tokens - 1) * self._interval - self._tolerance
        return max(last - now, 0.0)

    def set_rate(self, rate: float, burst: int) -> None:
        """Refill at ``rate`` from now on, holding ``burst`` tokens at most; the
        tokens already taken stay taken."""
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval

    @property
    def burst(self) -> int:
        """The most tokens it holds."""
        return round(self._tolerance / self._interval) + 1

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return 1.0 / self._interval

    @property
    def full_at(self) -> float:
        """When the bucket is full again, if no token is taken meanwhile."""
        return self._tat

    def idle(self, now: float) -> bool:
        """True when the bucket is full again, so it holds no state worth keeping."""
        return self._tat <= now
