"""The engine: the Fetcher and what decides which request runs when.

- :mod:`fanout.engine.fetcher`: :class:`Fetcher`, requests in, exactly one
  result out for each, and the I/O of every attempt (through :mod:`fanout.net`);
- :mod:`fanout.engine.scheduling`: which queued request starts next, and when
  (host slots, rate gates, cool-downs, retry timers), on an injected clock;
- :mod:`fanout.engine.hoststate`: what must outlive a host's state, bounded;
- :mod:`fanout.engine.ratelimit`: rate limiting as pure arithmetic;
- :mod:`fanout.engine.retry_after`: parsing of the Retry-After header.

The names below are imported on first use (PEP 562), so importing the
scheduling alone does not load aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.engine.fetcher import DEFAULT_USER_AGENT, Fetcher, RequestLike, Source

__all__ = ["DEFAULT_USER_AGENT", "Fetcher", "RequestLike", "Source"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'fanout.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module("fanout.engine.fetcher"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
