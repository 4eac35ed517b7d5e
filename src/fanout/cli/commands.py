"""What the CLI commands do once their options are parsed: build, run, render."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click
import orjson

from fanout.cli import exit_status
from fanout.cli.options import fetcher_config
from fanout.config import FetcherConfig
from fanout.errors import ConfigError, SinkError, WriteError
from fanout.jobs.fetch import FetchJob, JobOutcome, count_inputs, run_fetch_job
from fanout.jobs.workers import WorkerError
from fanout.output.stats import RunStats, format_summary
from fanout.policy import Limits, RetryPolicy
from fanout.runtime import interrupting_signal, run
from fanout.safetext import shown

if TYPE_CHECKING:
    from fanout.cli.progress import LiveProgress

__all__ = [
    "build_job",
    "interrupted",
    "interrupted_by",
    "run_bench_command",
    "run_demo",
    "run_export",
    "run_job",
    "run_serve",
    "run_status",
    "showing",
]

EXIT_OK, EXIT_FAILURES = 0, 1


def _say(text: str) -> None:
    # stderr can be a terminal that went away (SIGHUP: writes fail with EIO);
    # the exit status still tells how the run ended
    with contextlib.suppress(OSError):
        click.echo(text, err=True)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _live(stats: RunStats, total: int | None) -> LiveProgress:
    from fanout.cli.progress import LiveProgress

    return LiveProgress(stats, total)


def build_job(options: dict[str, Any], *, retry_failed: frozenset[str] | None) -> FetchJob:
    """Turn ``fanout fetch`` options into a checked :class:`FetchJob`
    (``retry_failed``: see :attr:`FetchJob.retry_failed`)."""
    data = options["data"]
    return FetchJob(
        urls=tuple(options["urls"]),
        input_path=options["input_path"],
        jsonl_path=options["jsonl_input"],
        output=options["output"],
        out_dir=options["out_dir"],
        ordered=options["ordered"],
        fail_fast=options["fail_fast"],
        dedupe=not options["no_dedupe"],
        body=options["body"],
        method=options["method"],
        # surrogateescape: bytes of the command line that are not UTF-8 are sent as given
        data=None if data is None else data.encode("utf-8", "surrogateescape"),
        config=fetcher_config(options),
        journal=options["journal"],
        retry_failed=retry_failed,
        workers=options["workers"],
    )


def run_job(
    job: FetchJob,
    *,
    quiet: bool,
    force_progress: bool,
    stats_json: Path | None,
    debug: bool,
) -> int:
    """Run a fetch job with its progress bar and summary; return the exit status."""
    job.check_inputs()
    show_bar = not quiet and (force_progress or _stderr_is_terminal())
    total = count_inputs(job) if show_bar else None
    stats = RunStats()
    live = _live(stats, total) if show_bar else None
    outcome: JobOutcome | None = None
    signum: int | None = None  # the signal that ended the run
    failure: str | None = None  # a worker process died (--workers)

    async def main() -> JobOutcome:
        return await run_fetch_job(
            job,
            stats=stats,
            on_fetcher=live.attach if live else None,
            on_record=live.refresh if live else None,
        )

    try:
        with showing(live):
            outcome = run(main(), debug=debug)
    except KeyboardInterrupt as exc:
        signum = interrupting_signal(exc)
    except WriteError as exc:
        return _write_failed(exc)
    except WorkerError as exc:
        failure = str(exc)
    summary = outcome.summary if outcome is not None else stats.summary()
    if not quiet:
        _say(format_summary(summary))
        if outcome is not None and outcome.stopped_early:
            _say("stopped at the first failure (--fail-fast)")
        if signum is not None:
            _say(f"{interrupted_by(signum)}: every result fetched so far was written")
    if failure is not None:
        _say(f"fanout: error: {failure}")
    if stats_json is not None:
        try:
            stats_json.write_bytes(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            raise SinkError(f"cannot write stats file '{stats_json}': {exc.strerror}") from exc
    if signum is not None:
        return exit_status.for_signal(signum)
    if failure is not None:
        return exit_status.FAILURES
    return EXIT_OK if summary.failed == 0 else EXIT_FAILURES


def interrupted_by(signum: int) -> str:
    """How a message names the signal that ended a run: "interrupted by SIGTERM"."""
    return f"interrupted by {signal.Signals(signum).name}"


def interrupted(exc: KeyboardInterrupt, detail: str) -> int:
    """Say on stderr which signal ended the run, and ``detail``; return the
    exit status for it (:func:`fanout.cli.exit_status.for_signal`)."""
    signum = interrupting_signal(exc)
    _say(f"{interrupted_by(signum)}: {detail}")
    return exit_status.for_signal(signum)


@contextlib.contextmanager
def showing(live: LiveProgress | None) -> Iterator[None]:
    """Show ``live``'s bar (if any) while the block runs a job.

    A signal can come with the terminal gone (SIGHUP: writes fail with EIO),
    so taking the bar down then fails too: the signal is raised, not that.
    """
    if live is None:
        yield
        return
    try:
        with live.running():
            yield
    except OSError as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        raise


def _write_failed(exc: WriteError) -> int:
    """The end of a run whose output or journal could not be written: one line
    (none for a reader that went away, as for a process killed by SIGPIPE)."""
    if exc.broken_pipe:
        _silence_stdout()
        return exit_status.BROKEN_PIPE
    _say(f"fanout: error: {exc}")
    return exit_status.FAILURES


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit finds no
    broken pipe to complain about ("Exception ignored ... BrokenPipeError")."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no stdout to silence
        pass


def run_serve(
    *, host: str, port: int, latency: float, jitter: float, error_rate: float, debug: bool
) -> int:
    """Serve the demo app until Ctrl-C (or SIGTERM, SIGHUP: the status says
    which); print its base URLs once listening.

    A port that cannot be listened on (in use, say) is a ConfigError, one line."""
    from fanout.demo import serve_forever

    listening = False

    def ready(urls: list[str]) -> None:
        nonlocal listening
        listening = True
        for url in urls:
            click.echo(f"fanout demo server listening on {url}  (Ctrl-C to stop)")

    try:
        run(
            serve_forever(
                host,
                port,
                latency=latency,
                jitter=jitter,
                error_rate=error_rate,
                on_ready=ready,
            ),
            debug=debug,
        )
    except KeyboardInterrupt as exc:
        return interrupted(exc, "the server stopped")
    except OSError as exc:
        if listening:
            raise
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use") from None
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on port {port} on {host}: {reason}") from None
    return EXIT_OK


def demo_urls(base: str, count: int) -> list[str]:
    """The demo's mix: mostly pages and items, a few misbehaving endpoints, one repeat."""
    urls: list[str] = []
    for i in range(count):
        if i % 100 == 99:
            urls.append(f"{base}/status/404?n={i}")
        elif i % 250 == 17:
            urls.append(f"{base}/flaky/1?key=demo{i}")
        elif i % 2:
            urls.append(f"{base}/items/{i % 10000 + 1}")
        else:
            urls.append(f"{base}/pages/{i}")
    return urls


def run_demo(*, count: int, out_dir: Path | None, quiet: bool, debug: bool) -> int:
    """The whole job offline: start the demo server, fetch ``count`` URLs, summarise."""
    import tempfile

    from fanout.demo import DemoServer

    target = out_dir or Path(tempfile.mkdtemp(prefix="fanout-demo-"))
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot make directory '{target}': {exc.strerror or exc}") from None
    urls_file = target / "urls.txt"
    output = target / "results.jsonl"
    stats = RunStats()
    live = None if quiet else _live(stats, count)

    async def main() -> tuple[str, JobOutcome]:
        async with DemoServer(latency=0.02, jitter=0.01, error_rate=0.01) as server:
            urls_file.write_text("\n".join(demo_urls(server.url, count)) + "\n")
            job = FetchJob(
                input_path=str(urls_file),
                output=str(output),
                out_dir=target / "pages",
                config=FetcherConfig(
                    limits=Limits(concurrency=64, per_host=64),
                    retry=RetryPolicy(attempts=3, backoff=0.05),
                    env_proxy=False,  # its own server, on loopback
                ),
            )
            outcome = await run_fetch_job(
                job,
                stats=stats,
                on_fetcher=live.attach if live else None,
                on_record=live.refresh if live else None,
            )
            return server.url, outcome

    try:
        with showing(live):
            base, outcome = run(main(), debug=debug)
    except KeyboardInterrupt as exc:
        _say(format_summary(stats.summary()))
        return interrupted(exc, f"the records fetched so far are in {output}")
    _say(f"demo server was {base}")
    _say(format_summary(outcome.summary))
    _say(
        f"records: {output}\npages:   {target / 'pages'}\n"
        "(the 404s are on purpose: the demo shows failures as records, not crashes)"
    )
    return EXIT_OK


def run_bench_command(
    *,
    count: int,
    latency: float,
    concurrency: int,
    sequential_cap: float,
    plot_path: str | None,
    as_json: bool,
) -> None:
    """``fanout bench``: run the four modes and print a table (or JSON)."""
    from rich.console import Console
    from rich.table import Table

    from fanout.jobs.bench import cpu_note, demo_server_process, plot, require_plotting, run_bench

    if plot_path is not None:
        require_plotting()
    with demo_server_process(latency) as base:
        results = run_bench(
            base, n=count, latency=latency, concurrency=concurrency, sequential_cap=sequential_cap
        )
    sequential = results[0].wall
    if as_json:
        data = {
            "n": count,
            "latency_s": latency,
            "concurrency": concurrency,
            "machine": cpu_note(),
            "results": [r.as_dict(sequential) for r in results],
        }
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        table = Table(
            title=f"{count} URLs, {latency * 1000:g} ms latency, concurrency {concurrency}"
            f" (lower bound {results[0].lower_bound:.2f} s)",
            caption=f"{cpu_note()}; * extrapolated from a capped run",
        )
        for column in ("mode", "wall (s)", "req/s", "speed-up", "x lower bound"):
            table.add_column(column, justify="left" if column == "mode" else "right")
        for r in results:
            table.add_row(
                r.mode + (" *" if r.extrapolated else ""),
                f"{r.wall:.2f}",
                f"{r.rate:,.0f}",
                f"{sequential / r.wall:.1f}x",
                f"{r.wall / r.lower_bound:.2f}",
            )
        Console().print(table)
    if plot_path is not None:
        plot(results, plot_path)


def run_status(path: Path, *, as_json: bool, check: bool = False) -> None:
    """``fanout status``: the counts of a journal (with ``check``, SQLite's
    integrity check first: its problems are printed, then raised as
    JournalError). Takes no lock: it reads a journal a run is using."""
    from fanout.errors import JournalError
    from fanout.journal import Journal

    with Journal.open(path, key_scheme="", create=False) as journal:
        problems = journal.check() if check else []
        counts = None if problems else journal.counts()
        hosts, sampled = ([], 0) if problems else journal.host_counts()
    if counts is None:
        _print_problems(path, problems, as_json=as_json)
        raise JournalError(
            f"journal '{_shown_path(path)}' is damaged: SQLite's integrity check found "
            f"{'a problem' if len(problems) == 1 else 'problems'} (listed above)"
        )
    if as_json:
        data = counts.as_dict()
        data["hosts"] = [host.as_dict() for host in hosts]
        data["hosts_sampled"] = sampled
        if check:
            data["integrity"] = {"ok": True, "problems": []}
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    failed = sum(counts.failed.values())
    click.echo(f"journal {_shown_path(path)}: {counts.runs} run(s), keys by {counts.key_scheme}")
    click.echo(f"  output   {_output_line(counts.output, counts.output_bytes)}")
    click.echo(f"  done     {counts.done:,}")
    click.echo(f"  failed   {failed:,}")
    for kind, count in counts.failed.items():
        click.echo(f"    {kind:<20} {count:,}")
    click.echo(
        f"  pending  {counts.pending:,}  (taken by a run, no result recorded: queued, in flight"
        " or not yet written when it stopped, or held by a run still going; the next run"
        " fetches them)"
    )
    if hosts:
        total = counts.done + failed + counts.pending
        over = "every key" if sampled == total else f"the first {sampled:,} keys"
        click.echo(f"  by host  (the {len(hosts)} with most keys, over {over})")
        click.echo(f"    {'host':<30} {'done':>10} {'failed':>10} {'pending':>10}")
        for host in hosts:
            click.echo(
                f"    {shown(host.host, 60):<30} {host.done:>10,} {host.failed:>10,}"
                f" {host.pending:>10,}"
            )
    if check:
        click.echo("  check    ok (SQLite's integrity check)")
    if counts.plain_keys:
        click.echo(
            f"  note: made by an older fanout (schema {counts.schema_version}): "
            f"{counts.plain_keys:,} key(s) with an '@' may hold URL credentials in plain text; "
            "the next 'fanout fetch --journal' run rewrites them"
        )


def _shown_path(path: Path | str) -> str:
    from fanout.safetext import shown

    return shown(str(path), 200)


def _output_line(output: str | None, size: int) -> str:
    if output is None:
        return "not recorded (a journal of an older fanout)"
    if output == "-":
        return "standard output"
    return f"{_shown_path(output)} ({size:,} bytes recorded)"


def _print_problems(path: Path, problems: list[str], *, as_json: bool) -> None:
    from fanout.safetext import shown

    if as_json:
        data = {"integrity": {"ok": False, "problems": problems}}
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"journal {_shown_path(path)}: SQLite's integrity check found problems:")
    for problem in problems:
        click.echo(f"  {shown(problem, 300)}")


def run_export(
    path: Path | None, output: str, fmt: str, *, redis: tuple[str, str] | None = None
) -> None:
    """``fanout export``: the recorded results as JSONL or CSV, of a journal
    (``path``) or of a Redis queue (``redis``: its URL and name). Takes no lock:
    it reads a journal a run is using. A file is written whole or not at all
    (a damaged journal leaves an existing file as it was)."""
    with contextlib.ExitStack() as stack:
        if redis is not None:
            from fanout.journal.export import write_records
            from fanout.redisq import records

            url, queue = redis
            found = records(url, queue=queue)
            first = next(found, None)  # Redis unreachable: raised before any file is touched
            every = itertools.chain([] if first is None else [first], found)

            def write(stream: BinaryIO) -> None:
                write_records(every, stream, fmt)
        else:
            from fanout.journal import Journal, export

            assert path is not None
            journal = stack.enter_context(Journal.open(path, key_scheme="", create=False))

            def write(stream: BinaryIO) -> None:
                export(journal, stream, fmt)

        if output == "-":
            write(sys.stdout.buffer)
            sys.stdout.flush()
            return
        try:
            with _replacing(Path(output)) as stream:
                write(stream)
        except OSError as exc:
            raise SinkError(f"cannot write '{_shown_path(output)}': {exc.strerror or exc}") from exc


def run_queue_status(url: str, queue: str, *, as_json: bool) -> None:
    """``fanout status --redis``: the counts of a Redis queue."""
    from fanout.redisq import status

    counts = status(url, queue=queue)
    if as_json:
        click.echo(orjson.dumps(counts.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    from fanout.redisq.queue import shown_url

    failed = sum(counts.failed.values())
    click.echo(f"queue {counts.queue} at {shown_url(url)} (format {counts.version})")
    click.echo(f"  keys       {counts.total:,}")
    click.echo(f"  pending    {counts.pending:,}  (not yet taken by a worker)")
    click.echo(
        f"  in flight  {counts.in_flight:,}  (taken, no result yet; a dead worker's are"
        " taken over after --reclaim-after)"
    )
    click.echo(f"  done       {counts.done:,}")
    click.echo(f"  failed     {failed:,}")
    for kind, count in counts.failed.items():
        click.echo(f"    {kind:<20} {count:,}")
    click.echo(f"  workers    {counts.workers_alive:,} alive (heard from in the last 15 s)")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it that replaces it at the
    end, if all went well; a link, a device or a pipe is written through, in
    place."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with path.open("wb") as stream:
            yield stream
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.export")
    # O_EXCL: never through a link someone left there; the mode is a new file's (umask)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
