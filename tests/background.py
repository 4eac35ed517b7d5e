"""Run an async server on an event loop of its own, in a background thread.

The command line runs its own event loop (``fanout.runtime.run``), so a test
that drives it in-process cannot also serve on the test's loop: the server
goes to a thread. Whatever the server records is read from the test's thread
once the command has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

__all__ = ["in_thread"]

T = TypeVar("T")


@contextlib.contextmanager
def in_thread(make: Callable[[], AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Enter ``make()`` on a new event loop in a daemon thread, yield what it
    gave, and exit it (on that loop) when the block ends. A failure to start
    is raised here; one while stopping is raised at the end of the block."""
    ready: concurrent.futures.Future[tuple[T, Callable[[], object]]] = concurrent.futures.Future()
    failure: list[BaseException] = []

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with make() as running:
            ready.set_result((running, lambda: loop.call_soon_threadsafe(stop.set)))
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # raised again in the test's thread
            if ready.done():
                failure.append(exc)
            else:
                ready.set_exception(exc)

    thread = threading.Thread(target=main, name="test-server", daemon=True)
    thread.start()
    try:
        running, stop = ready.result(timeout=30)
    except BaseException:
        thread.join(timeout=30)
        raise
    try:
        yield running
    finally:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            stop()
        thread.join(timeout=30)
        if failure:
            raise failure[0]
