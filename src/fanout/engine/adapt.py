"""The adaptive per-host rate and concurrency (AIMD) as pure arithmetic.

A host gets an :class:`Adaptive` at its first congestion signal (a 429 or 503
without Retry-After, a connect or read timeout); until then it costs nothing.
On a signal, its rate drops to ``BETA`` times the rate actually observed
(attempts that ended over the last ``WINDOW`` seconds, or the adapted rate
when that is lower), and its concurrency to ``BETA`` times the attempts in
flight (at least 1), at most once per round: a signal from an attempt that
started before the last cut is the same congestion, already answered, as in
TCP. Successes raise the rate additively, by ``ALPHA`` times the rate the
last cut started from per second of successes (so a cut is won back in
``(1 - BETA) / ALPHA`` = 3 s of successes, at any scale), and the
concurrency by one slot per round of successes (as many as the slots), up to
the ceilings: the user's (or robots.txt's) rate and ``per_host``. Cuts with
no success between them (a stall, a host refusing everything for a while)
are one congestion: the first sets the scale, and once answers come the rate
doubles every ``REGAIN`` seconds back to what that first cut left.

Every time is passed in (seconds on any one clock): the class reads no clock,
so ``tests/test_adapt.py`` drives it by hand.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "ALPHA",
    "BETA",
    "BURST_SPAN",
    "DRY_ROUNDS",
    "GAP",
    "KEEP",
    "LOSS",
    "MIN_RATE",
    "MIN_SIGNALS",
    "MIN_STEP",
    "REGAIN",
    "RELEASE",
    "WINDOW",
    "Adaptive",
]

BETA: Final = 0.7
"""The multiplicative decrease: what is kept of the rate and slots at a cut
(TCP CUBIC's 0.7; 0.5 would average 0.75 of the server's limit, too close to
the 0.7 the issue asks for)."""

ALPHA: Final = 0.1
"""The additive increase, per second of successes, as a fraction of the rate
the last cut started from."""

MIN_STEP: Final = 0.5
"""The least additive increase, in requests per second per second: a host cut
to a crawl (a stalled server) is back at 5 req/s within 10 s of answers;
below 5 req/s a tenth of the rate is less than that (and would probe a
server that allows 5 req/s twice as often)."""

MIN_RATE: Final = 0.1
"""The lowest adapted rate, in requests per second (one every 10 s)."""

REGAIN: Final = 0.25
"""Seconds of successes in which the rate doubles while it is below what the
first of cuts with no success between them left (as TCP's slow start after a
timeout): by additive steps from a crawl, a host that did 1,000 req/s before
a one-second stall took over 20 minutes to be sent 700 again."""

GAP: Final = 1.0
"""The most seconds counted between two successes: a host left idle earns no
increase for the time nothing was sent to it."""

WINDOW: Final = 1.0
"""Seconds over which the observed rate a cut starts from is measured."""

RELEASE: Final = 2.0
"""With no ceiling rate (no ``per_host_rate``, no robots.txt pace), the adapted
rate is dropped once it is this many times the observed rate (and the slots
are back at their ceiling): it no longer holds the host back."""

BURST_SPAN: Final = 0.01
"""An adapted rate's bucket holds this many seconds of tokens (at least one):
a wake-up that comes a timer tick late (1 ms on uvloop) then loses no token,
so a high adapted rate is reached, in clumps far smaller than any server's
own bucket."""

DRY_ROUNDS: Final = 2
"""Cuts in a row with no success between them, per ``host_errors``, after which
the host is marked down like one that cannot be connected to (10 by
default): a host that answers nothing but 429s, 503s or timeouts would
otherwise be crawled at ``MIN_RATE`` for as long as it has requests, a day
for a few thousand."""

LOSS: Final = 0.05
"""The least share of a host's answers since the last cut (or, before any, of
all its answers) that must be signals for a new cut: a server that answers 1
% of requests with a 503 at random is not congested, and cutting on each of
them held the demo's host (1 % of 503s, 64 in flight) to 19 req/s instead of
about 2,000. A server that sheds load answers far more of them."""

MIN_SIGNALS: Final = 1
"""The least number of signals since the last cut for a new cut."""

KEEP: Final = 60.0
"""Seconds an idle host's adapted state is remembered after its state is dropped."""


class Adaptive:
    """One host's adapted ``rate`` (requests per second) and ``slots`` (requests
    in flight), below the ceilings ``max_rate`` (``math.inf``: none) and
    ``max_slots``; ``source`` says where ``max_rate`` came from, ``burst``
    the burst of its bucket (the owner's, to restore them).

    >>> adaptive = Adaptive(max_rate=math.inf, max_slots=8)
    >>> adaptive.congested(now=10.0, started=9.9, observed=100.0, in_flight=4)
    True
    >>> round(adaptive.rate, 3), adaptive.slots
    (70.0, 2)
    >>> adaptive.congested(now=10.1, started=9.95, observed=100.0, in_flight=2)  # same round
    False
    """

    __slots__ = (
        "acks",
        "answered",
        "burst",
        "cut_at",
        "dry",
        "last",
        "mark",
        "max_rate",
        "max_slots",
        "peak",
        "rate",
        "signals",
        "slots",
        "source",
        "step",
    )

    def __init__(
        self, *, max_rate: float, max_slots: int, source: str | None = None, burst: int = 1
    ) -> None:
        self.max_rate = max_rate
        self.source = source
        self.burst = burst
        self.max_slots = max_slots
        self.rate = max_rate
        self.slots = max_slots
        self.step = MIN_STEP
        self.cut_at = -math.inf  # when the last cut was made
        self.last = -math.inf  # when the last success was counted
        self.acks = 0  # successes in the current round
        self.peak = 0.0  # the rate the first cut of the current congestion started from
        self.answered = False  # a success since the last cut
        self.dry = 0  # cuts in a row with no success between them
        self.signals = 0  # signals since the last cut, in new rounds
        self.mark = 0  # the host's answers counted at the last cut

    def congested(
        self,
        *,
        now: float,
        started: float,
        observed: float,
        in_flight: int,
        answers: int | None = None,
    ) -> bool:
        """A congestion signal at ``now`` from an attempt that ``started`` then,
        with ``observed`` attempts per second ending lately and ``in_flight``
        attempts (this one among them). True when it cut the rate and slots;
        False when the attempt was in flight at the last cut, or (given
        ``answers``, the host's answers counted so far, this one among them)
        when fewer than :data:`MIN_SIGNALS` signals, or fewer than
        :data:`LOSS` of the answers since the last cut, were signals."""
        if started < self.cut_at:
            return False
        if answers is not None:
            self.signals += 1
            if answers < self.mark:  # the host's counters were made anew
                self.mark = 0
            if self.signals < MIN_SIGNALS or self.signals < LOSS * (answers - self.mark):
                return False
            self.signals, self.mark = 0, answers
        base = min(observed, self.rate)
        if base == math.inf:  # no rate to cut from yet (a young host): its slots only
            if self.answered:
                self.dry = 0
        else:
            if self.answered or base > self.peak:  # a new congestion, not the same one
                self.peak = base
                self.step = max(MIN_STEP, ALPHA * base)
            self.dry = 1 if self.answered else self.dry + 1
        self.answered = False
        self.rate = max(MIN_RATE, BETA * base)
        self.slots = max(1, math.floor(BETA * min(in_flight, self.slots)))
        self.cut_at = now
        self.last = now
        self.acks = 0
        return True

    def succeeded(self, now: float) -> bool:
        """A success at ``now``: the rate rises by ``step`` per second since the
        last one (at most ``GAP``), up to ``max_rate`` (below what the first of
        cuts with no success between them left, it doubles every ``REGAIN``
        seconds instead); a round of successes
        adds a slot, up to ``max_slots``. True when a round ended (the owner
        may then check :meth:`released`)."""
        gap = now - self.last
        self.last = now
        self.answered = True
        self.dry = 0
        if gap > 0.0:
            span = min(gap, GAP)
            regained = min(BETA * self.peak, self.max_rate)
            if self.rate < regained:
                self.rate = min(regained, self.rate * 2.0 ** (span / REGAIN))
            else:
                self.rate = min(self.max_rate, self.rate + self.step * span)
        self.acks += 1
        if self.acks < self.slots:
            return False
        self.acks = 0
        if self.slots < self.max_slots:
            self.slots += 1
        return True

    def released(self, observed: float) -> bool:
        """True when the adapted limits no longer hold the host back: the slots
        are back at their ceiling, and the rate at its ceiling or, with none,
        ``RELEASE`` times the ``observed`` rate."""
        if self.slots < self.max_slots:
            return False
        if self.max_rate != math.inf:
            return self.rate >= self.max_rate
        return self.rate > RELEASE * observed
