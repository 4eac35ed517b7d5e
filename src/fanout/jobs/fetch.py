"""The ``fanout fetch`` job: inputs → engine → JSONL, files and statistics.

A thin layer over :class:`fanout.Fetcher` that the CLI (and the demo) drive:
exactly one JSONL record per input line, whether it was fetched, rejected
before fetching (a bad line) or skipped as a duplicate. With a journal
(``--journal``), one record per input *key* over all runs: keys recorded by an
earlier run are skipped, duplicates are skipped silently, and the output is
kept exact across crashes (see :mod:`fanout.journal`).

Nothing is written on the event loop: records go to a writer thread
(:mod:`fanout.output.writer`), bodies under ``--out-dir`` to a thread of their own,
so a slow disk or a slow reader never delays the requests in flight. A body
that cannot be saved makes its record a ``write`` failure and the run goes
on; an output or journal that cannot be written stops the run with
:class:`~fanout.errors.WriteError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from fanout.config import FetcherConfig
from fanout.engine import Fetcher
from fanout.errors import ConfigError, SinkError
from fanout.httpsyntax import method_problem
from fanout.inputs.blocking_input import ThreadedReader, reads_block
from fanout.inputs.sources import (
    Deduper,
    Rejected,
    check_request,
    open_input,
    read_jsonl_requests,
    read_url_lines,
    shown_input,
)
from fanout.jobs.fetch_output import Record, _JournalOutput, _Output, _PlainOutput
from fanout.models import Request, Result
from fanout.output.body_saver import _Saver
from fanout.output.line_output import output_name
from fanout.output.records import duplicate_record, rejected_record, result_record
from fanout.output.stats import RunStats, Summary

if TYPE_CHECKING:  # the journal (and sqlite3) is imported only by journaled runs
    from fanout.journal import InputItem, Journal, JournaledOutput, Verdict

__all__ = ["FetchJob", "JobOutcome", "count_inputs", "run_fetch_job"]

BodyMode = Literal["none", "text", "json", "base64"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchJob:
    """Everything one ``fanout fetch`` run needs, already checked: a method
    (or, in ``config``, a header) that HTTP does not allow raises ConfigError
    here, not mid-run.

    ``retry_failed`` (with ``journal``): None fetches no recorded key again; an
    empty set fetches again every key that failed in an earlier run; a set of
    :class:`~fanout.ErrorKind` values only the keys that failed with one of them.

    ``workers`` above 1 fetches in that many processes, each with its share of
    the concurrency and the hosts its own (see :mod:`fanout.jobs.workers`);
    this process still reads the input and writes every record.
    """

    urls: tuple[str, ...] = ()
    input_path: str | None = None
    jsonl_path: str | None = None
    output: str = "-"
    out_dir: Path | None = None
    ordered: bool = False
    fail_fast: bool = False
    dedupe: bool = True
    body: BodyMode = "none"
    method: str = "GET"
    data: bytes | None = None
    config: FetcherConfig = field(default_factory=FetcherConfig)
    journal: Path | None = None
    retry_failed: frozenset[str] | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        problem = method_problem(self.method)
        if problem is not None:
            raise ConfigError(problem)
        workers = self.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        if workers > self.config.limits.concurrency:
            raise ConfigError(
                f"{workers} workers need a concurrency of at least {workers}"
                f" (each takes a share of it), got {self.config.limits.concurrency}"
            )

    def input_blocks(self) -> bool:
        """Whether an input file's reads can wait on another program (stdin from
        a pipe or a terminal, a FIFO): then it is read in a thread."""
        return any(
            path is not None and reads_block(path) for path in (self.input_path, self.jsonl_path)
        )

    def check_inputs(self) -> None:
        """Raise SourceError now, naming the file, if an input file cannot be
        opened. A FIFO is not opened here: that would take its writer's data."""
        for path in (self.input_path, self.jsonl_path):
            if path is not None and path != "-" and not reads_block(path):
                with open_input(path):
                    pass


@dataclass(slots=True)
class JobOutcome:
    """How a job ended: its summary and whether it stopped early."""

    summary: Summary
    stopped_early: bool = False


def _inputs(job: FetchJob) -> Iterator[Request | Rejected]:
    """Every input item in order: URL arguments, then -i lines, then JSONL lines.

    ``-X`` and ``--data`` apply to URLs from arguments and ``-i``; a JSONL
    request says its own method and body.
    """
    overrides: dict[str, object] = {}
    if job.method != "GET":
        overrides["method"] = job.method
    if job.data is not None:
        overrides["body"] = job.data
    for number, url in enumerate(job.urls, start=1):
        request = Request(url, meta={"line": number}, **overrides)  # type: ignore[arg-type]
        failure = check_request(request)
        if failure is not None:
            text = shown_input(url)
            yield Rejected(line=number, text=text, kind=failure.kind, reason=failure.message)
        else:
            yield request
    if job.input_path is not None:
        with open_input(job.input_path) as stream:
            for item in read_url_lines(stream):
                if overrides and isinstance(item, Request):
                    item = dataclasses.replace(item, **overrides)  # type: ignore[arg-type]
                yield item
    if job.jsonl_path is not None:
        with open_input(job.jsonl_path) as stream:
            yield from read_jsonl_requests(stream)


def count_inputs(job: FetchJob) -> int | None:
    """How many records the job will write, when that is cheap to know (no
    stdin, no FIFO)."""
    if "-" in (job.input_path, job.jsonl_path) or job.input_blocks():
        return None
    total = len(job.urls)
    for path in (job.input_path, job.jsonl_path):
        if path is None:
            continue
        with open_input(path) as stream:
            for raw in stream:
                text = raw.strip()
                if text and not (path == job.input_path and text.startswith(b"#")):
                    total += 1
    return total


class _Job:
    """The state of one running job."""

    def __init__(
        self,
        job: FetchJob,
        output: _Output,
        stats: RunStats,
        journal: _Journaling | None,
        staging: Path | None = None,
    ) -> None:
        self.job = job
        self.output = output
        self.stats = stats
        self.journal = journal
        self.deduper = Deduper() if job.dedupe and journal is None else None
        # --ordered: records of lines that sent no request wait for the results before them
        self.held: deque[tuple[int, Record, InputItem | None, str | None]] = deque()
        self.saver = None if job.out_dir is None else _Saver(job.out_dir, staging, self.record)
        self.failed_any = False  # a fetched result failed (for --fail-fast)

    @property
    def full(self) -> bool:
        """Whether the writers' backlogs are at their bounds (await :meth:`room`)."""
        return self.output.full or (self.saver is not None and self.saver.full)

    async def room(self) -> None:
        """Wait until the writers have room; raise WriteError if the output failed."""
        if self.saver is not None:
            await self.saver.room()
        await self.output.room()

    def take(self, result: Result) -> None:
        """Record a result: at once, or once its body is saved (with --out-dir)."""
        if self.saver is not None:
            self.saver.add(result)
        else:
            self.record(result)

    async def finish(self, *, stopped: bool) -> None:
        """Emit every record still waiting (held ones too unless ``stopped``) and
        wait until the output has written them."""
        if self.saver is not None:
            try:
                await self.saver.drain()
            finally:
                self.saver.close()
        if not stopped:
            self.release_held(None)
        await self.output.flush()

    async def requests(self) -> AsyncIterator[Request]:
        """Requests to fetch, writing records for the lines that need no request."""
        for item in _inputs(self.job):
            if (request := self._to_send(item)) is not None:
                yield request
            elif self.full:  # a long run of lines that need no request
                await self.room()

    async def streamed_requests(self) -> AsyncIterator[Request]:
        """:meth:`requests` of inputs whose reads can block (a pipe, a terminal),
        read in a thread so a pause of the producer holds up nothing in flight."""
        async with contextlib.aclosing(ThreadedReader(_inputs(self.job))) as inputs:
            async for item in inputs:
                if (request := self._to_send(item)) is not None:
                    yield request
                elif self.full:
                    await self.room()

    def _to_send(self, item: Request | Rejected) -> Request | None:
        """The request to send for an input item, or None once the record of a
        line that needs none (rejected, a duplicate) is written."""
        if isinstance(item, Rejected):
            self._reject(item)
            return None
        if self.deduper is not None:
            first = self.deduper.first_line_of(item.id, _line(item))
            if first is not None:
                self.stats.duplicates += 1
                self._hold_or_emit(_line(item), duplicate_record(item, first), None, None)
                return None
        return item

    async def journaled_requests(self) -> AsyncIterator[Request]:
        """Like :meth:`requests`, with keys classified by the journal in batches
        (cut short when input that can block has no more lines ready)."""
        journaling = self.journal
        assert journaling is not None
        batch: list[Request | Rejected] = []
        inputs = _inputs(self.job)
        reader = ThreadedReader(inputs) if self.job.input_blocks() else None
        try:
            while True:
                item = next(inputs, None) if reader is None else await anext(reader, None)
                if item is not None:
                    batch.append(item)
                waiting = reader is not None and not reader.ready
                if batch and (item is None or waiting or len(batch) >= _CLASSIFY_BATCH):
                    # the journal makes each input's key, hiding credentials
                    keys = [(entry, _entry_line(entry)) for entry in batch]
                    verdicts = await journaling.classify(keys)
                    for entry, verdict in zip(batch, verdicts, strict=True):
                        if verdict.action == "skip":
                            self.stats.already_done += 1
                        elif verdict.action == "duplicate" and self.job.dedupe:
                            self.stats.duplicates += 1
                        elif isinstance(entry, Rejected):
                            self._reject(entry)
                        else:
                            yield entry
                    batch = []
                    if self.full:
                        await self.room()
                if item is None:
                    return
        finally:
            if reader is not None:
                reader.close()

    def _reject(self, item: Rejected) -> None:
        kind = str(item.kind)
        self.stats.add_rejected(kind)
        keyed = item if self.journal is not None else None
        self._hold_or_emit(item.line, rejected_record(item), keyed, kind)

    def _hold_or_emit(
        self, line: int, record: Record, keyed: InputItem | None, failed: str | None
    ) -> None:
        if self.job.ordered:
            self.held.append((line, record, keyed, failed))
        else:
            self.output.emit(record, keyed, failed)

    def release_held(self, before: int | None) -> None:
        """Write held records of lines before ``before`` (all when None)."""
        held = self.held
        while held and (before is None or held[0][0] < before):
            _, record, keyed, failed = held.popleft()
            self.output.emit(record, keyed, failed)

    def record_line(
        self,
        request: Request,
        line: bytes,
        ok: bool,
        status: int | None,
        error: str | None,
        attempts: int,
        size: int,
        elapsed: float,
    ) -> None:
        """:meth:`record` of a result a worker process fetched: its record
        already encoded, and its figures for the counters."""
        if self.job.ordered:
            self.release_held(_line(request))
        self.stats.add_counts(ok, status, error, attempts, size, elapsed)
        if not ok:
            self.failed_any = True
        failed = None if error is None or ok else error
        self.output.emit_line(line, request if self.journal is not None else None, failed)

    def record(self, result: Result, path: str | None = None) -> None:
        """Count the result and emit its record (``path``: where its body was saved)."""
        job = self.job
        if job.ordered:
            self.release_held(_line(result.request))
        self.stats.add(result)
        if not result.ok:
            self.failed_any = True
        record = result_record(result, path=path, body_mode=job.body)
        failed = None if result.error is None or result.ok else str(result.error.kind)
        keyed = result.request if self.journal is not None else None
        self.output.emit(record, keyed, failed)


_CLASSIFY_BATCH = 256


class _Journaling:
    """A journaled run: the journal, its writer thread and this run's id."""

    def __init__(self, journal: Journal, out: JournaledOutput, run: int, job: FetchJob) -> None:
        self.journal = journal
        self.out = out
        self.run = run
        self.retry_failed = job.retry_failed

    async def classify(self, keys: list[tuple[InputItem, int]]) -> list[Verdict]:
        return await self.out.call(self.journal.classify_inputs, keys, self.run, self.retry_failed)


def _line(request: Request) -> int:
    meta = request.meta
    if isinstance(meta, dict):
        line = meta.get("line")
        if isinstance(line, int):
            return line
    return 0


def _entry_line(entry: Request | Rejected) -> int:
    return entry.line if isinstance(entry, Rejected) else _line(entry)


async def run_fetch_job(
    job: FetchJob,
    *,
    stats: RunStats | None = None,
    on_fetcher: Callable[[Fetcher], None] | None = None,
    on_record: Callable[[], None] | None = None,
) -> JobOutcome:
    """Run ``job`` to the end (or the first failure with ``fail_fast``).

    Records are written as results arrive, so an interrupted run (Ctrl-C
    cancels this coroutine) keeps everything fetched before it. An output or
    journal that cannot be written raises :class:`~fanout.errors.WriteError`
    (with a journal, nothing is marked done that was not written). With
    ``out_dir``, the temporary files that killed runs left there are removed
    first (see :func:`fanout.output.files.staging_dir`). ``on_fetcher`` is handed the
    Fetcher once it is open and ``on_record`` is called after each result (the
    progress display uses both).
    """
    stats = stats or RunStats()
    with contextlib.ExitStack() as stack:
        journal = None
        if job.journal is not None:
            from fanout.journal import Journal

            scheme = "jsonl" if job.jsonl_path else "url"
            journal = stack.enter_context(Journal.open(job.journal, key_scheme=scheme))
        staging = None
        if job.out_dir is not None:
            from fanout.output.files import staging_dir

            staging = stack.enter_context(staging_dir(job.out_dir))
        if journal is None:
            outcome = await _run_plain(job, stats, staging, on_fetcher, on_record)
        else:
            outcome = await _run_journaled(job, journal, stats, staging, on_fetcher, on_record)
    return outcome


async def _run_plain(
    job: FetchJob,
    stats: RunStats,
    staging: Path | None,
    on_fetcher: Callable[[Fetcher], None] | None,
    on_record: Callable[[], None] | None,
) -> JobOutcome:
    with _open_output(job.output, "wb") as stream:
        output = _PlainOutput(stream, output_name(job.output))
        try:
            state = _Job(job, output, stats, None, staging)
            requests = state.streamed_requests() if job.input_blocks() else state.requests()
            stopped = await _fetch(job, state, requests, on_fetcher, on_record)
        finally:
            await output.close()
    return JobOutcome(stats.summary(), stopped_early=stopped)


async def _run_journaled(
    job: FetchJob,
    journal: Journal,
    stats: RunStats,
    staging: Path | None,
    on_fetcher: Callable[[Fetcher], None] | None,
    on_record: Callable[[], None] | None,
) -> JobOutcome:
    from fanout.journal import JournaledOutput, repair_output

    to_file = job.output != "-"
    journal.check_output(job.output)  # a journal's records go to one output
    if to_file:
        offset = journal.output_offset()
        stats.repaired_bytes = repair_output(Path(job.output), offset, journal)
        _rewrite_temporary(Path(job.output)).unlink(missing_ok=True)  # a killed rewrite's
    journal.claim_output(job.output)
    run = journal.begin_run()
    if job.retry_failed is not None:
        journal.set_output_dirty(True)  # retried keys get a second line until the rewrite
    with _open_output(job.output, "ab") as stream:
        out = JournaledOutput(journal, stream, track_offset=to_file, name=output_name(job.output))
        try:
            journaling = _Journaling(journal, out, run, job)
            state = _Job(job, _JournalOutput(out), stats, journaling, staging)
            stopped = await _fetch(job, state, state.journaled_requests(), on_fetcher, on_record)
        finally:
            await out.close()
    if to_file and journal.output_dirty and not stopped:
        await asyncio.to_thread(_rewrite_output, journal, Path(job.output))
    return JobOutcome(stats.summary(), stopped_early=stopped)


@contextlib.contextmanager
def _open_output(output: str, mode: Literal["wb", "ab"]) -> Iterator[BinaryIO]:
    if output == "-":
        yield sys.stdout.buffer
        return
    try:
        stream = Path(output).open(mode)  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise SinkError(f"cannot open '{output}' for writing: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def _rewrite_temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.rewrite")


def _rewrite_output(journal: Journal, path: Path) -> None:
    """Replace the output with one line per key from the journal (atomically)."""
    from fanout.journal import export

    temporary = _rewrite_temporary(path)
    with temporary.open("wb") as stream:
        export(journal, stream)
        stream.flush()
        size = stream.tell()
    temporary.replace(path)
    journal.record([], size)
    journal.set_output_dirty(False)


async def _fetch(
    job: FetchJob,
    state: _Job,
    requests: AsyncIterator[Request],
    on_fetcher: Callable[[Fetcher], None] | None,
    on_record: Callable[[], None] | None,
) -> bool:
    """Stream the requests through a Fetcher into the job's output; True if stopped early."""
    if job.workers > 1:
        from fanout.jobs.workers import fetch_in_workers

        stopped = False
        try:
            stopped = await fetch_in_workers(job, state, requests, on_record)
        finally:
            await state.finish(stopped=stopped)
        return stopped
    keep_body = job.out_dir is not None or job.body != "none"
    stopped = False
    try:
        async with Fetcher(job.config, keep_body=keep_body) as fetcher:
            state.stats.transport = fetcher.config.transport
            if on_fetcher is not None:
                on_fetcher(fetcher)
            stream = fetcher.stream(requests, ordered=job.ordered)
            async with contextlib.aclosing(stream):
                async for result in stream:
                    state.take(result)
                    if state.full:  # waits for the writers, not for the requests in flight
                        await state.room()
                    if on_record is not None:
                        on_record()
                    if job.fail_fast and state.failed_any:
                        stopped = True
                        break
            state.stats.dns = fetcher.dns_stats
            state.stats.hosts = fetcher.host_stats()
    finally:
        await state.finish(stopped=stopped)
    return stopped
