"""The report: :class:`AggregateReport` and the parts it is made of (groups,
top records, problems, the two-step source), frozen, with their JSON-able form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fanout.aggregation.statistics import FieldStats
from fanout.aggregation.values import GroupKey, _group_tag

MAX_PROBLEMS: Final = 10
"""How many problems (failed requests, bad bodies) a report lists by URL."""


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One group: its key, how many records fell in it, and each field's statistics.

    >>> GroupStats(key="books", records=0, fields={}).key
    'books'
    """

    key: GroupKey
    records: int
    fields: Mapping[str, FieldStats]

    def as_dict(self) -> dict[str, object]:
        """The group as plain JSON-able data."""
        return {
            "key": self.key,
            "records": self.records,
            "fields": {name: s.as_dict() for name, s in self.fields.items()},
        }


@dataclass(frozen=True, slots=True)
class TopRecord:
    """One record of the top list: where it came from and its chosen values
    (each field and shown value as extracted, before any coercion; one that
    JSON cannot hold, nested too deep or a number past the float range, is None).

    >>> TopRecord(rank=1, url="http://h.test/1", group=None, values={"score": 3}).values["score"]
    3
    """

    rank: int
    url: str
    group: GroupKey
    values: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Problem:
    """A request or body that gave no data, and why: an error kind
    (``timeout``, ``http_status``...), or ``not_json``, ``each`` or ``bad_next``.

    >>> Problem("http://h.test/json/bad", "not_json", "unexpected character").kind
    'not_json'
    """

    url: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """The two-step source: the id list's URL, what it gave, and why not if it failed.

    ``ids`` were used (at most ``limit``), ``skipped`` were not usable as ids.

    >>> SourceInfo(url="http://h.test/ids", status=200, ids=3, skipped=0, error=None).ok
    True
    """

    url: str
    status: int | None
    ids: int
    skipped: int
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the id list was read."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class AggregateReport:
    """Everything ``fanout aggregate`` prints: request counts, body counts,
    per-field statistics overall and per group, the top list and problems.

    ``requests`` counts results (the first pages, the pages followed, and
    inputs refused before sending); ``failed`` counts them by error kind and
    ``statuses`` every response by status. ``fields`` is over all records;
    ``groups`` is empty without ``group_by``.

    >>> report = aggregate(["http://127.0.0.1:8000/posts"], group_by="userId")  # doctest: +SKIP
    >>> [(g.key, g.records) for g in report.groups][:2]  # doctest: +SKIP
    [(1, 6), (2, 7)]
    """

    requests: int
    ok: int
    failed: Mapping[str, int]
    statuses: Mapping[int, int]
    json_bodies: int
    not_json: int
    empty: int
    records: int
    pages: int
    truncated: int
    bad_next: int
    group_by: str | None
    fields: Mapping[str, FieldStats]
    groups: tuple[GroupStats, ...]
    sort_by: str | None
    ascending: bool
    top: tuple[TopRecord, ...]
    problems: tuple[Problem, ...]
    source: SourceInfo | None
    elapsed: float

    @property
    def failures(self) -> int:
        """Requests that failed, all kinds together."""
        return sum(self.failed.values())

    def group(self, key: GroupKey) -> GroupStats:
        """The group with this key (KeyError when there is none)."""
        for group in self.groups:
            if _group_tag(group.key) == _group_tag(key):
                return group
        raise KeyError(key)

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-able data (``fanout aggregate --format json``)."""
        top: list[dict[str, object]] = []
        for record in self.top:
            entry: dict[str, object] = {"rank": record.rank, "url": record.url}
            if self.group_by is not None:
                entry["group"] = record.group
            entry["values"] = dict(record.values)
            top.append(entry)
        source = self.source
        return {
            "requests": {
                "total": self.requests,
                "ok": self.ok,
                "failed": dict(self.failed),
                "statuses": {str(k): v for k, v in self.statuses.items()},
            },
            "bodies": {"json": self.json_bodies, "not_json": self.not_json, "empty": self.empty},
            "records": self.records,
            "pagination": {
                "pages": self.pages,
                "truncated": self.truncated,
                "bad_next": self.bad_next,
            },
            "source": None
            if source is None
            else {
                "url": source.url,
                "status": source.status,
                "ids": source.ids,
                "skipped": source.skipped,
                "error": source.error,
            },
            "group_by": self.group_by,
            "fields": {name: s.as_dict() for name, s in self.fields.items()},
            "groups": [g.as_dict() for g in self.groups],
            "sort_by": self.sort_by,
            "ascending": self.ascending,
            "top": top,
            "problems": [
                {"url": p.url, "kind": p.kind, "message": p.message} for p in self.problems
            ],
            "elapsed_s": round(self.elapsed, 3),
        }
