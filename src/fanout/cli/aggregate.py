"""``fanout aggregate``: fetch JSON, extract fields, print statistics.

A thin shell over :mod:`fanout.aggregation`: parse and check the options (a bad
one is a one-line usage error, exit 2), run :func:`~fanout.aggregation.aggregate_async`,
print the :class:`~fanout.aggregation.AggregateReport` on stdout with the
renderers of :mod:`fanout.aggregation.render` (rich tables, JSON or CSV).
Exit status 0 once a report is printed, even if some requests failed (the
report shows them); 1 when the ``--from`` id list could not be read, so
nothing was aggregated.

Only click and light modules are imported here; the library, aiohttp and
rich load when the command runs, so ``fanout --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from fanout.cli.options import FilePath, debug_option, fetcher_config, http_options

if TYPE_CHECKING:
    from rich.console import Console

    from fanout.aggregation import AggregateReport
    from fanout.inputs.sources import Rejected
    from fanout.models import Request

__all__ = ["aggregate"]

EXIT_OK, EXIT_NO_SOURCE = 0, 1


# ------------------------------------------------------------ option parsing


def _checked(
    parse: Callable[[str, str], Any],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback converting each value with ``parse(value, option_name)``;
    a ValueError (ConfigError is one) becomes a usage error naming the option."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        longest = max(param.opts, key=len, default="")
        name = longest if longest.startswith("--") else str(param.human_readable_name)
        try:
            if isinstance(value, tuple):
                return tuple(parse(v, name) for v in value)
            return parse(value, name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


def _expression(text: str, option: str) -> str:
    from fanout.aggregation import check_expression

    check_expression(text, what="")
    return text


def _named(text: str, option: str) -> tuple[str, str]:
    from fanout.aggregation import check_expression, parse_named

    name, expression = parse_named(text, what=option)
    check_expression(expression, what="" if name == expression else f"name {name!r}")
    return name, expression


def _utf8(text: str, option: str) -> str:
    """``text`` itself, refused when the command line gave bytes that are not
    UTF-8: they cannot go into a URL nor be printed in a JSON report."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        from fanout.safetext import shown

        raise ValueError(f"not valid UTF-8: '{shown(text, 200)}'") from None
    return text


def _query_name(text: str, option: str) -> str:
    if not text:
        raise ValueError("the name is empty")
    return _utf8(text, option)


def _template(text: str, option: str) -> str:
    from fanout.aggregation import expand

    _utf8(text, option)
    expand(text)  # checks the braces and the count now; expanded again lazily later
    return text


def _id_template(text: str, option: str) -> str:
    from fanout.aggregation import check_id_template

    _utf8(text, option)
    check_id_template(text)
    return text


def _no_duplicates(pairs: tuple[tuple[str, str], ...], option: str) -> None:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise click.UsageError(f"{option} name {name!r} is given twice")
        seen.add(name)


def _check_combination(o: dict[str, Any]) -> None:
    """Options that make no sense together, or alone: one-line usage errors."""
    if not (o["targets"] or o["input_path"] or o["ids_from"]):
        raise click.UsageError(
            "no input: give URLs or URL templates, -i FILE, or --from URL with --template"
        )
    if o["ids_from"] is None:
        for name in ("template", "select", "limit"):
            if o[name] is not None:
                raise click.UsageError(f"--{name} needs --from (the URL of the id list)")
    elif o["template"] is None:
        raise click.UsageError("--from needs --template (a URL with '{}' for each id)")
    if o["next_page"] is not None and o["next_link"]:
        raise click.UsageError("give --next EXPR or --next-link, not both")
    if o["cursor_param"] is not None and o["next_page"] is None:
        raise click.UsageError("--cursor-param needs --next (the expression giving the cursor)")
    if o["max_pages"] is not None and o["next_page"] is None and not o["next_link"]:
        raise click.UsageError("--max-pages needs --next EXPR or --next-link")
    _no_duplicates(o["fields"], "--field")
    _no_duplicates(o["show"], "--show")
    names = {name for name, _ in o["fields"]}
    clash = sorted(names & {name for name, _ in o["show"]})
    if clash:
        raise click.UsageError(f"--show name {clash[0]!r} is already a --field")
    if o["sort_by"] is None:
        for name in ("top", "show"):
            if o[name]:
                raise click.UsageError(f"--{name} needs --sort-by FIELD")
        if o["ascending"]:
            raise click.UsageError("--ascending needs --sort-by FIELD")
    elif o["sort_by"] not in names:
        known = ", ".join(sorted(names)) or "none given"
        raise click.UsageError(f"--sort-by {o['sort_by']!r} is not a --field name ({known})")
    if o["output_format"] == "csv" and o["sort_by"] is not None:
        raise click.UsageError("--format csv has no room for the top list: use --format json")


# ------------------------------------------------------------------ command


@click.command()
@click.argument("targets", nargs=-1, metavar="[URL|TEMPLATE]...", callback=_checked(_template))
@click.option(
    "-i",
    "--input",
    "input_path",
    type=FilePath(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="More URLs, one per line ('-' for stdin).",
)
@click.option(
    "--from",
    "ids_from",
    metavar="URL",
    callback=_checked(_utf8),
    help="Read a list of ids from this JSON endpoint...",
)
@click.option(
    "--select",
    metavar="EXPR",
    callback=_checked(_expression),
    help="...the JMESPath giving the id list in it.  [default: @, the whole body]",
)
@click.option(
    "--template",
    metavar="URL",
    callback=_checked(_id_template),
    help="...and fetch this URL for each id, '{}' standing for the id.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N ids.")
@click.option(
    "-f",
    "--field",
    "fields",
    metavar="NAME=EXPR",
    multiple=True,
    callback=_checked(_named),
    help="A value to summarise: JMESPath on each record (repeatable).",
)
@click.option(
    "--group-by", metavar="EXPR", callback=_checked(_expression), help="Statistics per group."
)
@click.option(
    "--each",
    metavar="EXPR",
    callback=_checked(_expression),
    help="The records inside each body, e.g. 'items'.  [default: the body, or its elements]",
)
@click.option("--top", type=click.IntRange(min=1), help="List N top records.  [default: 10]")
@click.option("--sort-by", metavar="FIELD", help="The --field ranking the top list.")
@click.option("--ascending", is_flag=True, help="Rank the lowest values first.")
@click.option(
    "--show",
    metavar="NAME=EXPR",
    multiple=True,
    callback=_checked(_named),
    help="A value shown in the top list only, e.g. title=title (repeatable).",
)
@click.option("--coerce-numbers", is_flag=True, help='Count numbers in strings ("12") as numbers.')
@click.option(
    "--next",
    "next_page",
    metavar="EXPR",
    callback=_checked(_expression),
    help="JMESPath giving the next page's URL (or cursor).",
)
@click.option("--next-link", is_flag=True, help='Follow Link: <...>; rel="next" headers.')
@click.option(
    "--cursor-param",
    metavar="NAME",
    callback=_checked(_query_name),
    help="--next gives a cursor: set it as this query parameter.",
)
@click.option(
    "--max-pages", type=click.IntRange(min=1), help="Pages per chain at most.  [default: 100]"
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    help="How to print the report.",
)
@http_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@debug_option
@click.pass_context
def aggregate(ctx: click.Context, /, **options: Any) -> None:
    """Fetch JSON APIs concurrently; extract fields; print statistics.

    Each JSON body is a record (a JSON list: each element is one; --each
    picks the list inside a body). Per --field: count, missing, wrong type,
    sum, mean, median, min, max, stdev, p90, p99, overall and per --group-by
    group. Failed requests and bodies that are not JSON are counted and
    shown; they never stop the run.

    \b
    Examples:
      fanout aggregate 'http://127.0.0.1:8000/items/{1..500}' -f price -f stock \\
          --group-by category
      fanout aggregate http://127.0.0.1:8000/posts --group-by userId -f likes
      fanout aggregate --from http://127.0.0.1:8000/v0/topstories.json \\
          --template 'http://127.0.0.1:8000/v0/item/{}.json' --limit 100 \\
          -f score -f comments=descendants --top 5 --sort-by score --show title=title
      fanout aggregate 'http://127.0.0.1:8000/items?per_page=50' --each items \\
          --next next -f price --format json
    """
    _check_combination(options)
    root = ctx.find_root().obj
    debug = bool(root.get("debug")) if isinstance(root, dict) else False
    try:
        report = _run(options, debug=debug)
    except KeyboardInterrupt as exc:
        from fanout.cli.commands import interrupted

        ctx.exit(interrupted(exc, "no report (it is printed once every request is done)"))
    from fanout.aggregation.render import render_csv, render_json, render_table
    from fanout.cli.stdout import write_all

    fmt = options["output_format"]
    if fmt == "json":
        write_all(render_json(report) + "\n")
    elif fmt == "csv":
        write_all(render_csv(report))
    else:
        from rich.console import Console

        console = _stdout_console(Console)
        if console.is_terminal:
            render_table(report, console)
        else:  # rendered whole, then written whole (see fanout.cli.stdout)
            with console.capture() as captured:
                render_table(report, console)
            write_all(captured.get())
    source = report.source
    if source is not None and source.error is not None:
        click.echo(f"fanout: error: --from {source.url}: {source.error}", err=True)
        ctx.exit(EXIT_NO_SOURCE)
    ctx.exit(EXIT_OK)


def _stdout_console(console_type: type[Console]) -> Console:
    """Rich on stdout; wide when not a terminal, so a file gets whole rows."""
    console = console_type(highlight=False)
    if not console.is_terminal:
        console = console_type(highlight=False, width=max(console.width, 160))
    return console


def _inputs(options: dict[str, Any]) -> Iterator[str | Request | Rejected]:
    """The URL arguments, each template expanded lazily, then the -i lines."""
    from fanout.aggregation import expand
    from fanout.inputs.sources import open_input, read_url_lines

    for target in options["targets"]:
        yield from expand(target)
    if options["input_path"] is not None:
        with open_input(options["input_path"]) as stream:
            yield from read_url_lines(stream)


def _total(options: dict[str, Any]) -> int | None:
    """How many results to expect, when it is known before the run."""
    from fanout.aggregation import expand

    paginates = options["next_page"] is not None or options["next_link"]
    if options["ids_from"] or options["input_path"] or paginates:
        return None
    return sum(sum(1 for _ in expand(target)) for target in options["targets"])


def _run(options: dict[str, Any], *, debug: bool) -> AggregateReport:
    from fanout.aggregation import aggregate_async
    from fanout.cli.commands import showing
    from fanout.engine import Fetcher
    from fanout.output.stats import RunStats
    from fanout.runtime import run

    show_bar = not options["quiet"] and _stderr_is_terminal()
    config = fetcher_config(options)

    stats = RunStats()
    live = None
    if show_bar:
        from fanout.cli.progress import LiveProgress

        live = LiveProgress(stats, _total(options))

    async def main() -> AggregateReport:
        async with Fetcher(config) as fetcher:
            if live is None:
                return await _aggregate(fetcher, None)
            live.attach(fetcher)
            shown = live

            def seen(result: Any) -> None:
                stats.add(result)
                shown.refresh()

            return await _aggregate(fetcher, seen)

    async def _aggregate(fetcher: Fetcher, on_result: Any) -> AggregateReport:
        return await aggregate_async(
            _source(options),
            fields=dict(options["fields"]),
            group_by=options["group_by"],
            each=options["each"],
            show=dict(options["show"]),
            top=options["top"],
            sort_by=options["sort_by"],
            ascending=options["ascending"],
            coerce_numbers=options["coerce_numbers"],
            next_page=options["next_page"],
            next_link=options["next_link"],
            cursor_param=options["cursor_param"],
            max_pages=options["max_pages"] or 100,
            ids_from=options["ids_from"],
            select=options["select"] or "@",
            template=options["template"],
            limit=options["limit"],
            fetcher=fetcher,
            on_result=on_result,
        )

    with showing(live):  # around the run: see showing
        return run(main(), debug=debug)


def _source(options: dict[str, Any]) -> AsyncIterator[str | Request | Rejected]:
    """The inputs, read in a thread when -i is a pipe or a terminal (see
    :mod:`fanout.inputs.blocking_input`), else on the loop."""
    from fanout.inputs.blocking_input import ThreadedReader, reads_block

    path = options["input_path"]
    if path is not None and reads_block(path):
        return ThreadedReader(_inputs(options))
    return _async(_inputs(options))


async def _async(
    items: Iterator[str | Request | Rejected],
) -> AsyncIterator[str | Request | Rejected]:
    """Hand a sync iterator over as an async one, so it is read lazily, inside the loop,
    and an error reading -i (a SourceError) surfaces from the run."""
    for item in items:
        yield item


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
