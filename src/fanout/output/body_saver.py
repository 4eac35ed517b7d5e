"""Saving bodies under ``--out-dir``, off the event loop, in the order the
results came."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from pathlib import Path

from fanout.errors import SinkError
from fanout.models import ErrorKind, Failure, Result
from fanout.safetext import shown

# --out-dir: at most 16 results (or 16 MiB of bodies) waiting for their save
_SAVE_DEPTH, _SAVE_BYTES = 16, 16 << 20


class _Saver:
    """Saves bodies under --out-dir on a thread of its own while results keep
    coming. A result's record is emitted once its body is saved, or could not
    be (then the result is a ``write`` failure), in the order the results came.

    At most ``_SAVE_DEPTH`` results (or ``_SAVE_BYTES`` of bodies) wait here:
    :attr:`full` says when, and :meth:`room` waits for the oldest save."""

    def __init__(
        self, out_dir: Path, staging: Path | None, record: Callable[[Result, str | None], None]
    ) -> None:
        self._out_dir = out_dir
        self._staging = staging
        self._record = record
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fanout-files")
        self._queue: deque[tuple[Result, asyncio.Future[str] | None]] = deque()
        self._bytes = 0

    def add(self, result: Result) -> None:
        """Start saving the body of an ok result; emit the records that are ready."""
        future = None
        if result.ok and result.body is not None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._pool, _save, self._out_dir, self._staging, result)
            future.add_done_callback(self._saved)
            self._bytes += len(result.body)
        self._queue.append((result, future))
        self._emit_ready()

    @property
    def full(self) -> bool:
        return len(self._queue) >= _SAVE_DEPTH or (bool(self._queue) and self._bytes >= _SAVE_BYTES)

    async def room(self) -> None:
        """Wait until fewer results than the bound wait for their save."""
        while self.full:
            await self._oldest()

    async def drain(self) -> None:
        """Wait until every record is emitted."""
        while self._queue:
            await self._oldest()

    async def _oldest(self) -> None:
        future = self._queue[0][1]
        if future is None or future.done():
            self._emit_ready()
        else:
            await asyncio.wait([future])

    def close(self) -> None:
        """Stop the thread (a save under way is finished, none is started)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _saved(self, _: asyncio.Future[str]) -> None:
        self._emit_ready()

    def _emit_ready(self) -> None:
        queue = self._queue
        while queue:
            result, future = queue[0]
            if future is not None:
                if not future.done():
                    return
                self._bytes -= len(result.body or b"")
            queue.popleft()
            self._record(result, None if future is None else _saved_path(result, future))


def _save(out_dir: Path, staging: Path | None, result: Result) -> str:
    """Save the body of ``result`` (on the saver's thread); return its path."""
    from fanout.output.files import safe_relpath, write_atomic

    assert result.body is not None
    relpath = safe_relpath(result.url, content_type=result.headers.get("Content-Type"))
    return str(write_atomic(out_dir, relpath, result.body, temp_dir=staging))


def _saved_path(result: Result, future: asyncio.Future[str]) -> str | None:
    """Where the body was saved; None, with the result made a failure, when it was not."""
    if future.cancelled():
        result.error = Failure(ErrorKind.CANCELLED, "stopped before its body was saved")
        return None
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, SinkError):
        result.error = Failure(ErrorKind.WRITE, shown(str(error)), _cause(error))
    else:  # a bug: the run goes on, the record says what it was
        result.error = Failure(
            ErrorKind.INTERNAL, shown(f"unexpected error: {error!r}"), type(error).__name__
        )
    return None


def _cause(error: BaseException) -> str | None:
    """The type name of the OSError that made saving fail (the files module
    raises its SinkError ``from None``, so it is the context); None for
    fanout's own refusal (a path outside the directory)."""
    inner = error.__cause__ or error.__context__
    return None if inner is None else type(inner).__name__
