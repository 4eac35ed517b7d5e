"""Running fanout's coroutines: uvloop when installed, plain asyncio otherwise.

A run fanout starts itself (:func:`run`, so also ``fanout.fetch``, the other
sync calls and the command line) owns its event loop, and for as long as it
lasts it also raises the garbage collector's first threshold (see
:func:`tune_collector`) and stops on SIGINT, SIGTERM and SIGHUP as on Ctrl-C
(see :func:`run`). A :class:`~fanout.Fetcher` used in the caller's own event
loop changes nothing of the process, unless made with ``tune_collector=True``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, Final, TypeVar

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "interrupting_signal",
    "interruption",
    "loop_clock",
    "loop_factory",
    "run",
    "run_sync",
    "tune_collector",
]

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
    with the collector's first threshold raised while it runs.

    Called from the main thread, the run stops on SIGINT (Ctrl-C), SIGTERM and
    SIGHUP alike: the first of them cancels ``main``, whose clean-up (its
    ``finally`` blocks: the writes of what was fetched) runs to its end, then
    a KeyboardInterrupt is raised (see :func:`interruption`: an
    :class:`Interrupted` naming SIGTERM or SIGHUP). A later signal is ignored
    until then, so that it does not cut the clean-up short. An error that the
    clean-up raises (a write that failed) is raised instead. Only a signal
    whose handler is still Python's own is taken over (one that is ignored, as
    SIGHUP under ``nohup``, or the program's own handler, is left alone), and
    the handlers are put back when the run ends.
    """
    return _run(main, debug=debug, stop=_Stop())


def _run(main: Coroutine[Any, Any, T], *, debug: bool, stop: _Stop) -> T:
    """:func:`run`, stopped early by ``stop`` (a signal, or another thread)."""
    runner = asyncio.Runner(debug=debug, loop_factory=loop_factory())
    with _collector_tuned(), stop.on_signals(), runner:  # handlers put back after the loop closed
        try:
            result = runner.run(stop.guarded(main))
        except asyncio.CancelledError:
            if stop.signum is None:
                raise
    if stop.signum is not None:  # also when main finished before the cancel reached it
        raise interruption(stop.signum)
    return result


def run_sync(make_main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make_main()`` from synchronous code, even where a loop is running.

    In a plain script this runs a new event loop in this thread (see
    :func:`run`, for signals too). Where an event loop is already running in
    this thread (a Jupyter notebook, an async framework), blocking it is the
    only choice a sync call has, so the work runs on a private loop in a worker
    thread and this call waits for it. A KeyboardInterrupt while it waits (and,
    in the main thread, SIGTERM or SIGHUP: see :func:`run`) cancels the work,
    waits at most ``CLEANUP_TIMEOUT`` seconds for its clean-up and is raised
    again: at once, not once every request is done.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run(make_main())
    return _run_in_thread(make_main)


# How long an interrupted run_sync waits for its worker's clean-up (closing
# connections; normally a few milliseconds) before it raises all the same.
CLEANUP_TIMEOUT = 10.0


def _run_in_thread(make_main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    stop = _Stop()
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        try:
            outcome.set_result(_run(make_main(), debug=False, stop=stop))
        except BaseException as exc:  # handed to the waiting thread
            outcome.set_exception(exc)

    worker = threading.Thread(target=work, name="fanout-run", daemon=True)
    with _interrupting_wait():
        worker.start()
        try:
            return outcome.result()
        except KeyboardInterrupt as exc:
            stop.request(interrupting_signal(exc))
            worker.join(CLEANUP_TIMEOUT)
            raise


STOP_SIGNALS: Final[tuple[int, ...]] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGTERM or SIGHUP, once its clean-up is done;
    ``signum`` says which (Ctrl-C raises a plain KeyboardInterrupt).

    A KeyboardInterrupt, so code that handles Ctrl-C handles these the same way.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signame(self) -> str:
        """The signal's name: ``"SIGTERM"``."""
        return signal.Signals(self.signum).name


def interruption(signum: int) -> KeyboardInterrupt:
    """What a run stopped by ``signum`` raises: a plain KeyboardInterrupt for
    SIGINT, as Python's own Ctrl-C (uncaught, it ends the program as Ctrl-C
    does), an :class:`Interrupted` naming the signal for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def interrupting_signal(exc: BaseException) -> int:
    """The signal a KeyboardInterrupt stands for: an :class:`Interrupted`'s,
    else SIGINT (Python's own Ctrl-C)."""
    return exc.signum if isinstance(exc, Interrupted) else signal.SIGINT


def _takes_over(signum: int, handler: object) -> bool:
    """Whether a run takes ``signum`` over from ``handler``: only from the one
    Python starts with (Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP end
    the process at once)."""
    return handler is (signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


class _Stop:
    """How one run is stopped early: the first :meth:`request` (a signal's, or
    another thread's) cancels the run's main task; later ones change nothing.

    Its signal handlers are installed with ``signal.signal``, as asyncio's own
    for Ctrl-C, not ``loop.add_signal_handler``: they must outlive the loop
    (uvloop's stay installed after it closes, swallowing signals), and a
    signal that lands while the loop is not running (as it closes) is recorded
    all the same.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._task: asyncio.Task[Any] | None = None

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Take over :data:`STOP_SIGNALS` (see :func:`run`) while the block runs,
        when in the main thread."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if _takes_over(signum, handler):
                    previous[signum] = handler
                    signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    async def guarded(self, main: Coroutine[Any, Any, T]) -> T:
        """``main``, run as the task that a request cancels."""
        self._task = asyncio.current_task()  # before the check: see request
        if self.signum is not None:  # requested before the loop ran the task
            main.close()
            raise asyncio.CancelledError
        return await main

    def request(self, signum: int) -> None:
        """Stop the run as if by ``signum``: thread-safe, and safe in a signal
        handler (it only asks the loop to cancel the task)."""
        if self.signum is not None:
            return
        self.signum = signum  # before reading the task: see guarded
        task = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to cancel
                task.get_loop().call_soon_threadsafe(task.cancel)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)


@contextlib.contextmanager
def _interrupting_wait() -> Iterator[None]:
    """While the block waits in the main thread, blocking the event loop that
    runs there: the first of :data:`STOP_SIGNALS` raises its
    :func:`interruption` in it at once, after the handler that was there ran
    (asyncio's, which cancels the blocked loop's main task; Python's, which
    raises KeyboardInterrupt itself; or the program's own); later ones are
    ignored. A signal that is ignored stays ignored."""
    previous: dict[int, Any] = {}
    seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if seen:
            return
        seen.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        raise interruption(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler) or handler == signal.SIG_DFL:
                previous[signum] = handler
                signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
