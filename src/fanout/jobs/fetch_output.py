"""Where a fetch job's records go, on a writer thread: plain JSONL, or JSONL
kept exact by a journal (:mod:`fanout.journal`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Protocol

from fanout.output.line_output import LineOutput
from fanout.output.records import json_line
from fanout.output.writer import WriterThread

if TYPE_CHECKING:  # the journal (and sqlite3) is imported only by journaled runs
    from fanout.journal import InputItem, JournaledOutput


Record = dict[str, object]


# Plain JSONL: groups of up to 256 lines, at most 1,024 lines (or 4 MiB) waiting;
# lines go to the thread 5 ms after the first waits (fewer wake-ups, fewer writes).
_PLAIN_GROUP, _PLAIN_BACKLOG, _PLAIN_DELAY = 256, 1024, 0.005


class _Output(Protocol):
    """Where records go, on a writer thread: plain JSONL, or JSONL kept exact
    by a journal (which records the key of ``keyed``, the input the record is
    about). :meth:`emit` never blocks and never raises; a failure to write is
    raised by :meth:`room`, :meth:`flush` or :meth:`close`."""

    @property
    def full(self) -> bool:
        """Whether the caller should await :meth:`room` (also true once a write failed)."""

    def emit(self, record: Record, keyed: InputItem | None, failed: str | None) -> None: ...
    def emit_line(self, line: bytes, keyed: InputItem | None, failed: str | None) -> None: ...
    async def room(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class _PlainOutput:
    """JSONL to a file or stdout, written in groups by a thread of its own."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.writer: WriterThread[bytes] = WriterThread(
            LineOutput(stream, name).write,
            name="fanout-output",
            group=_PLAIN_GROUP,
            backlog=_PLAIN_BACKLOG,
            hand_over_after=_PLAIN_DELAY,
        )

    @property
    def full(self) -> bool:
        return self.writer.full

    def emit(self, record: Record, keyed: InputItem | None, failed: str | None) -> None:
        line = json_line(record)
        self.writer.put(line, len(line))

    def emit_line(self, line: bytes, keyed: InputItem | None, failed: str | None) -> None:
        self.writer.put(line, len(line))

    async def room(self) -> None:
        await self.writer.room()

    async def flush(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        await self.writer.close()


class _JournalOutput:
    def __init__(self, out: JournaledOutput) -> None:
        from fanout.journal import State

        self.out = out
        self._done, self._failed = State.DONE, State.FAILED

    @property
    def full(self) -> bool:
        return self.out.full

    def emit(self, record: Record, keyed: InputItem | None, failed: str | None) -> None:
        line = json_line(record)
        self.out.add(line, keyed, self._done if failed is None else self._failed, failed)

    def emit_line(self, line: bytes, keyed: InputItem | None, failed: str | None) -> None:
        self.out.add(line, keyed, self._done if failed is None else self._failed, failed)

    async def room(self) -> None:
        await self.out.room()

    async def flush(self) -> None:
        await self.out.flush()

    async def close(self) -> None:
        await self.out.close()
