"""The pure core: :class:`Aggregator` takes results one by one (their
records, values, next pages, problems) and makes the report. It does no I/O.

The rules, which ``docs/aggregate.md`` states for users too (those for values
and groups are in :mod:`fanout.aggregation.values`):

- **Records.** Each JSON response body is one record; a body that is a JSON
  list gives one record per element. ``each`` (a JMESPath) picks the list of
  records inside a body instead (``items`` for ``{"items": [...]}``); when it
  gives an object that object is the one record. A body of ``null``, an empty
  list, or an ``each`` that gives null holds no record and is counted as
  ``empty``. Bodies are parsed as JSON whatever their Content-Type; those
  that do not parse count as ``not_json``. Bodies of failed requests (status
  400 or more, after retries) are not read; the request counts as failed.
- **Top.** ``top`` records with the highest (``ascending``: lowest) numeric
  ``sort_by`` field, ties broken by input order. Records whose sort field is
  not a single number are left out. A value kept for the top list that JSON
  cannot hold (nested too deep to write) is kept as None.
- **Pagination.** ``next_page`` (a JMESPath on each page's body) gives the
  next page: a URL, absolute or relative to the page's URL; or, with
  ``cursor_param``, a cursor (string or integer) set as that query parameter
  of the page's URL. ``next_link=True`` follows the ``Link: <...>;
  rel="next"`` header (RFC 8288) instead. A chain stops when there is no next
  page (null, absent, ``""``), after ``max_pages`` pages (counted as
  ``truncated``), or at a value that is not usable or a page seen before in
  the chain (counted as ``bad_next``).

Whatever a body holds, it becomes one of these counted outcomes, never an
exception that ends the run: a bug would count as a failed request of kind
``internal``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import orjson
from yarl import URL

from fanout.aggregation.expressions import (
    _EVAL_ERRORS,
    _first_line,
    _reason,
    _search,
    _shown_value,
)
from fanout.aggregation.links import _link_next, _same_origin
from fanout.aggregation.report import (
    MAX_PROBLEMS,
    AggregateReport,
    GroupStats,
    Problem,
    SourceInfo,
    TopRecord,
)
from fanout.aggregation.spec import AggregateSpec
from fanout.aggregation.statistics import FieldStats, _GroupAcc
from fanout.aggregation.values import GroupKey, _group_key, _group_tag, _number, _writable
from fanout.inputs.sources import Rejected
from fanout.models import ErrorKind, Request, Result
from fanout.safetext import shown
from fanout.urls import parse_request_url, redact_text, redact_url

logger = logging.getLogger("fanout")


class _Origin:
    """Where a request sits in the input: its index, its page, the chain's URLs."""

    __slots__ = ("index", "page", "seen")

    def __init__(self, index: int, page: int, seen: set[str] | None) -> None:
        self.index = index
        self.page = page
        self.seen = seen


class Aggregator:
    """The pure core of :func:`aggregate_async`: feed it results, read a report.

    It does no I/O. :meth:`feed` takes one :class:`Result` and returns the
    next page's :class:`Request` when pagination asks for one; a driver loop
    (like :func:`aggregate_async`) fetches it and feeds the result back.

    >>> agg = Aggregator(AggregateSpec(fields={"n": "n"}))
    >>> body = b'[{"n": 1}, {"n": 2}, {"n": "3"}]'
    >>> agg.feed(Result(request=Request("http://h.test/a"), status=200, body=body))
    >>> stats = agg.report().fields["n"]
    >>> stats.count, stats.sum, stats.wrong_type
    (2, 3, 1)
    """

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        compiled = spec._compiled
        self._fields = [(name, compiled[f"fields:{name}"]) for name in spec.fields]
        self._show = [(name, compiled[f"show:{name}"]) for name in spec.show]
        self._group_by = compiled.get("group_by")
        self._each = compiled.get("each")
        self._next = compiled.get("next_page")
        self._coerce = spec.coerce_numbers
        self._groups: dict[tuple[int, Any], _GroupAcc] = {}
        self._top: list[tuple[tuple[Any, ...], int, TopRecord]] = []
        self._problems: list[tuple[tuple[int, int, int], int, Problem]] = []
        self._ties = itertools.count(0, -1)  # on equal keys, the one fed first wins
        self._serial = itertools.count(1_000_000_000_000)  # after any real input index
        self.requests = 0
        self.ok = 0
        self.failed: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.json_bodies = 0
        self.not_json = 0
        self.empty = 0
        self.records = 0
        self.pages = 0
        self.truncated = 0
        self.bad_next = 0

    # ------------------------------------------------------------- feeding

    def origin(self, index: int) -> Any:
        """The ``meta`` to give the request of input number ``index``, so the
        top list breaks ties and the problem list orders by input order."""
        return _Origin(index, 0, set() if self.spec.paginates else None)

    def reject(self, rejected: Rejected, index: int | None = None) -> None:
        """Count an input that was refused before any request (bad line, bad URL)."""
        self.requests += 1
        self.failed[str(rejected.kind)] += 1
        order = (next(self._serial) if index is None else index, 0, 0)
        self._problem(order, Problem(rejected.text, str(rejected.kind), rejected.reason))

    def feed(self, result: Result) -> Request | None:
        """Take one result's records and values; return the next page to fetch, if any."""
        meta = result.request.meta
        origin = meta if isinstance(meta, _Origin) else _Origin(next(self._serial), 0, None)
        order = (origin.index, origin.page, 0)
        self.requests += 1
        if origin.page:
            self.pages += 1
        if result.status is not None:
            self.statuses[result.status] += 1
        if result.error is not None:
            kind = str(result.error.kind)
            self.failed[kind] += 1
            self._problem(order, Problem(result.url, kind, result.error.message))
            return None
        self.ok += 1
        try:
            return self._take(result, origin, order)
        except Exception as exc:  # a bug: this request fails, the run goes on
            logger.debug("unexpected error taking %s", result.url, exc_info=exc)
            self.ok -= 1
            self.failed[ErrorKind.INTERNAL.value] += 1
            self._problem(order, Problem(result.url, ErrorKind.INTERNAL.value, shown(repr(exc))))
            return None

    def _take(self, result: Result, origin: _Origin, order: tuple[int, int, int]) -> Request | None:
        """Count a response's body and take its records; the next page, if any."""
        try:
            if result.body is None:
                raise orjson.JSONDecodeError("no body was kept", "", 0)
            data = orjson.loads(result.body)
        except orjson.JSONDecodeError as exc:
            self.not_json += 1
            self._problem(order, Problem(result.url, "not_json", _first_line(str(exc))[:200]))
            return None
        self.json_bodies += 1
        following = self._next_request(result, origin, data)
        records = self._records(result, order, data)
        if not records:
            self.empty += 1
        for position, record in enumerate(records):
            self._add(record, result.url, (origin.index, origin.page, position))
        return following

    def _records(self, result: Result, order: tuple[int, int, int], data: object) -> list[Any]:
        if self._each is not None:
            try:
                data = _search(self._each, data)
            except _EVAL_ERRORS as exc:
                self._problem(order, Problem(result.url, "each", _reason(exc)))
                return []
            if data is None:
                return []
            return data if isinstance(data, list) else [data]
        if data is None:
            return []
        return data if isinstance(data, list) else [data]

    def _add(self, record: object, url: str, order: tuple[int, int, int]) -> None:
        self.records += 1
        key: GroupKey = None
        if self._group_by is not None:
            try:
                key = _group_key(_search(self._group_by, record))
            except _EVAL_ERRORS:
                key = None
        tag = _group_tag(key)
        group = self._groups.get(tag)
        if group is None:
            group = self._groups[tag] = _GroupAcc(key, self.spec.fields)
        group.records += 1
        extracted: dict[str, object] = {}
        coerce = self._coerce
        for name, expression in self._fields:
            acc = group.fields[name]
            try:
                value = _search(expression, record)
            except _EVAL_ERRORS:
                acc.wrong_type += 1
                extracted[name] = None
                continue
            extracted[name] = value
            for item in value if isinstance(value, list) else (value,):
                if item is None:
                    acc.missing += 1
                    continue
                number = _number(item, coerce)
                if number is None:
                    acc.wrong_type += 1
                else:
                    acc.values.append(number)
            if isinstance(value, list) and not value:
                acc.missing += 1
        if self.spec.sort_by is not None:
            self._offer(record, url, order, key, extracted)

    def _offer(
        self,
        record: object,
        url: str,
        order: tuple[int, int, int],
        group: GroupKey,
        extracted: dict[str, object],
    ) -> None:
        """Keep the record if it is among the top N so far (a min-heap of the best)."""
        assert self.spec.sort_by is not None
        assert self.spec.top is not None
        raw = extracted[self.spec.sort_by]
        value = None if isinstance(raw, list) else _number(raw, self._coerce)
        if value is None:
            return
        # Bigger is better in the heap; on ties an earlier input is better.
        rank_key = (-value if self.spec.ascending else value, -order[0], -order[1], -order[2])
        heap = self._top
        if len(heap) >= self.spec.top and rank_key <= heap[0][0]:
            return  # not better than the worst kept (an equal one came earlier)
        values = {name: _writable(item) for name, item in extracted.items()}
        for name, expression in self._show:
            try:
                values[name] = _writable(_search(expression, record))
            except _EVAL_ERRORS:
                values[name] = None
        entry = (rank_key, next(self._ties), TopRecord(rank=0, url=url, group=group, values=values))
        if len(heap) >= self.spec.top:
            heapq.heapreplace(heap, entry)
        else:
            heapq.heappush(heap, entry)

    def _problem(self, order: tuple[int, int, int], problem: Problem) -> None:
        """Keep the first MAX_PROBLEMS problems in input order (a max-heap by order)."""
        key = (-order[0], -order[1], -order[2])
        heap = self._problems
        entry = (key, next(self._ties), problem)
        if len(heap) < MAX_PROBLEMS:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)

    # ---------------------------------------------------------- pagination

    def _next_request(self, result: Result, origin: _Origin, data: object) -> Request | None:
        if not self.spec.paginates:
            return None
        base = result.final_url or result.url
        target: str | None
        if self._next is not None:
            try:
                value = _search(self._next, data)
            except _EVAL_ERRORS as exc:
                self._bad_next(result, origin, _reason(exc))
                return None
            if value is None or value == "":
                return None
            target = self._next_target(base, value)
            if target is None:
                self._bad_next(
                    result, origin, f"next page value {_shown_value(value)} is not usable"
                )
                return None
        else:
            target = _link_next(result.headers, base)
            if target is None:
                return None
        seen = origin.seen if origin.seen is not None else set()
        seen.add(result.url)
        if target in seen:
            # Hidden before the cut, which could fall inside a long password.
            shown_target = shown(redact_url(target))
            self._bad_next(result, origin, f"next page {shown_target} was already fetched")
            return None
        if origin.page + 1 >= self.spec.max_pages:
            self.truncated += 1
            return None
        request = result.request
        # The server chose this URL: the credentials given for the first page's
        # origin go only to that origin, as on a redirect.
        trusted = request.send_credentials and _same_origin(parse_request_url(request), target)
        return replace(
            request,
            url=target,
            key=None,
            meta=_Origin(origin.index, origin.page + 1, seen),
            send_credentials=trusted,
        )

    def _next_target(self, base: str, value: object) -> str | None:
        try:
            if self.spec.cursor_param is not None:
                if isinstance(value, bool) or not isinstance(value, str | int):
                    return None
                return str(URL(base).update_query({self.spec.cursor_param: str(value)}))
            if not isinstance(value, str):
                return None
            return str(URL(base).join(URL(value)))
        except ValueError:
            return None

    def _bad_next(self, result: Result, origin: _Origin, message: str) -> None:
        self.bad_next += 1
        self._problem((origin.index, origin.page, 0), Problem(result.url, "bad_next", message))

    # -------------------------------------------------------------- report

    def report(self, *, elapsed: float = 0.0, source: SourceInfo | None = None) -> AggregateReport:
        """A frozen report of everything fed so far. URL credentials
        (``user:password@``) in its URLs and messages are replaced by ``***@``."""
        names = list(self.spec.fields)
        accs = [self._groups[tag] for tag in sorted(self._groups)]
        overall: dict[str, FieldStats] = {}
        for name in names:
            parts = [g.fields[name] for g in accs]
            overall[name] = FieldStats.of(
                itertools.chain.from_iterable(p.values for p in parts),
                missing=sum(p.missing for p in parts),
                wrong_type=sum(p.wrong_type for p in parts),
            )
        groups: tuple[GroupStats, ...] = ()
        if self.spec.group_by is not None:
            groups = tuple(
                GroupStats(
                    key=g.key,
                    records=g.records,
                    fields=MappingProxyType(
                        {
                            name: FieldStats.of(
                                acc.values, missing=acc.missing, wrong_type=acc.wrong_type
                            )
                            for name, acc in g.fields.items()
                        }
                    ),
                )
                for g in accs
            )
        ranked = sorted(self._top, key=lambda entry: entry[:2], reverse=True)
        top = tuple(
            replace(record, rank=rank, url=redact_url(record.url))
            for rank, (_, _, record) in enumerate(ranked, start=1)
        )
        by_order = sorted(self._problems, key=lambda entry: entry[:2], reverse=True)
        problems = tuple(_redacted(problem) for _, _, problem in by_order)
        if source is not None:
            error = None if source.error is None else redact_text(source.error)
            source = replace(source, url=redact_url(source.url), error=error)
        return AggregateReport(
            requests=self.requests,
            ok=self.ok,
            failed=MappingProxyType(dict(sorted(self.failed.items()))),
            statuses=MappingProxyType(dict(sorted(self.statuses.items()))),
            json_bodies=self.json_bodies,
            not_json=self.not_json,
            empty=self.empty,
            records=self.records,
            pages=self.pages,
            truncated=self.truncated,
            bad_next=self.bad_next,
            group_by=self.spec.group_by,
            fields=MappingProxyType(overall),
            groups=groups,
            sort_by=self.spec.sort_by,
            ascending=self.spec.ascending,
            top=top,
            problems=problems,
            source=source,
            elapsed=elapsed,
        )


def _redacted(problem: Problem) -> Problem:
    """The problem with the credentials of every URL in it hidden (its ``url``
    may be a rejected input line, so a URL anywhere in it)."""
    return Problem(redact_text(redact_url(problem.url)), problem.kind, redact_text(problem.message))
