"""File descriptors: the RLIMIT_NOFILE a concurrency needs, checked at start.

A run holds at most ``concurrency`` sockets in use and
:func:`fanout.net.pool.idle_cap` idle ones, whatever the number of hosts, plus
a few descriptors of its own (standard streams, the output, the journal,
the DNS resolver, the event loop): :data:`RESERVE`. When the soft limit
(``ulimit -n``) is lower than that, the CLI raises it toward the hard limit
(:func:`fit_process_limit`); where that is not enough it lowers the
concurrency and says so. The library (:func:`fit_concurrency`, used by
``Fetcher``) never changes the process's limits: it lowers its own
concurrency and logs a warning.
"""

from __future__ import annotations

import contextlib
from typing import Final

from fanout.net.pool import idle_cap

__all__ = [
    "RESERVE",
    "concurrency_for",
    "descriptors_needed",
    "fit_concurrency",
    "fit_process_limit",
]

# Descriptors a run needs besides its sockets to servers.
RESERVE: Final = 64


def descriptors_needed(concurrency: int) -> int:
    """File descriptors a run at ``concurrency`` may hold at once."""
    return concurrency + idle_cap(concurrency) + RESERVE


def concurrency_for(limit: int) -> int:
    """The highest concurrency whose :func:`descriptors_needed` fits ``limit`` (at least 1)."""
    # descriptors_needed grows by 1 or 2 for each step of concurrency: start from
    # the estimate for c + c/2 and step down to the first that fits.
    concurrency = max(1, (limit - RESERVE - 8) * 2 // 3 + 1)
    while concurrency > 1 and descriptors_needed(concurrency) > limit:
        concurrency -= 1
    return concurrency


def _soft_limit() -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE, None where there is none (or no ``resource``)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return soft, hard


def _lowered(soft: int, concurrency: int) -> tuple[int, str]:
    lowered = min(concurrency, concurrency_for(soft))
    return lowered, f"ulimit -n is {soft}: concurrency lowered from {concurrency} to {lowered}"


def fit_concurrency(concurrency: int) -> tuple[int, str | None]:
    """The concurrency the process's soft RLIMIT_NOFILE allows, ``concurrency`` or
    lower, and why it was lowered (None when it was not). Changes no limit."""
    limits = _soft_limit()
    if limits is None or limits[0] >= descriptors_needed(concurrency):
        return concurrency, None
    return _lowered(limits[0], concurrency)


def fit_process_limit(concurrency: int) -> tuple[int, str | None]:
    """Raise the soft RLIMIT_NOFILE toward the hard limit as far as ``concurrency``
    needs; then as :func:`fit_concurrency` (the concurrency, lowered when the
    limit could not be raised far enough, and why)."""
    limits = _soft_limit()
    needed = descriptors_needed(concurrency)
    if limits is None or limits[0] >= needed:
        return concurrency, None
    import resource

    soft, hard = limits
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        # A hard limit lowered meanwhile, or a sandbox, may refuse.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return fit_concurrency(concurrency)
