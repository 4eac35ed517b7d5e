"""The synchronous face of fanout, for scripts and notebooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fanout.engine import DEFAULT_USER_AGENT, Fetcher, RequestLike
from fanout.models import Result
from fanout.policy import Caps, Limits, RetryPolicy, Timeouts
from fanout.runtime import run_sync

__all__ = ["fetch"]


def fetch(
    requests: Iterable[RequestLike],
    *,
    limits: Limits | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    caps: Caps | None = None,
    headers: Mapping[str, str] | None = None,
    user_agent: str = DEFAULT_USER_AGENT,
    deny_private: bool = False,
    allow_hosts: Iterable[str] | None = None,
    deny_hosts: Iterable[str] = (),
    nameservers: Iterable[str] | None = None,
    host_errors: int = 5,
) -> list[Result]:
    """Fetch every request and return the results in input order.

    Works in a plain script (it runs its own event loop, uvloop when
    installed) and where a loop is already running, as in a Jupyter notebook
    (it then runs on a private loop in a worker thread). Failures are results
    with an ``error``; nothing is raised for a failed request. An exception
    raised by ``requests`` itself (a generator that fails) is raised as
    :class:`fanout.SourceError`, the original as its ``__cause__``. ``requests`` is
    an iterable: a single URL as a str (or bytes) raises TypeError, where it
    would otherwise be fetched one character at a time. The options are those
    of :class:`Fetcher`, the guard (``deny_private``, ``allow_hosts``,
    ``deny_hosts``), the DNS servers (``nameservers``) and ``host_errors`` included.

    Ctrl-C stops the requests in flight and raises KeyboardInterrupt at once,
    in a notebook too; so do SIGTERM and SIGHUP, as
    :class:`fanout.runtime.Interrupted` (a KeyboardInterrupt that names the
    signal), in the main thread where their handlers are Python's defaults.
    No results are returned then.

    >>> results = fetch(["http://127.0.0.1:8080/a", "python://x"])  # doctest: +SKIP
    >>> [r.ok for r in results]  # doctest: +SKIP
    [True, False]
    """

    async def main() -> list[Result]:
        async with Fetcher(
            limits=limits,
            retry=retry,
            timeouts=timeouts,
            caps=caps,
            headers=headers,
            user_agent=user_agent,
            deny_private=deny_private,
            allow_hosts=allow_hosts,
            deny_hosts=deny_hosts,
            nameservers=nameservers,
            host_errors=host_errors,
        ) as fetcher:
            return await fetcher.gather(requests)

    return run_sync(main)
