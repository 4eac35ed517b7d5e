"""The synchronous face of fanout, for scripts and notebooks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fanout.config import FetcherConfig, FetcherOptions, resolve_config
from fanout.engine import Fetcher, RequestLike
from fanout.models import Result
from fanout.runtime import run_sync

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.12

__all__ = ["fetch"]


def fetch(
    requests: Iterable[RequestLike],
    config: FetcherConfig | None = None,
    **options: Unpack[FetcherOptions],
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
    of :class:`Fetcher`: a :class:`~fanout.FetcherConfig`, keyword options over
    its fields, or both; a bad one raises :class:`~fanout.ConfigError` (an
    unknown one TypeError) before anything is fetched.

    Ctrl-C stops the requests in flight and raises KeyboardInterrupt at once,
    in a notebook too; so do SIGTERM and SIGHUP, as
    :class:`fanout.runtime.Interrupted` (a KeyboardInterrupt that names the
    signal), in the main thread where their handlers are Python's defaults.
    No results are returned then.

    >>> results = fetch(["http://127.0.0.1:8080/a", "python://x"])  # doctest: +SKIP
    >>> [r.ok for r in results]  # doctest: +SKIP
    [True, False]
    """

    resolved = resolve_config(config, options, "fetch")  # checked before any loop runs

    async def main() -> list[Result]:
        async with Fetcher(resolved) as fetcher:
            return await fetcher.gather(requests)

    return run_sync(main)
