"""The ``fanout`` command: a thin shell over the library.

Parse options, build policies, run a job, render. Exit status
(:mod:`fanout.cli.exit_status`): 0 when every request succeeded, 1 when some
failed, 2 for a usage error (one line on stderr, no traceback), and 128 + the
signal's number on SIGINT (130), SIGTERM (143) or SIGHUP (129), after writing
what was fetched.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from fanout._version import __version__
from fanout.cli.exit_status import for_signal
from fanout.cli.options import (
    DELAY,
    DURATION,
    FilePath,
    check_files,
    debug_option,
    enable_debug,
    http_options,
    input_options,
    parsed,
    request_options,
)
from fanout.errors import FanoutError

__all__ = ["main"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _retry_kinds(text: str) -> frozenset[str]:
    from fanout.models import ErrorKind
    from fanout.safetext import shown

    kinds = _split_kinds(text)
    unknown = sorted(kinds - {str(kind) for kind in ErrorKind})
    if unknown or not kinds:
        valid = ", ".join(str(kind) for kind in ErrorKind)
        given = ", ".join(f"'{shown(kind, 80)}'" for kind in unknown) or "''"
        raise ValueError(
            f"unknown error kind {given} (kinds: {valid}; --retry-failed alone retries every kind)"
        )
    return kinds


def _split_kinds(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


RETRY_KINDS = parsed(_retry_kinds)


def _retried_kinds(options: dict[str, Any]) -> frozenset[str] | None:
    """What --retry-failed and --retry-kinds ask for: None (nothing), the empty
    set (every failed kind) or the kinds to fetch again."""
    from fanout.models import ErrorKind
    from fanout.safetext import shown

    kinds: frozenset[str] = frozenset().union(*options["retry_kinds"])
    if not (options["retry_failed"] or kinds):
        return None
    if options["journal"] is None:
        raise click.UsageError(f"{'--retry-kinds' if kinds else '--retry-failed'} needs --journal")
    kind_names = {"all", *(str(kind) for kind in ErrorKind)}
    for url in options["urls"]:  # the grammar of old: --retry-failed [all|KINDS]
        if (parts := _split_kinds(url)) and parts <= kind_names:
            raise click.UsageError(
                f"'{shown(url, 200)}' is not a URL but error kinds: --retry-failed takes no"
                " value; give --retry-kinds KINDS to fetch again only some kinds"
            )
    return kinds


class _Commands(click.Group):
    """The command group; ``aggregate`` (many options, and its own modules) is
    loaded only when it is asked for, so other commands start faster."""

    _LAZY: Final = {
        "aggregate": "fanout.cli.aggregate",
        "submit": "fanout.cli.redisq",
        "worker": "fanout.cli.redisq",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self._LAZY.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(__version__, prog_name="fanout")
@click.option(
    "--debug",
    is_flag=True,
    help="asyncio debug mode and detailed logs on stderr (also after the command's name).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """fanout: fast, polite, resumable concurrent HTTP fetching."""
    ctx.obj = {"debug": False}
    if debug:
        enable_debug(ctx)
    from fanout.cli.logs import redact_logs

    redact_logs()  # a URL's credentials never reach a log


_OUTPUT_FILE = FilePath(dir_okay=False, allow_dash=True, readable=False)


@cli.command()
@click.argument("urls", nargs=-1)
@input_options
@click.option(
    "-o",
    "--output",
    type=_OUTPUT_FILE,
    default="-",
    metavar="FILE",
    help="JSONL records here ('-' for stdout).",
)
@click.option(
    "--out-dir", type=FilePath(file_okay=False, path_type=Path), help="Save each body here."
)
@http_options
@request_options
@click.option("--ordered", is_flag=True, help="Write records in input order, not as they complete.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failure.")
@click.option(
    "--body",
    type=click.Choice(["none", "text", "json", "base64"]),
    default="none",
    help="Include bodies in the JSONL records.",
)
@click.option(
    "--no-dedupe", is_flag=True, help="Fetch repeated URLs again instead of skipping them."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--progress", "force_progress", is_flag=True, help="Show the bar even if not a terminal."
)
@click.option(
    "--stats-json",
    type=FilePath(dir_okay=False, readable=False, path_type=Path),
    help="Write the summary as JSON here (checked before the run).",
)
@click.option(
    "--journal",
    type=FilePath(dir_okay=False, readable=False, path_type=Path),
    help="SQLite journal: rerun the same command to resume, skipping what is recorded.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --journal: fetch again the keys that failed in earlier runs, whatever the kind"
    " (a flag: it takes no value).",
)
@click.option(
    "--retry-kinds",
    metavar="KINDS",
    multiple=True,
    callback=RETRY_KINDS,
    help="With --journal: fetch again only the keys that failed with one of these error kinds,"
    " comma-separated (timeout,dns); repeatable; implies --retry-failed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    metavar="N",
    help="Fetch in N processes (hosts shared out among them, -c split among them);"
    " this one still writes every record.",
)
@debug_option
@click.pass_context
def fetch(ctx: click.Context, /, **options: Any) -> None:
    """Fetch URLs concurrently; write one JSONL record per input line.

    \b
    Examples:
      fanout fetch http://127.0.0.1:8000/items/1 http://127.0.0.1:8000/items/2
      fanout fetch -i urls.txt -o results.jsonl --out-dir pages -c 100 --per-host 8
      cat urls.txt | fanout fetch -i - --rate 50 --retries 4 --ordered
    """
    from fanout.cli.commands import build_job, run_job

    retried = _retried_kinds(options)
    if not (options["urls"] or options["input_path"] or options["jsonl_input"]):
        raise click.UsageError(
            "no input: give URLs, -i FILE (or -i - for stdin) or --jsonl-input FILE"
        )
    check_files(
        inputs={"-i": options["input_path"], "--jsonl-input": options["jsonl_input"]},
        outputs={
            "-o": options["output"],
            "--journal": options["journal"],
            "--stats-json": options["stats_json"],
        },
        out_dir=options["out_dir"],
    )
    job = build_job(options, retry_failed=retried)
    code = run_job(
        job,
        quiet=options["quiet"],
        force_progress=options["force_progress"],
        stats_json=options["stats_json"],
        debug=ctx.obj["debug"],
    )
    ctx.exit(code)


_journal_option = click.option(
    "--journal",
    type=FilePath(dir_okay=False, path_type=Path),
    help="The journal of a fetch run (or give --redis).",
)
_redis_option = click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    help="The Redis holding a queue of 'fanout submit' (or give --journal).",
)
_queue_option = click.option(
    "--queue", default="fanout", metavar="NAME", help="With --redis: the queue's name."
)


def _journal_or_redis(journal: Path | None, redis_url: str | None) -> None:
    if (journal is None) == (redis_url is None):
        raise click.UsageError("give one of --journal FILE and --redis URL")


@cli.command()
@_journal_option
@_redis_option
@_queue_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="With --journal: first run SQLite's integrity check; its problems are listed,"
    " and exit status 2.",
)
@debug_option
def status(
    journal: Path | None, redis_url: str | None, queue: str, as_json: bool, check: bool
) -> None:
    """Show what a journal or a Redis queue holds: pending, done, failed by kind
    (and for a queue: in flight, workers alive).

    It reads a journal that a run is using (it takes no lock).
    """
    _journal_or_redis(journal, redis_url)
    if redis_url is not None:
        if check:
            raise click.UsageError("--check needs --journal")
        from fanout.cli.commands import run_queue_status

        run_queue_status(redis_url, queue, as_json=as_json)
        return
    from fanout.cli.commands import run_status

    assert journal is not None
    run_status(journal, as_json=as_json, check=check)


@cli.command()
@_journal_option
@_redis_option
@_queue_option
@click.option(
    "-o",
    "--output",
    type=_OUTPUT_FILE,
    default="-",
    metavar="FILE",
    help="Write here ('-' for stdout).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    help="Output format.",
)
@debug_option
def export(journal: Path | None, redis_url: str | None, queue: str, output: str, fmt: str) -> None:
    """Write the results recorded in a journal or a Redis queue, one per key,
    in first-seen order.

    It reads a journal that a run is using (it takes no lock). A file is
    replaced only once the whole export is written.
    """
    from fanout.cli.commands import run_export

    _journal_or_redis(journal, redis_url)
    check_files(inputs={} if journal is None else {"--journal": journal}, outputs={"-o": output})
    run_export(journal, output, fmt, redis=None if redis_url is None else (redis_url, queue))


@cli.command()
@click.option("--host", default="127.0.0.1", help="Loopback address to bind.")
@click.option(
    "--port", type=click.IntRange(min=0, max=65535), default=0, help="Port (0: any free one)."
)
@click.option(
    "--latency",
    callback=DELAY,
    metavar="DURATION",
    default="0ms",
    help="Delay of every normal answer.",
)
@click.option(
    "--jitter", callback=DELAY, metavar="DURATION", default="0ms", help="Random extra delay, +/-."
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    help="Share of normal answers that are 503.",
)
@debug_option
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, latency: float, jitter: float, error_rate: float
) -> None:
    """Run the embedded demo API and fault server until Ctrl-C.

    \b
    Endpoints include /pages/{n}, /items/{id}, /items?page=N, /v0/topstories.json,
    /v0/item/{id}.json, /users, /posts, and misbehaving ones: /status/{code},
    /retry-after/{s}, /flaky/{n}, /slow?delay=S, /hang, /stall, /drip, /short,
    /reset, /redirect/{n}, /bytes/{n}, /gzip-bomb, /br-bomb, /zstd-bomb. See / for the full list.
    """
    from fanout.cli.commands import run_serve

    ctx.exit(
        run_serve(
            host=host,
            port=port,
            latency=latency,
            jitter=jitter,
            error_rate=error_rate,
            debug=ctx.obj["debug"],
        )
    )


@cli.command()
@click.option(
    "-n", "count", type=click.IntRange(min=1, max=100_000), default=2000, help="URLs to fetch."
)
@click.option(
    "--out-dir",
    type=FilePath(file_okay=False, path_type=Path),
    help="Where to save.  [default: a new temporary directory]",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@debug_option
@click.pass_context
def demo(ctx: click.Context, count: int, out_dir: Path | None, quiet: bool) -> None:
    """The whole job offline: serve, fetch with progress, save pages, summarise."""
    from fanout.cli.commands import run_demo

    check_files(inputs={}, outputs={}, out_dir=out_dir)
    ctx.exit(run_demo(count=count, out_dir=out_dir, quiet=quiet, debug=ctx.obj["debug"]))


@cli.command()
@click.option("-n", "count", type=click.IntRange(min=1, max=100_000), default=500, help="URLs.")
@click.option(
    "--latency",
    callback=DURATION,
    metavar="DURATION",
    default="100ms",
    help="Server latency per request (more than 0).",
)
@click.option(
    "-c", "--concurrency", type=click.IntRange(min=1, max=1000), default=100, help="Width."
)
@click.option(
    "--sequential-cap",
    callback=DURATION,
    metavar="DURATION",
    default="20s",
    help="Stop the sequential mode after this long and extrapolate.",
)
@click.option(
    "--plot",
    type=FilePath(dir_okay=False, readable=False),
    help="Draw a chart (needs fanout[plot]).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results.")
@debug_option
def bench(
    count: int,
    latency: float,
    concurrency: int,
    sequential_cap: float,
    plot: str | None,
    as_json: bool,
) -> None:
    """Time sequential, threads, naive gather and fanout on the demo server.

    \b
    The server runs on 127.0.0.1 in a subprocess with the given latency; the
    lower bound is ceil(n / c) x latency.
    """
    from fanout.cli.commands import run_bench_command

    check_files(inputs={}, outputs={"--plot": plot})
    run_bench_command(
        count=count,
        latency=latency,
        concurrency=concurrency,
        sequential_cap=sequential_cap,
        plot_path=plot,
        as_json=as_json,
    )


def _usage_error(message: str) -> NoReturn:
    from fanout.urls import redact_text  # options may hold URLs with credentials

    click.echo(f"fanout: error: {redact_text(message)}", err=True)
    sys.exit(EXIT_USAGE)


def _reopen_closed_standard_streams() -> None:
    """Give a closed stdin, stdout or stderr /dev/null, as daemons do: else the
    first socket opened would get its number, and the event loop (libuv)
    aborts on closing a descriptor below 3."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: fd
        if getattr(sys, name) is None:  # Python found it closed at start-up
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (for the process)


def _signal_of(exc: BaseException) -> int:
    """The signal that ended the command: click turns a KeyboardInterrupt
    (a :class:`~fanout.runtime.Interrupted` for SIGTERM and SIGHUP) into an Abort."""
    from fanout.runtime import interrupting_signal

    cause = exc.__cause__ if isinstance(exc, click.Abort) else exc
    return interrupting_signal(cause) if cause is not None else signal.SIGINT


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``fanout`` console script."""
    _reopen_closed_standard_streams()
    try:
        code = cli.main(args=argv, prog_name="fanout", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see 'fanout {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        _usage_error(exc.format_message() + hint)
    except click.ClickException as exc:
        _usage_error(exc.format_message())
    except FanoutError as exc:
        _usage_error(str(exc))
    except (KeyboardInterrupt, click.Abort) as exc:
        signum = _signal_of(exc)
        with contextlib.suppress(OSError):  # stderr may be a terminal gone with SIGHUP
            click.echo(f"fanout: interrupted by {signal.Signals(signum).name}", err=True)
        sys.exit(for_signal(signum))
    sys.exit(code if isinstance(code, int) else EXIT_OK)
