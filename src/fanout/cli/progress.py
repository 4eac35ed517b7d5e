"""The live progress bar on stderr (rich; imported only when a bar is shown)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Final

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from fanout.engine import Fetcher
from fanout.engine.hoststats import HostSnapshot
from fanout.output.stats import RunStats

__all__ = ["HOST_ROWS", "LiveProgress", "eta_seconds", "hosts_table"]

HOST_ROWS: Final = 5
"""Hosts shown under the bar, the busiest first."""

_SNAPSHOT_EVERY: Final = 0.5  # seconds between two host snapshots


def hosts_table(rows: Iterable[HostSnapshot]) -> Table | None:
    """The busiest hosts as a small table, or None when there are none."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("host", "in flight", "req/s", "limit", "cool-down", "429s", "p50/p95 ms"):
        table.add_column(name, justify="left" if name == "host" else "right")
    for row in rows:
        limit = row["rate_limit"]
        cool = row["cool_down_s"]
        p50, p95 = row["p50_ms"], row["p95_ms"]
        table.add_row(
            row["host"],
            str(row["in_flight"]),
            f"{row['requests_per_s']:,.1f}",
            "-" if limit is None else f"{limit:g}/s {row['rate_source']}",
            f"{cool:.1f}s" if cool > 0 else "-",
            str(row["throttled"]),
            "-" if p50 is None or p95 is None else f"{p50:,.0f}/{p95:,.0f}",
        )
    return table if table.row_count else None


def eta_seconds(estimate: float | None, least: float, finished: bool) -> float | None:
    """The ETA the bar shows, in seconds: rich's ``estimate`` (the remaining
    count over the recent overall rate; None before it has one), raised to
    ``least``, what the hosts held to a rate need (:meth:`LiveProgress.held_left`).
    0.0 once finished; None when neither says anything yet."""
    if finished:
        return 0.0
    if least > 0 and (estimate is None or estimate < least):
        return least
    return estimate


class _TimeLeftColumn(TimeRemainingColumn):
    """The bar's ETA (:func:`eta_seconds`), drawn as rich draws its own."""

    def __init__(self, live: LiveProgress) -> None:
        super().__init__()
        self._live = live

    def render(self, task: Task) -> Text:
        left = eta_seconds(task.time_remaining, self._live.held_left(), task.finished)
        if left is not None and left != task.time_remaining:
            minutes, seconds = divmod(round(left), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")
        return super().render(task)


class _HostsProgress(Progress):
    """The bar, with the busiest hosts' table under it."""

    def __init__(self, live: LiveProgress, *columns: ProgressColumn, **options: object) -> None:
        self._live = live  # before the base class draws a first time
        super().__init__(*columns, **options)  # type: ignore[arg-type]

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        table = hosts_table(self._live.hosts)
        if table is not None:
            yield table


class _CountersColumn(ProgressColumn):
    """req/s, failures, retries and requests in flight."""

    def __init__(self, live: LiveProgress) -> None:
        super().__init__()
        self._live = live

    def render(self, task: Task) -> Text:
        stats = self._live.stats
        elapsed = task.elapsed or 0.0
        rate = stats.done / elapsed if elapsed > 0 else 0.0
        fetcher = self._live.fetcher
        # none with --workers: the fetchers are in other processes
        in_flight = f" in flight {fetcher.in_flight}" if fetcher is not None else ""
        return Text(
            f"{rate:,.0f}/s failed {stats.failed:,} retries {stats.retries:,}{in_flight}",
            style="progress.data.speed",
        )


class LiveProgress:
    """A rich progress bar that follows a :class:`RunStats` (and its Fetcher)."""

    def __init__(self, stats: RunStats, total: int | None, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.stats = stats
        self.fetcher: Fetcher | None = None
        # Taken on the event loop (in refresh): rich draws from a thread of its
        # own, which must not walk the fetcher's state while the loop changes it.
        self.hosts: list[HostSnapshot] = []
        self.least_left = 0.0  # seconds the rate-limited hosts need, at the snapshot
        self.total = total
        self._snapshot_at = -float("inf")
        self._progress = _HostsProgress(
            self,
            TextColumn("[bold]fetch"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            _CountersColumn(self),
            TimeElapsedColumn(),
            TextColumn("eta"),
            _TimeLeftColumn(self),
            console=console,
            refresh_per_second=8,
            transient=False,
        )
        self._task = self._progress.add_task("fetch", total=total)

    def attach(self, fetcher: Fetcher) -> None:
        """Show the in-flight count of ``fetcher``."""
        self.fetcher = fetcher

    def refresh(self) -> None:
        """Move the bar to the current count, and take the busiest hosts'
        figures at most every half second (cheap; rich redraws on its own
        clock)."""
        self._progress.update(self._task, completed=self.stats.done)
        fetcher = self.fetcher
        if fetcher is not None:
            now = time.monotonic()
            if now - self._snapshot_at >= _SNAPSHOT_EVERY:
                self._snapshot_at = now
                self.hosts = fetcher.host_stats(HOST_ROWS)
                total = self.total
                self.least_left = (
                    fetcher.least_time_left
                    if total is None
                    else fetcher.time_left(total - self.stats.done)
                )

    def held_left(self) -> float:
        """The seconds the hosts held to a rate need, as of the last snapshot,
        less the time since: :meth:`Fetcher.time_left` for the requests not
        yet done when the total is known (else :attr:`Fetcher.least_time_left`)."""
        return max(self.least_left - (time.monotonic() - self._snapshot_at), 0.0)

    @property
    def eta(self) -> float | None:
        """The seconds the bar's ETA shows now (:func:`eta_seconds`)."""
        task = self._progress.tasks[0]
        return eta_seconds(task.time_remaining, self.held_left(), task.finished)

    def set_total(self, total: int) -> None:
        """Set the total once it is known."""
        self.total = total
        self._progress.update(self._task, total=total)

    @contextlib.contextmanager
    def running(self) -> Iterator[LiveProgress]:
        """Show the bar for the duration of the block."""
        with self._progress:
            try:
                yield self
            finally:
                self.refresh()
