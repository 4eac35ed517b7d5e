"""Running fanout's coroutines: uvloop when installed, plain asyncio otherwise.

A run fanout starts itself (:func:`run`, so also ``fanout.fetch``, the other
sync calls and the command line) owns its event loop, and for as long as it
lasts it also raises the garbage collector's first threshold (see
:func:`tune_collector`). A :class:`~fanout.Fetcher` used in the caller's own
event loop changes nothing of the process, unless made with
``tune_collector=True``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["collector_raised", "loop_clock", "loop_factory", "run", "run_sync", "tune_collector"]

# See tune_collector: bursts of a busy run stay under this many objects.
COLLECTOR_THRESHOLD = 10_000

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is importable, else None (asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or ``time.monotonic`` itself where that is all ``loop.time``
    does (asyncio's own loops): the same clock without a Python call, which a
    hot path reading it for every request can tell."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def run(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run ``main`` to completion on a new event loop (uvloop when installed),
    with the collector's first threshold raised while it runs."""
    with _collector_tuned(), asyncio.Runner(debug=debug, loop_factory=loop_factory()) as runner:
        return runner.run(main)


def run_sync(make_main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make_main()`` from synchronous code, even where a loop is running.

    In a plain script this runs a new event loop in this thread. Where an event
    loop is already running in this thread (a Jupyter notebook, an async
    framework), blocking it is the only choice a sync call has, so the work
    runs on a private loop in a worker thread and this call waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run(make_main())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fanout") as pool:
        return pool.submit(lambda: run(make_main())).result()


def tune_collector() -> None:
    """Raise the cyclic garbage collector's first threshold (for good: call it in
    a program that is mostly fetching). :func:`run` does this for the duration
    of its run, and a :class:`~fanout.Fetcher` made with ``tune_collector=True``
    while it is open; any other Fetcher leaves it alone.

    A busy run allocates in waves: the responses of a wave land in one loop
    iteration. With CPython's default threshold of 700, a run of 250 requests
    at a time starts about 7 collections per 1,000 requests (raw aiohttp as
    many), and one reading an async source, which a feeder task reads in
    batches, about 27 per 1,000 at concurrency 64 (a sync source: 1); the
    waves stay under ``COLLECTOR_THRESHOLD``.
    """
    first, *rest = gc.get_threshold()
    if 0 < first < COLLECTOR_THRESHOLD:
        gc.set_threshold(COLLECTOR_THRESHOLD, *rest)


def collector_raised() -> bool:
    """Whether the collector's first threshold is at :data:`COLLECTOR_THRESHOLD`
    or above (as :func:`tune_collector` leaves it), or collection is off."""
    first = gc.get_threshold()[0]
    return not gc.isenabled() or first == 0 or first >= COLLECTOR_THRESHOLD


_tuning = threading.Lock()
_tuned_runs = 0
_thresholds: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # before, and as raised


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    """:func:`tune_collector` for the duration of a run, then the threshold put
    back, unless it was changed meanwhile. Runs that overlap (in threads, or one
    inside another) share one raise, undone when the last ends."""
    global _tuned_runs, _thresholds
    with _tuning:
        if _tuned_runs == 0:
            before = gc.get_threshold()
            tune_collector()
            _thresholds = (before, gc.get_threshold())
        _tuned_runs += 1
    try:
        yield
    finally:
        with _tuning:
            _tuned_runs -= 1
            original, raised = _thresholds
            if _tuned_runs == 0 and gc.get_threshold() == raised:
                gc.set_threshold(*original)
