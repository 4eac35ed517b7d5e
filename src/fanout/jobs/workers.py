"""``fanout fetch --workers N``: the fetching spread over N processes, one writer.

This process (the parent) reads the input, classifies it with the journal and
writes every record, the journal and the summary, as one process does. Each
request goes to the worker that owns its host: a stable hash (CRC-32) of the
engine's host key (scheme, host, port) modulo N, so per-host limits, rates and
cool-downs hold with no coordination. Each worker (:mod:`fanout.jobs.worker`)
runs one unchanged :class:`~fanout.Fetcher` with its share of ``concurrency``,
``rate`` and ``window``, and the full per-host limits; it saves bodies under
``--out-dir`` itself and sends back each record already encoded.

Flow control: a worker is given at most its read-ahead (window plus parked
requests) of requests whose records are not yet written; a slow output stops
the parent reading results, which stops the workers. Memory is flat in the
number of URLs.

Faults: a worker that dies ends the job (:class:`WorkerError`, one line): the
others are stopped, what they fetched is written, and the dead worker's
requests stay pending in the journal for the next run. A signal (the run is
cancelled) stops every worker the same way. Every wait has a deadline, and a
worker whose parent is gone exits (end of file on its standard input).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

from fanout.config import FetcherConfig
from fanout.errors import FanoutError
from fanout.jobs.worker import ResultTuple, encode_request, frame, read_frame
from fanout.models import Failure, Request
from fanout.urls import HostKey, host_key, parse_request_url

if TYPE_CHECKING:
    from fanout.jobs.fetch import FetchJob, _Job

__all__ = ["WorkerError", "fetch_in_workers", "shard_of", "worker_configs"]

# Seconds stopped workers get to send back what they fetched, then to exit.
STOP_DEADLINE: Final = 10.0
EXIT_DEADLINE: Final = 5.0
# Requests sent to a worker in one frame at most (fewer when the input pauses).
_SEND_BATCH: Final = 256
_SHARD_CACHE: Final = 65_536


class WorkerError(FanoutError):
    """A worker process of ``fanout fetch --workers`` died: the job stopped."""


def shard_of(key: HostKey, workers: int) -> int:
    """The worker that owns host ``key``: stable across runs and machines."""
    scheme, host, port = key
    return zlib.crc32(f"{scheme}://{host}:{port}".encode("utf-8", "surrogatepass")) % workers


def worker_configs(config: FetcherConfig, workers: int) -> list[FetcherConfig]:
    """Each worker's config: its share of ``concurrency``, ``rate`` and
    ``window`` (and of ``parked`` when given); per-host limits in full."""
    limits = config.limits
    configs = []
    for number in range(workers):
        concurrency = limits.concurrency // workers + (number < limits.concurrency % workers)
        share = dataclasses.replace(
            limits,
            concurrency=concurrency,
            rate=None if limits.rate is None else limits.rate / workers,
            window=None if limits.window is None else max(1, limits.window // workers),
            parked=None if limits.parked is None else limits.parked // workers,
        )
        configs.append(dataclasses.replace(config, limits=share))
    return configs


def _fields(config: FetcherConfig) -> dict[str, Any]:
    """The config's fields, as pickle takes them (its headers are a read-only view)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields["headers"] = dict(config.headers or {})
    return fields


class _Worker:
    """One worker process, seen from the parent."""

    def __init__(self, number: int, process: asyncio.subprocess.Process, credits: int) -> None:
        self.number = number
        self.process = process
        assert process.stdin is not None
        assert process.stdout is not None
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.credits = credits  # requests it may be sent before records are written
        self.room = asyncio.Event()
        self.batch: list[Any] = []
        self.ended: tuple[dict[str, int] | None, list[Any]] | None = None
        self.stopping = False

    def send(self, message: object) -> None:
        if self.stdin.is_closing():
            return
        # it died: its reader says so (uvloop raises RuntimeError on a closed pipe)
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.stdin.write(frame(message))

    def send_batch(self) -> None:
        if self.batch:
            self.send(("req", self.batch))
            self.batch = []

    def stop(self) -> None:
        if not self.stopping and self.ended is None:
            self.stopping = True
            self.send_batch()
            self.send(("stop",))

    def how_it_ended(self) -> str:
        code = self.process.returncode
        if code is None:
            return "closed its pipe"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
            return f"was killed by signal {-code}"
        return f"exited with status {code}"


class _Died(Exception):
    def __init__(self, worker: _Worker) -> None:
        self.worker = worker


class _Pool:
    """The workers of one job, and the records on their way to the output."""

    def __init__(self, job: FetchJob, state: _Job, on_record: Callable[[], None] | None) -> None:
        self.job = job
        self.state = state
        self.on_record = on_record
        self.workers: list[_Worker] = []
        self.pending: dict[int, tuple[Request, _Worker]] = {}
        self.waiting: dict[int, ResultTuple] = {}  # --ordered: results before their turn
        self.next_index = 0  # --ordered: the index whose record is written next
        self.flush_scheduled = False
        self.fail_fast = asyncio.Event()
        self.shards: dict[HostKey, int] = {}

    async def start(self) -> None:
        job = self.job
        keep_body = job.out_dir is not None or job.body != "none"
        staging = None if job.out_dir is None else job.out_dir / ".fanout-tmp"
        for number, config in enumerate(worker_configs(job.config, job.workers)):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fanout.jobs.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # a session (process group) of its own: the terminal's Ctrl-C is the
                # parent's alone (a worker still importing would die of it, with a
                # traceback); uvloop takes no process_group
                start_new_session=True,
            )
            limits = config.limits
            worker = _Worker(number, process, limits.effective_window + limits.effective_parked)
            self.workers.append(worker)
            setup = {
                "config": _fields(config),
                "body": job.body,
                "out_dir": job.out_dir,
                "staging": staging,
                "keep_body": keep_body,
            }
            worker.send(("setup", setup))

    def _shard(self, request: Request) -> _Worker:
        parsed = parse_request_url(request)
        if isinstance(parsed, Failure):  # its worker makes it a failed result
            return self.workers[0]
        key = host_key(parsed)
        number = self.shards.get(key)
        if number is None:
            number = shard_of(key, len(self.workers))
            if len(self.shards) >= _SHARD_CACHE:
                self.shards.clear()
            self.shards[key] = number
        return self.workers[number]

    def _flush(self) -> None:
        self.flush_scheduled = False
        for worker in self.workers:
            worker.send_batch()

    async def feed(self, requests: AsyncIterator[Request]) -> None:
        """Send each request to its worker, within each worker's credits; then
        tell each there are no more (also when the input fails: the requests
        read before are finished, as in one process)."""
        index = 0
        loop = asyncio.get_running_loop()
        try:
            async for request in requests:
                worker = self._shard(request)
                while worker.credits <= 0:
                    self._flush()
                    worker.room.clear()
                    await worker.room.wait()
                worker.credits -= 1
                self.pending[index] = (request, worker)
                worker.batch.append(encode_request(index, request))
                index += 1
                if len(worker.batch) >= _SEND_BATCH:
                    worker.send_batch()
                elif not self.flush_scheduled:
                    self.flush_scheduled = True
                    loop.call_soon(self._flush)
        finally:
            self._flush()
            for worker in self.workers:
                worker.send(("end",))

    async def collect(self, worker: _Worker) -> None:
        """Write the records ``worker`` sends back, until its last frame."""
        state, ordered = self.state, self.job.ordered
        while True:
            try:
                message = await read_frame(worker.stdout)
            except (asyncio.IncompleteReadError, ConnectionError):
                raise _Died(worker) from None
            if message[0] == "end":
                worker.ended = (message[1], message[2])
                return
            for item in message[1]:
                if ordered:
                    self._in_order(item)
                else:
                    self._write(item)
            if self.on_record is not None:
                self.on_record()
            if self.job.fail_fast and state.failed_any:
                self.fail_fast.set()
            if state.full:
                await state.room()

    def _in_order(self, item: ResultTuple) -> None:
        waiting = self.waiting
        waiting[item[0]] = item
        while (ready := waiting.pop(self.next_index, None)) is not None:
            self._write(ready)
            self.next_index += 1

    def flush_waiting(self) -> None:
        """--ordered, once stopped: write the results that wait for missing ones."""
        for index in sorted(self.waiting):
            self._write(self.waiting.pop(index))

    def _write(self, item: ResultTuple) -> None:
        index, line, ok, status, error, attempts, size, elapsed = item
        request, worker = self.pending.pop(index)
        self.state.record_line(request, line, ok, status, error, attempts, size, elapsed)
        worker.credits += 1
        if worker.credits == 1:
            worker.room.set()

    def unfinished(self, worker: _Worker) -> int:
        return sum(1 for _, owner in self.pending.values() if owner is worker)

    def merge_stats(self) -> None:
        """The run's DNS counters and busiest hosts, over every worker."""
        ends = [worker.ended for worker in self.workers if worker.ended is not None]
        dns: dict[str, int] | None = None
        for counters, _ in ends:
            if counters is not None:
                dns = dns or {}
                for name, value in counters.items():
                    dns[name] = dns.get(name, 0) + value
        hosts = [host for _, shots in ends for host in shots]
        hosts.sort(key=lambda h: (h["in_flight"], h["requests_per_s"], h["requests"]), reverse=True)
        self.state.stats.dns = dns
        self.state.stats.hosts = hosts[:10]
        self.state.stats.transport = self.job.config.transport  # each worker's

    async def stop(self, collectors: list[asyncio.Task[None]]) -> None:
        """Stop every worker; write what they send back, for at most STOP_DEADLINE."""
        for worker in self.workers:
            worker.stop()
        running = [task for task in collectors if not task.done()]
        if running:
            await asyncio.wait(running, timeout=STOP_DEADLINE)
        for task in running:
            task.cancel()
        for task in collectors:
            with contextlib.suppress(BaseException):
                await task
        if self.job.ordered:
            self.flush_waiting()

    async def reap(self) -> None:
        """Close the workers' pipes and wait for them to exit; kill the late."""
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stdin.close()

        async def wait(worker: _Worker) -> None:
            try:
                await asyncio.wait_for(worker.process.wait(), EXIT_DEADLINE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()

        await asyncio.gather(*(wait(worker) for worker in self.workers))


async def fetch_in_workers(
    job: FetchJob,
    state: _Job,
    requests: AsyncIterator[Request],
    on_record: Callable[[], None] | None,
) -> bool:
    """Fetch ``requests`` in ``job.workers`` processes into ``state``'s output;
    True if stopped early (``--fail-fast``). Raises :class:`WorkerError` when
    a worker dies."""
    pool = _Pool(job, state, on_record)
    feeder: asyncio.Task[None] | None = None
    collectors: list[asyncio.Task[None]] = []
    clean = False
    try:
        await pool.start()
        feeder = asyncio.create_task(pool.feed(requests), name="fanout-feeder")
        collectors = [asyncio.create_task(pool.collect(worker)) for worker in pool.workers]
        stopper = asyncio.create_task(pool.fail_fast.wait())
        try:
            await _until_done(feeder, collectors, stopper)
        finally:
            stopper.cancel()
        clean = not pool.fail_fast.is_set()
    except _Died as died:
        worker = died.worker
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.process.wait(), EXIT_DEADLINE)
        unfinished = pool.unfinished(worker)
        raise WorkerError(
            f"worker {worker.number + 1} of {job.workers} (pid {worker.process.pid})"
            f" {worker.how_it_ended()}: the job stopped; {unfinished:,} of its requests"
            " have no record (with --journal they stay pending: run again to fetch them)"
        ) from None
    finally:
        if not clean:
            await _stop(pool, feeder, collectors)
        pool.merge_stats()
        await pool.reap()
    return not clean


async def _until_done(
    feeder: asyncio.Task[None], collectors: list[asyncio.Task[None]], stopper: asyncio.Task[bool]
) -> None:
    """Until every worker sent its last frame, or --fail-fast stops the run.
    An error of a collector is raised at once; one of the input (the
    feeder's) once the requests read before it are done."""
    waiting: set[asyncio.Task[Any]] = {feeder, *collectors, stopper}
    while any(not task.done() for task in collectors):
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopper:
                return
            if task is not feeder:
                task.result()  # raises its error
    feeder.result()


async def _stop(
    pool: _Pool, feeder: asyncio.Task[None] | None, collectors: list[asyncio.Task[None]]
) -> None:
    if feeder is not None and not feeder.done():
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
    await pool.stop(collectors)
