"""``fanout submit`` and ``fanout worker``: the Redis mode's own commands
(loaded when used). ``fanout status --redis`` and ``fanout export --redis``
are in :mod:`fanout.cli.main`, beside their ``--journal`` forms.

Only click and light modules are imported here; redis-py and the engine when
the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fanout.cli.main import RETRY_KINDS
from fanout.cli.options import (
    DELAY,
    DURATION,
    FilePath,
    check_files,
    debug_option,
    fetcher_config,
    http_options,
    input_options,
    request_options,
)

__all__ = ["queue_options", "submit", "worker"]


def _need_redis() -> None:
    """Refuse at once, in one line, when redis-py is not installed."""
    from fanout.redisq.queue import require_redis

    require_redis()


def queue_options(command: Any) -> Any:
    """``--redis URL`` (required) and ``--queue NAME``."""
    command = click.option(
        "--queue",
        default="fanout",
        metavar="NAME",
        help="The queue's name (letters, digits, _.:-/).",
    )(command)
    return click.option(
        "--redis",
        "redis_url",
        required=True,
        metavar="URL",
        help="The Redis (7 or later) holding the queue: redis://[:password@]host:port/db.",
    )(command)


@click.command()
@click.argument("urls", nargs=-1)
@queue_options
@input_options
@request_options
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Put back on the queue every key whose result failed (its result is dropped).",
)
@click.option(
    "--retry-kinds",
    metavar="KINDS",
    multiple=True,
    callback=RETRY_KINDS,
    help="Put back only the keys that failed with one of these error kinds,"
    " comma-separated (timeout,dns); repeatable; implies --retry-failed.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary.")
@debug_option
@click.pass_context
def submit(ctx: click.Context, /, **options: Any) -> None:
    """Add requests to a Redis queue, once per key across every submit.

    \b
    Examples:
      fanout submit --redis redis://10.0.0.5:6379/0 -i urls.txt
      fanout submit --redis redis://10.0.0.5:6379/0 --retry-failed
    """
    chosen: frozenset[str] = frozenset().union(*options["retry_kinds"])
    retrying = options["retry_failed"] or bool(chosen)
    has_input = bool(options["urls"] or options["input_path"] or options["jsonl_input"])
    if not (has_input or retrying):
        raise click.UsageError(
            "no input: give URLs, -i FILE (or -i - for stdin), --jsonl-input FILE or --retry-failed"
        )
    check_files(
        inputs={"-i": options["input_path"], "--jsonl-input": options["jsonl_input"]},
        outputs={},
    )
    _need_redis()
    ctx.exit(_run_submit(options, (chosen or None) if retrying else frozenset()))


@click.command()
@queue_options
@click.option(
    "--out-dir", type=FilePath(file_okay=False, path_type=Path), help="Save each body here."
)
@http_options
@click.option(
    "--body",
    type=click.Choice(["none", "text", "json", "base64"]),
    default="none",
    help="Include bodies in the records.",
)
@click.option(
    "--reclaim-after",
    callback=DURATION,
    metavar="DURATION",
    default="60s",
    help="Take over a request another worker took and has not reported on for this long"
    " (it is thought dead).",
)
@click.option(
    "--max-deliveries",
    type=click.IntRange(min=1),
    default=5,
    help="A request handed out this many times without a result gets an 'abandoned' record.",
)
@click.option(
    "--reconnect-for",
    callback=DELAY,
    metavar="DURATION",
    default="60s",
    help="How long Redis may be unreachable mid-run (retried with backoff) before the worker"
    " stops.",
)
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Exit 0 once the queue has nothing pending and nothing in flight"
    " (else wait for more work).",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary.")
@debug_option
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> None:
    """Take requests from a Redis queue, fetch them, record one result per key.

    Run as many as you like, on as many machines, against one Redis.
    --per-host, --per-host-rate and Retry-After cool-downs hold across all
    the workers of the queue.

    \b
    Examples:
      fanout worker --redis redis://10.0.0.5:6379/0 -c 200 --per-host 4
      fanout worker --redis redis://10.0.0.5:6379/0 --out-dir pages --exit-when-done
    """
    check_files(inputs={}, outputs={}, out_dir=options["out_dir"])
    config = fetcher_config(options)
    _need_redis()
    ctx.exit(_run_worker(options, config, debug=ctx.obj["debug"]))


def _say(text: str) -> None:
    from fanout.urls import redact_text

    click.echo(f"fanout: {redact_text(text)}", err=True)


def _run_submit(options: dict[str, Any], retry: frozenset[str] | None) -> int:
    """Submit the inputs, then (``retry`` not empty, or None for every kind)
    put the failed keys back. Exit status 1 when some input lines were rejected."""
    from fanout.inputs.sources import Rejected
    from fanout.jobs.fetch import FetchJob, _inputs
    from fanout.models import Request
    from fanout.redisq import queue as redisq
    from fanout.safetext import shown

    url, name = options["redis_url"], options["queue"]
    rejected: list[Rejected] = []  # the first 10 (shown), of rejected_count
    rejected_count = 0

    def requests() -> Any:
        job = FetchJob(
            urls=options["urls"],
            input_path=options["input_path"],
            jsonl_path=options["jsonl_input"],
            method=options["method"],
            data=None if options["data"] is None else options["data"].encode(),
        )
        for item in _inputs(job):
            if isinstance(item, Request):
                yield item
                continue
            nonlocal rejected_count
            rejected_count += 1
            if len(rejected) < 10:
                rejected.append(item)

    parts = []
    if options["urls"] or options["input_path"] or options["jsonl_input"]:
        counts = redisq.submit(url, requests(), queue=name)
        parts.append(f"{counts.added:,} added, {counts.already:,} already in the queue")
    if retry != frozenset():
        again = redisq.retry_failed(url, queue=name, kinds=retry)
        parts.append(f"{again:,} failed put back")
    for item in rejected:
        _say(f"line {item.line}: {item.kind}: {shown(item.reason, 200)}")
    if rejected_count:
        parts.append(f"{rejected_count:,} input line(s) rejected")
    if not options["quiet"]:
        _say(f"queue '{name}' at {redisq.shown_url(url)}: {'; '.join(parts)}")
    return 1 if rejected_count else 0


def _run_worker(options: dict[str, Any], config: Any, *, debug: bool) -> int:
    from fanout.redisq import Worker
    from fanout.runtime import run

    worker = Worker(
        options["redis_url"],
        queue=options["queue"],
        config=config,
        out_dir=options["out_dir"],
        body=options["body"],
        reclaim_after=options["reclaim_after"],
        max_deliveries=options["max_deliveries"],
        exit_when_done=options["exit_when_done"],
        reconnect_for=options["reconnect_for"],
    )
    stats = run(worker.run(), debug=debug)
    if not options["quiet"]:
        _say(
            f"worker {worker.name}: {stats.results:,} results ({stats.failed:,} failed,"
            f" {stats.abandoned:,} abandoned), {stats.duplicates:,} dropped as duplicates,"
            f" {stats.round_trips:,} Redis calls"
        )
    return 0
