"""The JSONL writer: records as JSON lines to a file, standard output or a stream."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

from fanout.errors import SinkError
from fanout.output.records import json_line

__all__ = ["JsonlWriter"]

# JsonlWriter writes its queue once this many bytes are waiting.
_FLUSH_BYTES: Final = 1 << 20


class JsonlWriter:
    """Writes records as JSON lines to a file, standard output (``"-"``) or a binary stream.

    Lines are buffered and written whole, every ``flush_every`` records or
    once 1 MiB is waiting, on :meth:`flush` and on close, so a reader of the
    file only ever sees complete lines at those points. With ``append=True`` an existing file
    is extended (for resumed runs). Standard output and a given stream are
    flushed but not closed at exit. Any failure to open or write raises
    :class:`~fanout.errors.SinkError` naming the file. Writes block; from
    async code call them from one writer task or via ``asyncio.to_thread``.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> with JsonlWriter(path) as out:
    ...     out.write({"url": "http://h.example/", "ok": True})
    >>> open(path, "rb").read()
    b'{"url":"http://h.example/","ok":true}\\n'
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        flush_every: int = 100,
        append: bool = False,
    ) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every!r}")
        self._given: BinaryIO | None = None
        if isinstance(target, str | os.PathLike):
            self._target = os.fspath(target)
            self._name = "standard output" if self._target == "-" else repr(self._target)
        else:
            self._given = target
            self._target = str(getattr(target, "name", "<stream>"))
            self._name = repr(self._target)
        self._flush_every = flush_every
        self._append = append
        self._stream: BinaryIO | None = None
        self._owned = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._closed = False

    @property
    def name(self) -> str:
        """The path written to, ``"-"`` for standard output, or a given stream's name."""
        return self._target

    def __enter__(self) -> Self:
        """Open the output; an error raises SinkError naming it."""
        if self._stream is not None or self._closed:
            raise SinkError(f"{self._name} is already open or closed")
        if self._given is not None:
            self._stream = self._given
        elif self._target == "-":
            self._stream = sys.stdout.buffer
        else:
            try:
                self._stream = Path(self._target).open("ab" if self._append else "wb")
            except OSError as exc:
                msg = f"cannot open {self._name} for writing: {exc.strerror or exc}"
                raise SinkError(msg) from exc
            self._owned = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write what is pending and close the file (standard output is left open).

        When the block raised, a failure to write the rest is not raised over it.
        """
        if exc is None:
            self.close()
        else:
            with contextlib.suppress(SinkError):
                self.close()

    def write(self, record: Mapping[str, object]) -> None:
        """Queue one record as one :func:`json_line`; write the queue every
        ``flush_every`` records, or sooner when its lines are large."""
        if self._stream is None:
            raise SinkError(f"{self._name} is not open")
        line = json_line(record)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if len(self._pending) >= self._flush_every or self._pending_bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write every queued line and flush the stream. The queue is emptied
        only once written: after a failure (SinkError), a later flush or
        close writes its lines again."""
        if self._stream is None:
            return
        try:
            # Line by line, not joined: a joined copy of large lines would double them.
            self._stream.writelines(self._pending)
            self._stream.flush()
        except OSError as exc:
            raise SinkError(f"cannot write {self._name}: {exc.strerror or exc}") from exc
        self._pending = []
        self._pending_bytes = 0

    def close(self) -> None:
        """Flush, then close the file; safe to call twice."""
        stream = self._stream
        if stream is None:
            return
        try:
            self.flush()
        except BaseException:
            self._release(stream, quietly=True)
            raise
        self._release(stream, quietly=False)

    def _release(self, stream: BinaryIO, *, quietly: bool) -> None:
        self._stream = None
        self._closed = True
        if not self._owned:
            return
        try:
            stream.close()
        except OSError as exc:
            if not quietly:
                raise SinkError(f"cannot close {self._name}: {exc.strerror or exc}") from exc
