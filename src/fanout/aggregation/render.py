"""The report as text, in the three forms of ``fanout aggregate --format``:
:func:`render_table` (rich tables), :func:`render_json` and :func:`render_csv`.

rich is imported only when a table is rendered."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from fanout.aggregation.report import MAX_PROBLEMS, AggregateReport
from fanout.aggregation.statistics import FieldStats
from fanout.aggregation.values import GroupKey

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["render_csv", "render_json", "render_table"]

STAT_COLUMNS = ("sum", "mean", "median", "min", "max", "stdev", "p90", "p99")
CSV_COLUMNS = (
    "scope",
    "group",
    "field",
    "records",
    "count",
    "missing",
    "wrong_type",
    *STAT_COLUMNS,
)


def render_json(report: AggregateReport) -> str:
    """The report as indented JSON (``--format json``): :meth:`AggregateReport.as_dict`.

    >>> print(render_json(report))  # doctest: +SKIP
    {
      "requests": {
    ...
    """
    import orjson

    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(report: AggregateReport) -> str:
    """The statistics as CSV (``--format csv``), one row per field and scope.

    Columns: ``scope`` (``all`` for every record, ``group`` for one group),
    ``group`` (the key; empty for ``all`` and for the missing group),
    ``field`` (empty on the record-count rows written when there is no
    field), ``records``, then ``count``, ``missing``, ``wrong_type`` and the
    statistics; an empty cell is "none".

    >>> print(render_csv(report))  # doctest: +SKIP
    scope,group,field,records,count,missing,wrong_type,sum,mean,median,min,max,stdev,p90,p99
    all,,likes,100,100,0,0,5050,50.5,50.5,1,100,29.011491975882016,90.1,99.01
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    scopes: list[tuple[str, GroupKey, int, Any]] = [("all", None, report.records, report.fields)]
    scopes.extend(("group", g.key, g.records, g.fields) for g in report.groups)
    for scope, key, records, fields in scopes:
        if not fields:
            writer.writerow([scope, _csv_cell(key), "", records, *[""] * (3 + len(STAT_COLUMNS))])
        for name, stats in fields.items():
            row = stats.as_dict()
            writer.writerow(
                [scope, _csv_cell(key), name, records]
                + [_csv_cell(row[column]) for column in CSV_COLUMNS[4:]]
            )
    return buffer.getvalue()


def _number(value: int | float) -> str:
    return _column([value])[0]


def _value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    import orjson

    return orjson.dumps(value).decode()


def _group_label(key: GroupKey) -> str:
    if key is None:
        return "(missing)"
    if isinstance(key, bool):
        return "true" if key else "false"
    return _value(key)


def _counts(counts: Any) -> str:
    return ", ".join(f"{k} x{v:,}" for k, v in counts.items())


def render_table(report: AggregateReport, console: Console) -> None:
    """Print the report as rich tables: the counts, the statistics, the top list,
    and the first problems. Text from the responses is printed as it is, never
    read as rich markup; a statistics table too wide for the terminal is split
    in two, so numbers are never cut.

    >>> from rich.console import Console  # doctest: +SKIP
    >>> render_table(report, Console(width=100))  # doctest: +SKIP
    """
    from rich.table import Table
    from rich.text import Text

    summary = Table(show_header=False, box=None, title="aggregate", title_justify="left")
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    source = report.source
    if source is not None:
        if source.error is None:
            skipped = f", {source.skipped:,} not usable as ids" if source.skipped else ""
            summary.add_row("ids", Text(f"{source.ids:,} from {source.url}{skipped}"))
        else:
            summary.add_row("ids", Text(f"none: {source.url}: {source.error}", style="red"))
    summary.add_row(
        "requests",
        Text.assemble(
            f"{report.requests:,}: {report.ok:,} ok, ",
            (f"{report.failures:,} failed", "red" if report.failures else ""),
        ),
    )
    if report.failed:
        summary.add_row("failures", _counts(report.failed))
    if report.statuses:
        summary.add_row("statuses", _counts(report.statuses))
    summary.add_row(
        "bodies",
        f"{report.json_bodies:,} JSON, {report.not_json:,} not JSON, {report.empty:,} empty",
    )
    summary.add_row("records", f"{report.records:,}")
    if report.pages or report.truncated or report.bad_next:
        summary.add_row(
            "pages",
            f"{report.pages:,} followed, {report.truncated:,} chains cut at --max-pages,"
            f" {report.bad_next:,} unusable next",
        )
    summary.add_row("elapsed", f"{report.elapsed:.2f} s")
    console.print(summary)

    if report.group_by is None:
        if report.fields:
            rows = [_StatsRow(name, None, stats) for name, stats in report.fields.items()]
            _print_stats(console, "statistics", "field", rows)
    elif not report.fields:
        table = Table(title=Text(f"records by {report.group_by}"), title_justify="left")
        table.add_column("group", overflow="fold")
        table.add_column("records", justify="right", no_wrap=True)
        for group in report.groups:
            table.add_row(Text(_group_label(group.key)), f"{group.records:,}")
        table.add_section()
        table.add_row("all", f"{report.records:,}", style="bold")
        console.print(table)
    else:
        for name, overall in report.fields.items():
            rows = [
                _StatsRow(_group_label(g.key), g.records, g.fields[name]) for g in report.groups
            ]
            rows.append(_StatsRow("all", report.records, overall, bold=True))
            _print_stats(console, f"{name} by {report.group_by}", "group", rows)

    if report.sort_by is not None:
        order = "lowest" if report.ascending else "top"
        title = Text(f"{order} {len(report.top)} by {report.sort_by}")
        table = Table(title=title, title_justify="left")
        table.add_column("#", justify="right", no_wrap=True)
        if report.group_by is not None:
            table.add_column("group", overflow="fold")
        names = list(report.top[0].values) if report.top else [report.sort_by]
        for name in names:
            numeric = name in report.fields
            table.add_column(
                Text(name),
                justify="right" if numeric else "left",
                no_wrap=numeric,
                overflow="fold",
            )
        table.add_column("url", overflow="fold")
        for record in report.top:
            row = [Text(str(record.rank))]
            if report.group_by is not None:
                row.append(Text(_group_label(record.group)))
            row.extend(Text(_value(record.values.get(name))) for name in names)
            row.append(Text(record.url))
            table.add_row(*row)
        console.print(table)

    if report.problems:
        shown = len(report.problems)
        heading = f"problems (the first {shown})" if shown >= MAX_PROBLEMS else "problems"
        table = Table(title=heading, title_justify="left")
        table.add_column("kind", style="red", no_wrap=True)
        table.add_column("url", overflow="fold")
        table.add_column("message", overflow="fold")
        for problem in report.problems:
            table.add_row(problem.kind, Text(problem.url), Text(problem.message))
        console.print(table)


class _StatsRow:
    """One line of a statistics table: its label, its record count, its statistics."""

    __slots__ = ("bold", "label", "records", "stats")

    def __init__(
        self, label: str, records: int | None, stats: FieldStats, *, bold: bool = False
    ) -> None:
        self.label = label
        self.records = records
        self.stats = stats
        self.bold = bold

    def values(self) -> dict[str, int | float | None]:
        stats = self.stats
        values: dict[str, int | float | None] = {}
        if self.records is not None:
            values["records"] = self.records
        values["count"] = stats.count
        values["missing"] = stats.missing
        values["wrong type"] = stats.wrong_type
        for column in STAT_COLUMNS:
            values[column] = getattr(stats, column)
        return values


def _column(values: list[int | float | None]) -> list[str]:
    """A column of numbers written alike: integers when all are whole, else the
    same number of decimals for all (2, or 4 below 1), so they line up."""
    numbers = [v for v in values if v is not None]
    biggest = max((abs(v) for v in numbers), default=0.0)
    whole = all(isinstance(v, int) or v.is_integer() for v in numbers)
    if whole and biggest < 1e15:
        return ["-" if v is None else f"{int(v):,}" for v in values]
    if biggest >= 1e15 or biggest < 1e-3:
        return ["-" if v is None else f"{v:.4g}" for v in values]
    decimals = 2 if biggest >= 1 else 4
    return ["-" if v is None else f"{v:,.{decimals}f}" for v in values]


_SPLIT = (("count", "missing", "wrong type", "sum", "mean"), STAT_COLUMNS[2:])


def _print_stats(console: Console, title: str, first: str, rows: list[_StatsRow]) -> None:
    """One table, or two side by side in meaning (counts and centre, then spread)
    when one would not fit the console's width."""
    columns = list(rows[0].values()) if rows else []
    table = _stats_table(title, first, columns, rows)
    natural = console.measure(table, options=console.options.update_width(1_000_000))
    if natural.maximum <= console.width:
        console.print(table)
        return
    lead = ["records"] if "records" in columns else []
    for part, columns_part in enumerate(_SPLIT):
        suffix = "" if part == 0 else " (continued)"
        console.print(_stats_table(title + suffix, first, [*lead, *columns_part], rows))


def _stats_table(title: str, first: str, columns: list[str], rows: list[_StatsRow]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    table.add_column(first, overflow="fold", min_width=min(8, max(len(first), 3)))
    raw = [row.values() for row in rows]
    cells: list[dict[str, str]] = [{} for _ in rows]
    for column in columns:
        texts = _column([values[column] for values in raw])
        for row_cells, text in zip(cells, texts, strict=True):
            row_cells[column] = text
        width = max([len(column), *(len(text) for text in texts)])
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    for row, row_cells in zip(rows, cells, strict=True):
        if row.bold:
            table.add_section()
        table.add_row(
            Text(row.label),
            *(row_cells[column] for column in columns),
            style="bold" if row.bold else None,
        )
    return table
