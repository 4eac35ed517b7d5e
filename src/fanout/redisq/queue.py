"""A queue of requests in Redis: its keys, its version, and the operations that
need no worker (submit, retry the failed, status, export).

Everything of a queue named ``NAME`` lives under keys ``fanout:{NAME}:*`` (one
hash tag, so one slot of a cluster)::

    meta        hash    version (the queue format), created_by, salt
    requests    hash    key → the request, as JSON (HSETNX: de-duplication)
    order       list    keys in the order they were first submitted (export)
    stream      stream  one entry {k: key} per request to fetch; consumer
                        group ``workers``; an entry is acknowledged and
                        deleted when its key's result is committed, so the
                        stream holds exactly the work not done
    results     hash    key → its JSONL record (HSETNX: one result per key)
    failed      hash    key → error kind, for the keys whose result failed
    kinds       hash    error kind → keys that failed with it
    deliveries  hash    key → times it was handed out without a result
    workers     zset    worker name → when it was last heard from (Redis's clock)
    slots:HOST  zset    entry id → when its lease on one of HOST's slots expires
    tat:HOST    string  HOST's theoretical arrival time (GCRA), ms
    cool:HOST   string  present while HOST cools down (429/503 Retry-After)

(HOST is ``host:port``; see :mod:`fanout.redisq.politeness`.)

The operations here are synchronous (redis-py's client), for scripts and the
CLI; :class:`fanout.redisq.Worker` is asynchronous.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from fanout._version import __version__
from fanout.errors import ConfigError, QueueError
from fanout.models import Request
from fanout.output.credentials import KeySource, stored_key
from fanout.redisq import scripts
from fanout.urls import redact_text

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = [
    "DEFAULT_QUEUE",
    "QUEUE_VERSION",
    "QueueKeys",
    "QueueStatus",
    "SubmitCounts",
    "decode_request",
    "encode_request",
    "export",
    "records",
    "retry_failed",
    "status",
    "submit",
]

QUEUE_VERSION: Final = 1
"""The format of the queues this fanout makes; it refuses a queue of a newer one."""

DEFAULT_QUEUE: Final = "fanout"
GROUP: Final = "workers"
_BATCH: Final = 500  # keys per script call
# A worker heartbeats at least this often; one not heard from for ALIVE_MS is not counted alive.
HEARTBEAT_EVERY: Final = 5.0
ALIVE_MS: Final = 15_000
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.:\-/]{1,200}")
_CONNECT_TIMEOUT: Final = 5.0
_SOCKET_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The Redis keys of the queue ``name``."""

    name: str
    prefix: str = field(init=False)
    meta: str = field(init=False)
    requests: str = field(init=False)
    order: str = field(init=False)
    stream: str = field(init=False)
    results: str = field(init=False)
    failed: str = field(init=False)
    kinds: str = field(init=False)
    deliveries: str = field(init=False)
    workers: str = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"queue name must be 1 to 200 letters, digits or _.:-/, got {self.name[:80]!r}"
            )
        object.__setattr__(self, "prefix", f"fanout:{{{self.name}}}:")
        for part in (
            "meta", "requests", "order", "stream", "results",
            "failed", "kinds", "deliveries", "workers",
        ):  # fmt: skip
            object.__setattr__(self, part, f"{self.prefix}{part}")


def shown_url(url: str) -> str:
    """A Redis URL as messages show it: its password hidden."""
    return redact_text(url)


def client_options() -> dict[str, Any]:
    """The options of every connection: deadlines on connecting and on each reply."""
    return {"socket_connect_timeout": _CONNECT_TIMEOUT, "socket_timeout": _SOCKET_TIMEOUT}


def unreachable(url: str, exc: BaseException) -> QueueError:
    """The error of a Redis that cannot be reached at ``url`` (or that answered
    with an error: a key of the queue's name holding something else, a
    password refused...)."""
    import redis

    why = str(exc) or type(exc).__name__
    if isinstance(exc, redis.ResponseError) and not isinstance(exc, redis.AuthenticationError):
        return QueueError(f"Redis at {shown_url(url)} refused a command of the queue: {why}")
    return QueueError(f"cannot reach Redis at {shown_url(url)}: {why}")


def check_server(info: Mapping[str, Any], url: str) -> None:
    """Refuse a Redis older than 7 (the queue needs XAUTOCLAIM's reply of 7)."""
    version = str(info.get("redis_version", "0"))
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 7:
        raise QueueError(f"Redis at {shown_url(url)} is version {version}: fanout needs 7 or later")


def check_meta(meta: Mapping[Any, Any], keys: QueueKeys, url: str) -> bytes:
    """Refuse a queue of a newer format; return its salt (for credential keys)."""
    raw = meta.get(b"version")
    version = int(raw) if raw is not None and raw.isdigit() else -1
    if version < 1:
        raise QueueError(
            f"'{keys.meta}' at {shown_url(url)} is not a fanout queue (no valid version field)"
        )
    if version > QUEUE_VERSION:
        made_by = meta.get(b"created_by", b"?").decode("utf-8", "replace")[:40]
        raise QueueError(
            f"queue '{keys.name}' at {shown_url(url)} has format {version} (made by fanout"
            f" {made_by}); this fanout ({__version__}) reads format {QUEUE_VERSION}:"
            " upgrade fanout"
        )
    return bytes.fromhex(meta.get(b"salt", b"").decode("ascii", "replace") or "00")


def new_meta() -> dict[str, str]:
    """The meta fields of a queue made now."""
    return {
        "version": str(QUEUE_VERSION),
        "created_by": __version__,
        "salt": os.urandom(16).hex(),
    }


def is_busy_group(exc: BaseException) -> bool:
    """Whether ``exc`` is XGROUP CREATE's answer that the group exists."""
    return "BUSYGROUP" in str(exc)


def require_redis() -> None:
    """Raise QueueError, in one line, when redis-py is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise QueueError("the Redis mode needs redis-py: pip install 'fanout[redis]'") from None


def _connect(url: str) -> redis.Redis:
    require_redis()
    import redis

    try:
        client = redis.Redis.from_url(url, **client_options())
    except ValueError as exc:
        raise QueueError(f"--redis '{shown_url(url)[:200]}' is not a Redis URL: {exc}") from exc
    try:
        check_server(client.info("server"), url)
    except redis.RedisError as exc:
        client.close()
        raise unreachable(url, exc) from exc
    return client


def open_queue(url: str, name: str, *, create: bool) -> tuple[redis.Redis, QueueKeys, bytes]:
    """Connect to the queue ``name`` at ``url`` (made first if ``create``);
    return the client, the keys and the queue's salt. QueueError when Redis
    cannot be reached, when the queue does not exist (and ``create`` is
    false) or was made by a newer fanout."""
    import redis

    keys = QueueKeys(name)
    client = _connect(url)
    try:
        if create:
            ensure_sync(client, keys)
        meta = client.hgetall(keys.meta)
        if not meta:
            raise QueueError(f"no queue '{name}' at {shown_url(url)} (submit to it first)")
        salt = check_meta(meta, keys, url)
    except redis.RedisError as exc:
        client.close()
        raise unreachable(url, exc) from exc
    except BaseException:
        client.close()
        raise
    return client, keys, salt


def ensure_sync(client: redis.Redis, keys: QueueKeys) -> None:
    """Make the queue if it does not exist: its meta, its stream and group."""
    import redis

    for field_name, value in new_meta().items():
        client.hsetnx(keys.meta, field_name, value)
    try:
        client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not is_busy_group(exc):
            raise


async def ensure_async(client: redis.asyncio.Redis, keys: QueueKeys) -> None:
    """:func:`ensure_sync` on an asyncio client."""
    import redis

    for field_name, value in new_meta().items():
        await client.hsetnx(keys.meta, field_name, value)
    try:
        await client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not is_busy_group(exc):
            raise


def encode_request(request: Request) -> bytes:
    """A request as the queue holds it (JSON; a body as base64)."""
    meta = request.meta
    line = meta.get("line") if isinstance(meta, dict) else None
    user = meta.get("meta") if isinstance(meta, dict) else None
    data = {
        "url": request.url,
        "method": request.method,
        "headers": dict(request.headers),
        "body": None if request.body is None else base64.b64encode(request.body).decode(),
        "key": request.key,
        "line": line,
        "meta": user,
        "idempotent": request.idempotent,
        "send_credentials": request.send_credentials,
    }
    return orjson.dumps(data)


def decode_request(payload: bytes, extra: Mapping[str, object]) -> Request:
    """The request :func:`encode_request` wrote; ``extra`` goes into its meta.
    Raises ValueError (or a :class:`~fanout.errors.ConfigError`) for a payload
    that is not one."""
    data = orjson.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise ValueError("not a request")
    body = data.get("body")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers not an object")
    kwargs: dict[str, Any] = {}
    if headers:
        kwargs["headers"] = {str(k): str(v) for k, v in headers.items()}
    method = data.get("method") or "GET"
    if method != "GET":
        kwargs["method"] = str(method)
    return Request(
        data["url"],
        body=None if body is None else base64.b64decode(body),
        key=data.get("key"),
        meta={"line": data.get("line"), "meta": data.get("meta"), **extra},
        idempotent=data.get("idempotent"),
        send_credentials=bool(data.get("send_credentials", True)),
        **kwargs,
    )


def queue_key(request: Request, salt: bytes) -> str:
    """The key the queue de-duplicates on: the request's key, else its URL with
    any credentials hidden (a salted digest tells them apart, as in a journal)."""
    if request.key is not None:
        return request.key
    return stored_key(request.url, KeySource.URL, salt)


@dataclass(frozen=True, slots=True)
class SubmitCounts:
    """What a submit did: requests added, and those the queue already had."""

    added: int
    already: int


def _batches(items: Iterable[Request | str], size: int) -> Iterator[list[Request]]:
    batch: list[Request] = []
    for item in items:
        batch.append(Request(item) if isinstance(item, str) else item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def submit(
    redis_url: str, requests: Iterable[Request | str], *, queue: str = DEFAULT_QUEUE
) -> SubmitCounts:
    """Add requests to the queue (made if it does not exist), in batches of
    one script call each. A request whose key the queue already holds, from
    this submit or an earlier one, is not added again: de-duplication happens
    in Redis, so it holds across submits and machines.

    Raises :class:`~fanout.errors.QueueError` when Redis cannot be reached or
    the queue was made by a newer fanout.
    """
    import redis

    client, keys, salt = open_queue(redis_url, queue, create=True)
    added = already = 0
    try:
        script = client.register_script(scripts.SUBMIT)
        for batch in _batches(requests, _BATCH):
            args: list[str | bytes] = []
            seen: set[str] = set()
            for request in batch:
                key = queue_key(request, salt)
                if key in seen:
                    already += 1
                    continue
                seen.add(key)
                args += (key, encode_request(request))
            count = int(script(keys=[keys.requests, keys.order, keys.stream], args=args))
            added += count
            already += len(seen) - count
    except redis.RedisError as exc:
        raise unreachable(redis_url, exc) from exc
    finally:
        client.close()
    return SubmitCounts(added, already)


def retry_failed(
    redis_url: str, *, queue: str = DEFAULT_QUEUE, kinds: frozenset[str] | None = None
) -> int:
    """Put the keys whose result failed back on the queue (only those that
    failed with one of ``kinds``, when given); their failed results are
    dropped. Returns how many were put back."""
    import redis

    client, keys, _ = open_queue(redis_url, queue, create=False)
    again = 0
    try:
        script = client.register_script(scripts.RETRY)
        chosen: list[bytes] = []
        for key, kind in client.hscan_iter(keys.failed, count=1000):
            if kinds is None or kind.decode("utf-8", "replace") in kinds:
                chosen.append(key)
        script_keys = [keys.failed, keys.results, keys.kinds, keys.deliveries, keys.stream]
        for start in range(0, len(chosen), _BATCH):
            again += int(script(keys=script_keys, args=chosen[start : start + _BATCH]))
    except redis.RedisError as exc:
        raise unreachable(redis_url, exc) from exc
    finally:
        client.close()
    return again


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """The counts of a queue. ``pending``: submitted, not yet handed to a worker;
    ``in_flight``: handed out, no result yet (held by a worker, or by a dead one
    until it is reclaimed); ``done`` and ``failed`` (by error kind): results
    recorded; ``workers_alive``: workers heard from in the last 15 s."""

    queue: str
    version: int
    total: int
    pending: int
    in_flight: int
    done: int
    failed: dict[str, int]
    workers_alive: int

    def as_dict(self) -> dict[str, object]:
        """The counts as a JSON-ready dict (``fanout status --redis --json``)."""
        return {
            "queue": self.queue,
            "version": self.version,
            "total": self.total,
            "pending": self.pending,
            "in_flight": self.in_flight,
            "done": self.done,
            "failed": self.failed,
            "workers_alive": self.workers_alive,
        }


def status(redis_url: str, *, queue: str = DEFAULT_QUEUE) -> QueueStatus:
    """The counts of the queue (one pipelined round trip)."""
    import redis

    client, keys, _ = open_queue(redis_url, queue, create=False)
    try:
        alive = client.register_script(scripts.ALIVE)
        pipe = client.pipeline(transaction=True)
        pipe.hget(keys.meta, "version")
        pipe.hlen(keys.requests)
        pipe.hlen(keys.results)
        pipe.xlen(keys.stream)
        pipe.xpending(keys.stream, GROUP)
        pipe.hgetall(keys.kinds)
        alive(keys=[keys.workers], args=[ALIVE_MS], client=pipe)
        version, total, results, length, pending_info, kinds, workers = pipe.execute()
    except redis.RedisError as exc:
        raise unreachable(redis_url, exc) from exc
    finally:
        client.close()
    in_flight = int(pending_info["pending"])
    failed = {
        kind.decode("utf-8", "replace"): int(count)
        for kind, count in sorted(kinds.items())
        if int(count) > 0
    }
    return QueueStatus(
        queue=queue,
        version=int(version),
        total=int(total),
        pending=int(length) - in_flight,
        in_flight=in_flight,
        done=int(results) - sum(failed.values()),
        failed=failed,
        workers_alive=int(workers),
    )


def records(redis_url: str, *, queue: str = DEFAULT_QUEUE) -> Iterator[bytes]:
    """Every recorded result of the queue, one JSONL record per key, in the
    order the keys were first submitted (read in batches)."""
    import redis

    client, keys, _ = open_queue(redis_url, queue, create=False)
    try:
        start = 0
        while True:
            batch = client.lrange(keys.order, start, start + _BATCH - 1)
            if not batch:
                return
            start += len(batch)
            for record in client.hmget(keys.results, batch):
                if isinstance(record, bytes):
                    yield record
    except redis.RedisError as exc:
        raise unreachable(redis_url, exc) from exc
    finally:
        client.close()


def export(
    redis_url: str, out: IO[bytes], *, queue: str = DEFAULT_QUEUE, fmt: str = "jsonl"
) -> int:
    """Write the queue's results to ``out`` as JSONL (the schema of ``fanout
    fetch``'s records) or CSV, exactly one record per key; return the count."""
    from fanout.journal.export import write_records

    return write_records(records(redis_url, queue=queue), out, fmt)
