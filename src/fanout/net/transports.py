"""The seam between the engine and the wire: a :class:`Transport` makes one attempt.

The engine (:mod:`fanout.engine.fetcher`) owns everything around an attempt:
deadlines (it cancels an attempt whose total deadline passes), redirects
(followed one hop at a time, by its own rules), retries, cool-downs and
per-host limits. A transport only sends one request and reads one response,
into a :class:`~fanout.models.Result`, and names the :class:`~fanout.models.Failure`
of an exception that ended it. Two implement it: aiohttp
(:class:`fanout.net.transport.AiohttpTransport`, the default) and libcurl
(:class:`fanout.net.curl.CurlTransport`, ``transport="curl"``).

The engine picks one once per Fetcher and keeps its bound ``exchange``: the
aiohttp path gains no coroutine layer and no lookup per request.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from yarl import URL

    from fanout.models import Failure, Request, Result
    from fanout.net.proxy import Proxy
    from fanout.net.transport import Hop
    from fanout.policy import Caps, Timeouts

__all__ = [
    "ENVIRONMENT",
    "TRANSPORTS",
    "Transport",
    "TransportName",
]

TransportName = Literal["aiohttp", "curl"]
TRANSPORTS: tuple[TransportName, ...] = ("aiohttp", "curl")
# The environment variable that picks the transport when the options do not.
ENVIRONMENT: Final = "FANOUT_TRANSPORT"


class Transport(Protocol):
    """What the engine asks of a transport."""

    @property
    def name(self) -> TransportName:
        """``"aiohttp"`` or ``"curl"`` (``--stats-json``'s ``transport``)."""
        ...

    def exchange(
        self,
        request: Request,
        url: URL,
        caps: Caps,
        keep_body: bool,
        hop: Hop | None,
        proxy: Proxy | None = None,
    ) -> Awaitable[Result]:
        """One exchange for ``request`` to ``url`` (``hop`` says what a redirect hop
        sends instead of the request's own method, headers and body). A redirect
        to follow comes back with its status and headers and no body; a response
        is a Result (an HTTP error status too, with its ``error``); whatever
        else ends the attempt is raised, for :meth:`classify`. Cancelling it
        ends the transfer at once."""
        ...

    def classify(
        self, exc: BaseException, timeouts: Timeouts, proxy: Proxy | None = None
    ) -> tuple[Failure, bool]:
        """The Failure of an exception :meth:`exchange` raised, and whether the
        request may have reached the server (False only when it surely did not)."""
        ...

    def unsent(self, cancelled: BaseException) -> bool:
        """Whether the engine's deadline, cancelling an exchange with
        ``cancelled``, ended it before the request was sent (while connecting)."""
        ...

    def dns_stats(self) -> dict[str, int] | None:
        """fanout's resolver's counters, or None when it resolved nothing."""
        ...

    async def close(self) -> None:
        """Release the connections and everything else the transport holds."""
        ...
