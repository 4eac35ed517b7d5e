"""The ``fanout fetch`` job: inputs → engine → JSONL, files and statistics.

A thin layer over :class:`fanout.Fetcher` that the CLI (and the demo) drive:
exactly one JSONL record per input line, whether it was fetched, rejected
before fetching (a bad line) or skipped as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fanout.engine import DEFAULT_USER_AGENT, Fetcher
from fanout.files import safe_relpath, write_atomic
from fanout.models import Request, Result
from fanout.policy import Caps, Limits, RetryPolicy, Timeouts
from fanout.records import JsonlWriter, duplicate_record, rejected_record, result_record
from fanout.sources import (
    Deduper,
    Rejected,
    check_url,
    open_input,
    read_jsonl_requests,
    read_url_lines,
)
from fanout.stats import RunStats, Summary

__all__ = ["FetchJob", "JobOutcome", "count_inputs", "run_fetch_job"]

BodyMode = Literal["none", "text", "json", "base64"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchJob:
    """Everything one ``fanout fetch`` run needs, already checked."""

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
    headers: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = DEFAULT_USER_AGENT
    limits: Limits = field(default_factory=Limits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    caps: Caps = field(default_factory=Caps)

    def check_inputs(self) -> None:
        """Raise SourceError now, naming the file, if an input file cannot be opened."""
        for path in (self.input_path, self.jsonl_path):
            if path is not None and path != "-":
                with open_input(path):
                    pass


@dataclass(slots=True)
class JobOutcome:
    """How a job ended: its summary and whether it stopped early."""

    summary: Summary
    stopped_early: bool = False


Record = dict[str, object]


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
        failure = check_url(url)
        if failure is not None:
            yield Rejected(line=number, text=url[:200], kind=failure.kind, reason=failure.message)
        else:
            yield Request(url, meta={"line": number}, **overrides)  # type: ignore[arg-type]
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
    """How many records the job will write, when that is cheap to know (no stdin)."""
    if "-" in (job.input_path, job.jsonl_path):
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

    def __init__(self, job: FetchJob, writer: JsonlWriter, stats: RunStats) -> None:
        self.job = job
        self.writer = writer
        self.stats = stats
        self.deduper = Deduper() if job.dedupe else None
        # --ordered: records of lines that sent no request wait for the results before them
        self.held: deque[tuple[int, Record]] = deque()

    def requests(self) -> Iterator[Request]:
        for item in _inputs(self.job):
            if isinstance(item, Rejected):
                self.stats.add_rejected(str(item.kind))
                self._skip(item.line, rejected_record(item))
                continue
            if self.deduper is not None:
                first = self.deduper.first_line_of(item.id, _line(item))
                if first is not None:
                    self.stats.duplicates += 1
                    self._skip(_line(item), duplicate_record(item, first))
                    continue
            yield item

    def _skip(self, line: int, record: Record) -> None:
        if self.job.ordered:
            self.held.append((line, record))
        else:
            self.writer.write(record)

    def release_held(self, before: int | None) -> None:
        """Write held records of lines before ``before`` (all when None)."""
        held = self.held
        while held and (before is None or held[0][0] < before):
            self.writer.write(held.popleft()[1])

    async def record(self, result: Result) -> None:
        job = self.job
        path = None
        if job.out_dir is not None and result.ok and result.body is not None:
            content_type = result.headers.get("Content-Type")
            relpath = safe_relpath(result.url, content_type=content_type)
            written = await asyncio.to_thread(write_atomic, job.out_dir, relpath, result.body)
            path = str(written)
        if job.ordered:
            self.release_held(_line(result.request))
        self.stats.add(result)
        self.writer.write(result_record(result, path=path, body_mode=job.body))


FLUSH_INTERVAL = 0.5


async def _flush_periodically(writer: JsonlWriter) -> None:
    """Records reach the file within FLUSH_INTERVAL even when results are slow to come."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        writer.flush()


def _line(request: Request) -> int:
    meta = request.meta
    if isinstance(meta, dict):
        line = meta.get("line")
        if isinstance(line, int):
            return line
    return 0


async def run_fetch_job(
    job: FetchJob,
    *,
    stats: RunStats | None = None,
    on_fetcher: Callable[[Fetcher], None] | None = None,
    on_record: Callable[[], None] | None = None,
) -> JobOutcome:
    """Run ``job`` to the end (or the first failure with ``fail_fast``).

    Records are written as results arrive, so an interrupted run (Ctrl-C
    cancels this coroutine) keeps everything fetched before it. ``on_fetcher``
    is handed the Fetcher once it is open and ``on_record`` is called after
    each record (the progress display uses both).
    """
    stats = stats or RunStats()
    keep_body = job.out_dir is not None or job.body != "none"
    stopped = False
    with JsonlWriter(job.output) as writer:
        state = _Job(job, writer, stats)
        try:
            async with Fetcher(
                limits=job.limits,
                retry=job.retry,
                timeouts=job.timeouts,
                caps=job.caps,
                headers=job.headers,
                user_agent=job.user_agent,
                keep_body=keep_body,
            ) as fetcher:
                if on_fetcher is not None:
                    on_fetcher(fetcher)
                stream = fetcher.stream(state.requests(), ordered=job.ordered)
                flusher = asyncio.create_task(_flush_periodically(writer))
                try:
                    async with contextlib.aclosing(stream):
                        async for result in stream:
                            await state.record(result)
                            if on_record is not None:
                                on_record()
                            if job.fail_fast and not result.ok:
                                stopped = True
                                break
                finally:
                    flusher.cancel()
                    await asyncio.wait([flusher])
        finally:
            if not stopped:
                state.release_held(None)
            writer.flush()
    return JobOutcome(stats.summary(), stopped_early=stopped)
