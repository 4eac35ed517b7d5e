"""Redis mode: one queue of requests in Redis (7 or later), many workers on
many machines, exactly one result per key. Needs ``fanout[redis]``.

>>> from fanout.redisq import submit, Worker, status, export  # doctest: +SKIP
>>> submit("redis://10.0.0.5:6379/0", ["https://example.com/"])  # doctest: +SKIP
SubmitCounts(added=1, already=0)

- :func:`submit` enqueues requests, de-duplicated by key in Redis (across
  submits); :func:`retry_failed` puts the failed keys back.
- :class:`Worker` takes requests (a Redis Streams consumer group), fetches
  them with :class:`fanout.Fetcher` and commits one record per key; a dead
  worker's requests are reclaimed after ``reclaim_after``.
- :func:`status` counts pending, in flight, done, failed by kind and workers
  alive; :func:`export` writes one record per key (JSONL or CSV).

The queue's layout and its guarantees: :mod:`fanout.redisq.queue`,
:mod:`fanout.redisq.worker` and docs/scale-out.md.
"""

from fanout.redisq.queue import (
    DEFAULT_QUEUE,
    QUEUE_VERSION,
    QueueStatus,
    SubmitCounts,
    export,
    records,
    retry_failed,
    status,
    submit,
)
from fanout.redisq.worker import Worker, WorkerStats

__all__ = [
    "DEFAULT_QUEUE",
    "QUEUE_VERSION",
    "QueueStatus",
    "SubmitCounts",
    "Worker",
    "WorkerStats",
    "export",
    "records",
    "retry_failed",
    "status",
    "submit",
]
