"""``fanout worker``: take requests from a Redis queue, fetch them with the
engine, commit exactly one result per key.

One worker is three tasks on one event loop:

- the source the :class:`~fanout.engine.Fetcher` reads: it takes entries in
  batches (the TAKE script: a dead worker's idle entries first, XAUTOCLAIM,
  then new ones, XREADGROUP), never holding more than its window of entries
  without a result;
- the committer: results go to Redis in batches, each batch one COMMIT
  script (set-if-absent of each key's record, XACK and XDEL of its entry), so
  a request fetched twice (reclaimed from a worker thought dead that then
  finished it too) keeps one result;
- the heartbeat: every few seconds the worker says it is alive and resets the
  idle time of the entries it holds, so only a dead (or stalled) worker's
  entries are reclaimed.

Every call to Redis is retried with backoff (0.05 s doubling to 2 s) while
Redis cannot be reached, for at most ``reconnect_for`` seconds: a Redis that
restarts with its data (AOF or RDB persistence) loses the job nothing. A call
that Redis ran but whose answer was lost is harmless to repeat: a commit is
idempotent, and entries taken but never seen are reclaimed after
``reclaim_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fanout.config import FetcherConfig
from fanout.engine.retry_after import parse_retry_after
from fanout.errors import ConfigError, QueueError, SourceError
from fanout.models import ErrorKind, Failure, Request, Result
from fanout.output.records import BodyMode, json_line, result_record
from fanout.redisq import politeness, scripts
from fanout.redisq.queue import (
    DEFAULT_QUEUE,
    GROUP,
    HEARTBEAT_EVERY,
    QueueKeys,
    check_meta,
    check_server,
    client_options,
    decode_request,
    ensure_async,
    require_redis,
    shown_url,
    unreachable,
)

if TYPE_CHECKING:
    import redis.asyncio

    from fanout.engine import Fetcher

__all__ = ["Worker", "WorkerStats"]

logger = logging.getLogger("fanout")

T = TypeVar("T")

_TAKE_MAX: Final = 256  # entries per TAKE call
_COMMIT_MAX: Final = 256  # results per COMMIT call
# seconds a commit waits for more results to join it: fewer round trips, for
# slot leases held that much longer and results durable that much later
_COMMIT_LINGER: Final = 0.01
_HEARTBEAT_MIN: Final = 0.05  # seconds: the shortest time between heartbeats
_HEARTBEAT_IDS: Final = 1000  # entry ids per HEARTBEAT call (Lua's unpack has a limit)
_HAND_BACK_DEADLINE: Final = 5.0  # seconds a stopping worker spends giving back its entries
_IDLE_MIN, _IDLE_MAX = 0.01, 0.5  # seconds between takes that found nothing
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
_QID, _QKEY = "_queue_id", "_queue_key"
_ASK_PER_HOST: Final = 32  # parked requests of one host asked for again in one call
_RATE_ASK_MS: Final = politeness.HORIZON_MS // 2
_SLOT_POLL: Final = 0.1  # seconds before asking again for a slot another worker holds
_COOL_HOSTS: Final = 64  # the busiest hosts whose cool-downs a heartbeat shares
_COOL_DOWN_STATUSES: Final = frozenset({429, 503})  # the entry and key of a request, in its meta


@dataclass(slots=True)
class WorkerStats:
    """What one worker did. ``results`` counts the results it committed that
    were kept; ``duplicates`` those dropped because the key already had one
    (another worker finished it first); ``abandoned`` the keys it gave up on
    (handed out too often); ``round_trips`` its calls to Redis."""

    taken: int = 0
    results: int = 0
    failed: int = 0
    duplicates: int = 0
    abandoned: int = 0
    round_trips: int = 0


@dataclass(slots=True)
class _Commit:
    entry: bytes
    key: bytes
    record: bytes
    kind: str
    host: str  # '' when none
    cool: int  # ms of cool-down its host asked for (Retry-After), or 0


class Worker:
    """Takes requests from the Redis queue ``queue`` at ``redis_url`` and
    fetches them with a :class:`~fanout.engine.Fetcher` of ``config``,
    committing one JSONL record per key (the schema of ``fanout fetch``).

    ``reclaim_after`` (seconds): an entry a worker took and has not
    heartbeated for that long is taken from it (the worker is thought dead).
    ``max_deliveries``: a key handed out more times than that without a
    result gets an ``abandoned`` error record instead of being fetched.
    ``exit_when_done``: :meth:`run` returns once the queue has nothing
    pending and nothing in flight (else it waits for more work until
    cancelled). ``out_dir``: save bodies there, as ``fanout fetch --out-dir``
    does (atomically, under a name derived from the key). ``reconnect_for``
    (seconds): how long Redis may be unreachable mid-run before
    :meth:`run` raises :class:`~fanout.errors.QueueError`.

    >>> worker = Worker("redis://127.0.0.1:6379/0", exit_when_done=True)
    >>> # stats = await worker.run()
    """

    def __init__(
        self,
        redis_url: str,
        *,
        queue: str = DEFAULT_QUEUE,
        config: FetcherConfig | None = None,
        out_dir: Path | None = None,
        body: BodyMode = "none",
        reclaim_after: float = 60.0,
        max_deliveries: int = 5,
        exit_when_done: bool = False,
        reconnect_for: float = 60.0,
        name: str | None = None,
    ) -> None:
        if not reclaim_after > 0:
            raise ConfigError(f"reclaim_after must be more than 0 seconds, got {reclaim_after}")
        if max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be at least 1, got {max_deliveries}")
        if not reconnect_for >= 0:
            raise ConfigError(f"reconnect_for must be 0 or more seconds, got {reconnect_for}")
        self.url = redis_url
        self.keys = QueueKeys(queue)
        self.config = config or FetcherConfig()
        self.out_dir = out_dir
        self.body: BodyMode = body
        self.reclaim_after = reclaim_after
        self.max_deliveries = max_deliveries
        self.exit_when_done = exit_when_done
        self.reconnect_for = reconnect_for
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self.stats = WorkerStats()
        limits = self.config.limits
        # entries held without a result: enough to keep every slot busy and
        # the engine's read-ahead fed; what a kill -9 leaves to reclaim
        self._window = limits.concurrency + max(limits.concurrency, 16)
        self._outstanding: dict[bytes, bytes] = {}  # entry id → key
        self._hosts: dict[bytes, str] = {}  # entry id → its host, for politeness
        self._stopping = asyncio.Event()  # the heartbeats end
        self._wake = asyncio.Event()  # an entry left _outstanding, or a request is ready
        # one politeness budget across the workers (fanout.redisq.politeness)
        rate = limits.per_host_rate
        self._per_host = limits.per_host or 0  # 0: no limit
        self._interval_ms = 0 if rate is None else math.ceil(1000 / rate)
        self._tolerance_ms = (limits.burst - 1) * self._interval_ms
        self._lease_ms = max(1, round(reclaim_after * 1000))
        self._parked: dict[str, deque[Request]] = {}  # refused by Redis, by host
        self._due: dict[str, float] = {}  # host → when to ask again (loop time)
        self._ready: deque[Request] = deque()  # granted, for the engine
        self._fetcher: Fetcher | None = None
        self._commits: asyncio.Queue[_Commit | None] = asyncio.Queue()
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, Any] = {}

    @property
    def held(self) -> int:
        """Entries this worker holds without a committed result."""
        return len(self._outstanding)

    async def run(self) -> WorkerStats:
        """Work until the queue is done (``exit_when_done``) or until cancelled.

        Raises :class:`~fanout.errors.QueueError` when Redis cannot be reached
        at start (or is older than 7), when the queue was made by a newer
        fanout, or when Redis stays unreachable for ``reconnect_for`` seconds.
        """
        require_redis()
        import redis
        import redis.asyncio as aredis

        try:
            client = aredis.Redis.from_url(self.url, **client_options())
        except ValueError as exc:
            raise QueueError(f"'{shown_url(self.url)[:200]}' is not a Redis URL: {exc}") from exc
        self._client = client
        try:
            try:
                check_server(await client.info("server"), self.url)
                await ensure_async(client, self.keys)
                check_meta(await client.hgetall(self.keys.meta), self.keys, self.url)
            except redis.RedisError as exc:
                raise unreachable(self.url, exc) from exc
            self._scripts = {
                name: client.register_script(source)
                for name, source in (
                    ("take", scripts.TAKE),
                    ("commit", scripts.COMMIT),
                    ("heartbeat", scripts.HEARTBEAT),
                    ("acquire", politeness.ACQUIRE),
                    ("hold", politeness.HOLD),
                    ("hand_back", scripts.HAND_BACK),
                )
            }
            await self._beat()
            with contextlib.ExitStack() as stack:
                staging = None
                if self.out_dir is not None:
                    from fanout.output.files import staging_dir

                    staging = stack.enter_context(staging_dir(self.out_dir))
                await self._work(staging)
        finally:
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(_HAND_BACK_DEADLINE):
                    await self._hand_back()
                    await client.zrem(self.keys.workers, self.name)
            await client.aclose()
        return self.stats

    async def _work(self, staging: Path | None) -> None:
        fetching = asyncio.create_task(self._fetch(staging))
        committing = asyncio.create_task(self._committer())
        beating = asyncio.create_task(self._heartbeats())
        tasks = (fetching, committing, beating)
        try:
            done, _ = await asyncio.wait(
                {fetching, committing}, return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                if (exc := task.exception()) is not None:
                    raise exc
            self._stopping.set()
            await beating
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, staging: Path | None) -> None:
        from fanout.engine import Fetcher
        from fanout.output.body_saver import _Saver

        saver = None if self.out_dir is None else _Saver(self.out_dir, staging, self._record)
        keep_body = self.out_dir is not None or self.body != "none"
        try:
            async with Fetcher(self.config, keep_body=keep_body) as fetcher:
                self._fetcher = fetcher
                stream = fetcher.stream(self._requests())
                async with contextlib.aclosing(stream):
                    async for result in stream:
                        if saver is None:
                            self._record(result)
                        else:
                            saver.add(result)
                            if saver.full:
                                await saver.room()
            if saver is not None:
                await saver.drain()
        except SourceError as exc:  # the queue failed under the engine's reading
            if isinstance(exc.__cause__, QueueError):
                raise exc.__cause__ from None
            raise
        finally:
            self._fetcher = None  # closed: the heartbeat no longer asks it for cool-downs
            if saver is not None:
                saver.close()
        self._commits.put_nowait(None)

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """One call to Redis, retried with backoff while Redis cannot be reached."""
        import redis

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_for
        delay = _BACKOFF_MIN
        while True:
            self.stats.round_trips += 1
            try:
                return await make()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py turns a cancel in mid-command into a lost connection
                    raise asyncio.CancelledError from exc
                if loop.time() + delay > deadline:
                    raise QueueError(
                        f"lost Redis at {shown_url(self.url)} for more than"
                        f" {self.reconnect_for:g} s ({what}): {exc}"
                    ) from exc
                logger.warning("Redis at %s: %s; retrying", shown_url(self.url), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            except redis.RedisError as exc:  # an error answered (out of memory...): no retry
                raise unreachable(self.url, exc) from exc

    async def _take(self, count: int) -> list[list[Any]]:
        keys = self.keys
        script = self._scripts["take"]
        args = [GROUP, self.name, count, int(self.reclaim_after * 1000)]
        taken: list[list[Any]] = await self._call(
            "take",
            functools.partial(
                script, keys=[keys.stream, keys.deliveries, keys.requests], args=args
            ),
        )
        return taken

    async def _requests(self) -> AsyncIterator[Request]:
        """The requests the engine fetches: taken in batches, at most the
        window held at once, each once Redis grants its host a slot and a
        rate token; ends (with ``exit_when_done``) once the queue's stream is
        empty, that is nothing pending and nothing in flight."""
        loop = asyncio.get_running_loop()
        idle = _IDLE_MIN  # before taking again from a stream found empty
        take_after = 0.0
        while True:
            asking = self._due_requests(loop.time())
            room = self._window - len(self._outstanding)
            drained = False
            if room > 0 and loop.time() >= take_after:
                count = min(room, _TAKE_MAX)
                taken = await self._take(count)
                self.stats.taken += len(taken)
                if len(taken) < count:  # nothing more for now: ask again later
                    drained = True
                    idle = _IDLE_MIN if taken else min(idle * 2, _IDLE_MAX)
                    take_after = loop.time() + idle
                for entry, key, payload, delivered in taken:
                    self._outstanding[entry] = key
                    request = self._to_request(entry, key, payload, int(delivered))
                    if request is None:
                        continue
                    host = self._hosts.get(entry)
                    if host is not None and host in self._parked:  # behind those waiting
                        self._parked[host].append(request)
                    else:
                        asking.append(request)
            if asking:
                await self._admit(asking, loop.time())
            while self._ready:
                yield self._ready.popleft()
            room = self._window - len(self._outstanding)
            if room > 0 and loop.time() >= take_after:
                continue  # the stream may have more
            done = self.exit_when_done and drained and not self._outstanding
            if done and await self._call("xlen", self._length) == 0:
                return
            now = loop.time()
            timeout = _IDLE_MAX
            if room > 0:
                timeout = min(timeout, take_after - now)
            if self._due:
                timeout = min(timeout, min(self._due.values()) - now)
            self._wake.clear()
            if not self._ready and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    def _due_requests(self, now: float) -> list[Request]:
        """Parked requests whose host it is time to ask for again (a few per host)."""
        asking: list[Request] = []
        for host, when in list(self._due.items()):
            if when > now:
                continue
            del self._due[host]
            waiting = self._parked[host]
            for _ in range(min(len(waiting), _ASK_PER_HOST)):
                asking.append(waiting.popleft())
            if not waiting:
                del self._parked[host]
        return asking

    async def _admit(self, requests: list[Request], now: float) -> int:
        """Ask Redis for the hosts of ``requests`` (one call); the granted go to
        the engine (now, or at the start reserved for them), the others wait,
        parked by host. Returns how many were granted."""
        args: list[str | bytes | int] = [
            self.keys.prefix,
            self._per_host,
            self._interval_ms,
            self._tolerance_ms,
            self._lease_ms,
            politeness.HORIZON_MS,
        ]
        asked: list[tuple[Request, str]] = []
        for request in requests:
            entry = request.meta[_QID]
            host = self._hosts.get(entry)
            if host is None:  # a URL the engine refuses: no host to be polite to
                self._ready.append(request)
            else:
                args += (host, entry)
                asked.append((request, host))
        if not asked:
            return len(requests)
        script = self._scripts["acquire"]
        answers: list[int] = await self._call(
            "acquire", functools.partial(script, keys=[], args=args)
        )
        loop = asyncio.get_running_loop()
        granted = len(requests) - len(asked)
        refused: dict[str, list[Request]] = {}
        for (request, host), answer in zip(asked, answers, strict=True):
            if answer == 0:
                self._ready.append(request)
            elif answer > 0:  # a rate token reserved for later
                loop.call_later(answer / 1000, self._become_ready, request)
            else:
                refused.setdefault(host, []).append(request)
                # a rate: ask once half the horizon is free, for several starts at once
                wait = _SLOT_POLL if answer == -1 else (-answer - 1 + _RATE_ASK_MS) / 1000
                self._due[host] = now + wait
                continue
            granted += 1
        for host, waiting in refused.items():
            self._parked.setdefault(host, deque()).extendleft(reversed(waiting))
        for host in self._parked:
            self._due.setdefault(host, now)  # granted all it asked for: ask for the rest
        return granted

    def _become_ready(self, request: Request) -> None:
        self._ready.append(request)
        self._wake.set()

    async def _hand_back(self) -> None:
        """On a stop (Ctrl-C, SIGTERM, an error), give back the entries held
        without a result, so that another worker takes them at once rather
        than after ``reclaim_after``; the delivery is not counted against
        them, and their host slots are freed."""
        held = [
            (entry, key, self._hosts.get(entry, "")) for entry, key in self._outstanding.items()
        ]
        if not held:
            return
        script = self._scripts["hand_back"]
        keys = self.keys
        for start in range(0, len(held), _HEARTBEAT_IDS):
            args: list[str | bytes | int] = [GROUP, self.name, keys.prefix]
            for entry, key, host in held[start : start + _HEARTBEAT_IDS]:
                args += (entry, key, host)
            await script(keys=[keys.stream, keys.deliveries], args=args)

    async def _length(self) -> int:
        client = self._client
        assert client is not None
        length: int = await client.xlen(self.keys.stream)
        return length

    def _to_request(
        self, entry: bytes, key: bytes, payload: bytes, delivered: int
    ) -> Request | None:
        """The request of a taken entry, or None once the record of one not to
        fetch (handed out too often, or unreadable) is queued for commit."""
        extra = {_QID: entry, _QKEY: key}
        shown_key = key.decode("utf-8", "replace")
        try:
            request = decode_request(payload, extra)
        except (ValueError, ConfigError) as exc:
            request = Request(shown_key, meta={"line": None, **extra})
            message = f"the queue's request for this key cannot be read: {exc}"
            self._record(Result(request, error=Failure(ErrorKind.BAD_INPUT, message)))
            return None
        if delivered > self.max_deliveries:
            self.stats.abandoned += 1
            message = (
                f"handed to workers {delivered - 1} times without a result (each died or"
                f" stopped with it in flight); given up (max_deliveries={self.max_deliveries})"
            )
            self._record(Result(request, error=Failure(ErrorKind.ABANDONED, message)))
            return None
        host = politeness.host_of(request)
        if host is not None:
            self._hosts[entry] = host
        return request

    def _record(self, result: Result, path: str | None = None) -> None:
        """Queue the record of ``result`` for the committer."""
        meta = result.request.meta
        entry = meta[_QID]
        record = json_line(result_record(result, path=path, body_mode=self.body))
        kind = "" if result.error is None else str(result.error.kind)
        cool = 0
        if result.status in _COOL_DOWN_STATUSES:
            cool = self._cool_down_ms(result.headers.get("Retry-After"))
        host = self._hosts.pop(entry, "")
        self._commits.put_nowait(_Commit(entry, meta[_QKEY], record, kind, host, cool))

    def _cool_down_ms(self, header: str | None) -> int:
        seconds = parse_retry_after(header, time.time())
        if seconds is None:
            return 0
        return round(min(seconds, self.config.retry.retry_after_max) * 1000)

    async def _committer(self) -> None:
        """Commit results in batches (one script call each) until the end mark."""
        keys = self.keys
        script = self._scripts["commit"]
        script_keys = [keys.results, keys.failed, keys.kinds, keys.stream, keys.deliveries]
        loop = asyncio.get_running_loop()
        ended = False
        while not ended:
            first = await self._commits.get()
            if first is None:
                return
            batch = [first]
            linger_until = loop.time() + _COMMIT_LINGER
            while len(batch) < _COMMIT_MAX:
                if self._commits.empty():
                    left = linger_until - loop.time()
                    if left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            item = await self._commits.get()
                    except TimeoutError:
                        break
                else:
                    item = self._commits.get_nowait()
                if item is None:
                    ended = True
                    break
                batch.append(item)
            args: list[str | bytes | int] = [GROUP, keys.prefix]
            for commit in batch:
                args += (
                    commit.entry,
                    commit.key,
                    commit.record,
                    commit.kind,
                    commit.host,
                    commit.cool,
                )
            kept = int(
                await self._call("commit", functools.partial(script, keys=script_keys, args=args))
            )
            self.stats.results += kept
            self.stats.duplicates += len(batch) - kept
            self.stats.failed += sum(1 for commit in batch if commit.kind)
            now = asyncio.get_running_loop().time()
            for commit in batch:
                self._outstanding.pop(commit.entry, None)
                if commit.host in self._parked:  # a slot of its host is free
                    self._due[commit.host] = now
            self._wake.set()

    async def _beat(self) -> None:
        keys = self.keys
        script = self._scripts["heartbeat"]
        held = list(self._outstanding)
        for start in range(0, max(len(held), 1), _HEARTBEAT_IDS):
            args = [GROUP, self.name, *held[start : start + _HEARTBEAT_IDS]]
            await self._call(
                "heartbeat",
                functools.partial(script, keys=[keys.workers, keys.stream], args=args),
            )
        await self._hold()

    async def _hold(self) -> None:
        """Extend the leases of the host slots this worker holds, and share
        the cool-downs its engine is in (429 or 503 with Retry-After)."""
        cools: list[tuple[str, int]] = []
        if self._fetcher is not None:
            for snapshot in self._fetcher.host_stats(top=_COOL_HOSTS):
                if snapshot["cool_down_s"] > 0:
                    cools.append((snapshot["host"], round(snapshot["cool_down_s"] * 1000)))
        leases = list(self._hosts.items()) if self._per_host > 0 else []
        if not (leases or cools):
            return
        script = self._scripts["hold"]
        for start in range(0, max(len(leases), 1), _HEARTBEAT_IDS):
            part = leases[start : start + _HEARTBEAT_IDS]
            args: list[str | bytes | int] = [self.keys.prefix, self._lease_ms, len(part)]
            for entry, host in part:
                args += (host, entry)
            if start == 0:
                for host, ms in cools:
                    args += (host, ms)
            await self._call("hold", functools.partial(script, keys=[], args=args))

    async def _heartbeats(self) -> None:
        """Say this worker is alive, and keep its entries from being reclaimed,
        until :attr:`_stopping` is set (the call under way is finished, not
        cancelled: redis-py takes a cancel in mid-command for a lost connection)."""
        every = max(min(HEARTBEAT_EVERY, self.reclaim_after / 3), _HEARTBEAT_MIN)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self._beat()
            except QueueError:  # take and commit report a lost Redis
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
