"""Policies: small frozen values, checked on creation, changed with ``replace``.

They never sleep and never touch the network; the engine asks them and does
the waiting. ``None`` means "no limit"; ``0`` is refused rather than read as
unlimited.

>>> from dataclasses import replace
>>> limits = Limits(concurrency=50, per_host=4)
>>> replace(limits, per_host_rate=2.0).per_host_rate
2.0
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from fanout.errors import ConfigError

__all__ = ["DEFAULT_RETRY_STATUSES", "Caps", "Limits", "RetryPolicy", "Timeouts"]

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _positive(owner: str, name: str, value: float | None, *, optional: bool) -> None:
    if value is None:
        if not optional:
            raise ConfigError(f"{owner}.{name} must be a number, got None")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ConfigError(f"{owner}.{name} must be a positive finite number, got {value!r}")


def _positive_int(owner: str, name: str, value: int | None, *, optional: bool) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
    _positive(owner, name, value, optional=optional)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How many requests run at once, and how fast they start.

    - ``concurrency``: requests in flight at once, over all hosts.
    - ``per_host``: requests in flight at once to one host (scheme, host and
      port). The default of 8 is polite to servers you do not own; raise it for
      your own.
    - ``rate`` / ``per_host_rate``: requests started per second, over all hosts
      and per host, enforced by a token bucket (GCRA) that holds ``burst``
      tokens: at most ``burst + rate * t`` requests start in any window of
      ``t`` seconds. ``burst=1`` spaces requests evenly, ``1 / rate`` apart.
      A request waiting for a token waits at least a millisecond (and
      uvloop's clock ticks in milliseconds), so a rate above 1,000 per second
      needs a ``burst`` of at least ``rate / 1000`` to be reached.
    - ``window``: how many requests fanout reads ahead of the results the
      caller has taken (default ``2 * concurrency``). Memory is bounded by it,
      whatever the length of the input. Raise it when the input is sorted by
      host and some hosts are slow, so others can be reached.
    - ``parked``: how many requests that must wait (a retry's back-off, a
      host's cool-down after 429 or 503, a per-host rate token, one of a
      slow host's own slots when ``per_host`` is below ``concurrency``) may give
      their place in the window back while they wait, so reading ahead goes
      on and requests to other hosts are not starved. Each costs about a
      kilobyte; beyond the budget a waiting request keeps its place, as it
      does with ``parked=0`` and with ordered output. Default
      ``max(10_000, 50 * window)``.
    """

    concurrency: int = 64
    per_host: int | None = 8
    rate: float | None = None
    per_host_rate: float | None = None
    burst: int = 1
    window: int | None = None
    parked: int | None = None

    def __post_init__(self) -> None:
        _positive_int("Limits", "concurrency", self.concurrency, optional=False)
        _positive_int("Limits", "per_host", self.per_host, optional=True)
        _positive("Limits", "rate", self.rate, optional=True)
        _positive("Limits", "per_host_rate", self.per_host_rate, optional=True)
        _positive_int("Limits", "burst", self.burst, optional=False)
        _positive_int("Limits", "window", self.window, optional=True)
        if self.parked is not None and (
            isinstance(self.parked, bool) or not isinstance(self.parked, int) or self.parked < 0
        ):
            raise ConfigError(f"Limits.parked must be an integer >= 0, got {self.parked!r}")

    @property
    def effective_window(self) -> int:
        """The read-ahead bound in force: ``window`` or ``2 * concurrency``."""
        return self.window if self.window is not None else 2 * self.concurrency

    @property
    def effective_parked(self) -> int:
        """The budget of parked requests in force: ``parked`` or
        ``max(10_000, 50 * effective_window)``."""
        return self.parked if self.parked is not None else max(10_000, 50 * self.effective_window)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines of one attempt, in seconds; all on by default.

    - ``connect``: to resolve the host and open the connection.
    - ``read``: the longest gap between two reads of the response.
    - ``total``: one attempt, from sending to the last body byte, the
      redirects it follows included (their exchanges share it; the time a
      hop waits for its host's slot or rate is not counted). A retry gets a
      deadline of its own.
    - ``dns``: one DNS lookup (default 5 s), at most ``connect`` and
      ``total``, which count the lookup too. A DNS server that does not answer in time makes
      a ``dns`` failure that names it.
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    total: float | None = 120.0
    dns: float | None = 5.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total", "dns"):
            _positive("Timeouts", name, getattr(self, name), optional=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Caps:
    """Bounds on what one response may cost.

    - ``max_bytes``: the largest body, counted after decompression, so a gzip
      bomb stops at the cap (default 8 MiB; ``None`` for no cap). A body
      over it is a ``too_large`` failure. Kept bodies are held in memory
      until the caller takes their results: at worst about ``window *
      max_bytes`` at once (1 GiB at the default 64 concurrent requests), plus
      what is made of one body at a time (a JSONL record of it as text takes
      up to 11 times its size while it is built, parsing it as JSON up to 40
      times). A body that is only hashed is never held whole, so raising the
      cap for large downloads with ``keep_body=False`` costs no memory.
    - ``max_redirects``: redirects followed per request, over all its tries
      (a retried hop does not start the count again); ``0`` follows none and
      returns the 3xx response itself.
    """

    max_bytes: int | None = 8 * 1024 * 1024
    max_redirects: int = 10

    def __post_init__(self) -> None:
        _positive_int("Caps", "max_bytes", self.max_bytes, optional=True)
        if isinstance(self.max_redirects, bool) or not isinstance(self.max_redirects, int):
            raise ConfigError(f"Caps.max_redirects must be an integer, got {self.max_redirects!r}")
        if self.max_redirects < 0:
            raise ConfigError(f"Caps.max_redirects must be >= 0, got {self.max_redirects!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how long to wait before trying a failed request again.

    ``attempts`` is the most tries in all (1 means never retry). The delay
    before retry ``n`` is drawn from ``[0, min(backoff_max, backoff * 2**(n-1))]``
    ("full jitter"), or is exactly that bound with ``jitter=False``. A
    ``Retry-After`` header, when ``respect_retry_after``, replaces the backoff,
    capped at ``retry_after_max`` seconds.

    >>> RetryPolicy(jitter=False).delay(2, retry_after=None)
    1.0
    """

    attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)
    respect_retry_after: bool = True
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        _positive_int("RetryPolicy", "attempts", self.attempts, optional=False)
        _positive("RetryPolicy", "backoff", self.backoff, optional=False)
        _positive("RetryPolicy", "backoff_max", self.backoff_max, optional=False)
        _positive("RetryPolicy", "retry_after_max", self.retry_after_max, optional=False)
        statuses = frozenset(self.retry_statuses)
        bad = sorted(s for s in statuses if not isinstance(s, int) or not 100 <= s <= 599)
        if bad:
            raise ConfigError(f"RetryPolicy.retry_statuses holds invalid statuses: {bad!r}")
        object.__setattr__(self, "retry_statuses", statuses)

    def delay(
        self, attempt: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before try number ``attempt + 1``, after ``attempt`` tries.

        Always a number from 0 to ``backoff_max`` (or ``retry_after_max`` when
        ``retry_after`` is used), whatever the attempt count; a negative
        ``retry_after`` is 0, and a NaN one is ignored.
        """
        if retry_after is not None and self.respect_retry_after and not math.isnan(retry_after):
            return min(max(retry_after, 0.0), self.retry_after_max)
        return self._backoff(attempt, rng)

    def _backoff(self, attempt: int, rng: random.Random | None) -> float:
        try:
            bound = min(self.backoff_max, math.ldexp(self.backoff, attempt - 1))
        except OverflowError:  # backoff * 2 ** (attempt - 1) is past the largest float
            bound = self.backoff_max
        if not self.jitter:
            return bound
        return (rng or random).uniform(0.0, bound)
