"""The live progress bar on stderr (rich; imported only when a bar is shown)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
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
from rich.text import Text

from fanout.engine import Fetcher
from fanout.output.stats import RunStats

__all__ = ["LiveProgress"]


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
        in_flight = fetcher.in_flight if fetcher is not None else 0
        return Text(
            f"{rate:,.0f}/s failed {stats.failed:,} retries {stats.retries:,}"
            f" in flight {in_flight}",
            style="progress.data.speed",
        )


class LiveProgress:
    """A rich progress bar that follows a :class:`RunStats` (and its Fetcher)."""

    def __init__(self, stats: RunStats, total: int | None, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.stats = stats
        self.fetcher: Fetcher | None = None
        self._progress = Progress(
            TextColumn("[bold]fetch"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            _CountersColumn(self),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=8,
            transient=False,
        )
        self._task = self._progress.add_task("fetch", total=total)

    def attach(self, fetcher: Fetcher) -> None:
        """Show the in-flight count of ``fetcher``."""
        self.fetcher = fetcher

    def refresh(self) -> None:
        """Move the bar to the current count (cheap; rich redraws on its own clock)."""
        self._progress.update(self._task, completed=self.stats.done)

    def set_total(self, total: int) -> None:
        """Set the total once it is known."""
        self._progress.update(self._task, total=total)

    @contextlib.contextmanager
    def running(self) -> Iterator[LiveProgress]:
        """Show the bar for the duration of the block."""
        with self._progress:
            try:
                yield self
            finally:
                self.refresh()
