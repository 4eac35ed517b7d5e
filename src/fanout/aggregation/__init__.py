"""JSON extraction and statistics over results: ``fanout aggregate`` as a library.

Fetch JSON APIs concurrently, pull values out of every record with JMESPath,
group them, and compute statistics, in one call::

    report = fanout.aggregate(
        expand("http://127.0.0.1:8000/items/{1..500}"),
        fields={"price": "price", "stock": "stock"},
        group_by="category",
    )
    report.fields["price"].median

The rules, which ``docs/aggregate.md`` states for users too:

- **Records.** Each JSON response body is one record; a body that is a JSON
  list gives one record per element. ``each`` (a JMESPath) picks the list of
  records inside a body instead (``items`` for ``{"items": [...]}``); when it
  gives an object that object is the one record. A body of ``null``, an empty
  list, or an ``each`` that gives null holds no record and is counted as
  ``empty``. Bodies are parsed as JSON whatever their Content-Type; those
  that do not parse count as ``not_json``. Bodies of failed requests (status
  400 or more, after retries) are not read; the request counts as failed.
- **Values.** A field's value counts when it is a JSON number. ``null`` or an
  absent key counts as ``missing``; anything else (a string, a boolean, an
  object, a JMESPath error on that data, such as one too deep for it)
  counts as ``wrong_type``. Integers past 64 bits count as floats, as the
  JSON parser reads them; a number past the float range (``"1e400"`` via
  ``to_number``, a 400-digit string) is ``wrong_type``. A field whose value
  is a list contributes each element (one level; an empty list is
  ``missing``), so ``items[].price`` works without ``each``.
- **Numbers in strings** are not numbers by default (``"12"`` is
  ``wrong_type``, so a schema drift shows up). With ``coerce_numbers=True`` a
  string that is a whole JSON-style decimal number (``"12"``, ``" -3.5e2 "``)
  counts as that number; ``"0x10"``, ``"1_000"``, ``"nan"`` and ``"inf"`` never do.
- **Statistics** (:class:`FieldStats`): ``sum`` (an exact ``int`` when every
  value is an integer), ``mean`` (:func:`statistics.fmean`), ``median``
  (:func:`statistics.median`: the middle value, or the mean of the two
  middle ones), ``min``, ``max``, ``stdev`` (the *sample* standard deviation,
  :func:`statistics.stdev`; None for fewer than 2 values), ``p90`` and
  ``p99``: linear interpolation between the closest ranks, exactly
  ``statistics.quantiles(values, n=100, method="inclusive")`` (numpy's
  default, Excel's PERCENTILE.INC); with one value they are that value.
  With no value at all, ``sum`` is 0 and the others are None. Where the
  float arithmetic overflows (values near 1e308), a statistic is computed
  exactly instead; one past the float range is ``inf`` (``null`` in JSON).
- **Groups.** ``group_by`` is evaluated on each record: strings, numbers and
  booleans are the group key as they are (``1`` and ``1.0`` are one group),
  a list or object becomes its compact JSON text (a string, keys sorted), and
  null or absent is the group ``None`` (shown as ``(missing)``), and so is
  a value that cannot be a key (nested past 254 levels, a number past the
  float range). Groups are
  sorted: numbers, then strings, then booleans, and ``(missing)`` last.
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
- **Two steps.** ``ids_from`` + ``select`` + ``template``: fetch one JSON
  document, take the list ``select`` gives (``@`` for a plain list), and
  fetch ``template`` with ``{}`` replaced by each id (integers, and strings
  percent-encoded; other values are counted as ``skipped``), the first
  ``limit`` of them. That first request is reported in ``source``, not in the
  request counts. If it fails, the report says so and has no records.

Whatever a body holds, it becomes one of these counted outcomes, never an
exception that ends the run: a bug would count as a failed request of kind
``internal``.

Memory: per field and group, the numbers (medians and percentiles need them)
and counters; bodies are dropped as soon as their values are taken. Bodies
are parsed one at a time; a parsed body takes up to about 40 times its size.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import orjson
from yarl import URL

from fanout.aggregation.expressions import (
    _EVAL_ERRORS,
    _first_line,
    _reason,
    _search,
    _shown_value,
    check_expression,
    parse_named,
)
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
from fanout.aggregation.templates import MAX_EXPANSION, check_id_template, expand, fill
from fanout.aggregation.values import (
    GroupKey,
    _group_key,
    _group_tag,
    _number,
    _writable,
)
from fanout.engine import DEFAULT_USER_AGENT, Fetcher
from fanout.errors import ConfigError
from fanout.models import ErrorKind, Failure, Request, Result
from fanout.policy import Caps, Limits, RetryPolicy, Timeouts
from fanout.records import redact_text, redact_url
from fanout.runtime import run_sync
from fanout.safetext import shown
from fanout.sources import Rejected
from fanout.urls import host_key, parse_request_url, parse_url

__all__ = [
    "MAX_EXPANSION",
    "AggregateReport",
    "AggregateSpec",
    "Aggregator",
    "FieldStats",
    "GroupKey",
    "GroupStats",
    "Problem",
    "SourceInfo",
    "TopRecord",
    "aggregate",
    "aggregate_async",
    "check_expression",
    "check_id_template",
    "expand",
    "fill",
    "parse_named",
]


Input: TypeAlias = str | Request | Rejected

_LINK_RE: Final = re.compile(r"<([^>]*)>([^<]*)")
_REL_RE: Final = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)

logger = logging.getLogger("fanout")


# ------------------------------------------------------------------ the core


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


def _same_origin(first: URL | Failure, second: str) -> bool:
    """Whether a request's parsed URL and another URL have one origin (scheme,
    canonical host and port)."""
    other = parse_url(second)
    if isinstance(first, Failure) or isinstance(other, Failure):
        return False
    return host_key(first) == host_key(other)


def _link_next(headers: Mapping[str, str], base: str) -> str | None:
    """The target of the first ``rel="next"`` link in the Link headers (RFC 8288 §3)."""
    getall = getattr(headers, "getall", None)
    values: list[str] = list(getall("Link", [])) if callable(getall) else []
    if not values:
        value = headers.get("Link") or headers.get("link")
        values = [value] if value else []
    for value in values:
        for target, params in _LINK_RE.findall(value):
            for quoted, bare in _REL_RE.findall(params):
                if "next" in (quoted or bare).lower().split():
                    try:
                        return str(URL(base).join(URL(target.strip())))
                    except ValueError:
                        return None
    return None


# ---------------------------------------------------------------- the loops


async def _inputs(urls: Iterable[Input] | AsyncIterable[Input]) -> AsyncIterator[Input]:
    if isinstance(urls, AsyncIterable):
        async for item in urls:
            yield item
    else:
        for item in urls:
            yield item


async def _fetch_ids(
    fetcher: Fetcher,
    url: str,
    select: jmespath.parser.ParsedResult,
    template: str,
    limit: int | None,
) -> tuple[SourceInfo, list[str]]:
    (result,) = await fetcher.gather([url])
    if result.error is not None:
        error = f"{result.error.kind}: {result.error.message}"
        return SourceInfo(url, result.status, 0, 0, error), []
    try:
        data = orjson.loads(result.body or b"")
    except orjson.JSONDecodeError as exc:
        return SourceInfo(url, result.status, 0, 0, f"not JSON: {_first_line(str(exc))}"), []
    try:
        ids = _search(select, data)
    except _EVAL_ERRORS as exc:
        return SourceInfo(url, result.status, 0, 0, f"select: {_reason(exc)}"), []
    if not isinstance(ids, list):
        kind = "null" if ids is None else type(ids).__name__
        error = f"select gave {kind}, not a list of ids"
        return SourceInfo(url, result.status, 0, 0, error), []
    urls: list[str] = []
    skipped = 0
    for value in ids:
        if limit is not None and len(urls) >= limit:
            break
        filled = fill(template, value)
        if filled is None:
            skipped += 1
        else:
            urls.append(filled)
    return SourceInfo(url, result.status, len(urls), skipped, None), urls


async def _drive(
    fetcher: Fetcher,
    aggregator: Aggregator,
    inputs: AsyncIterator[Input],
    on_result: Callable[[Result], None] | None,
) -> None:
    """Fetch every input and every page that follows, feeding results back.

    The source is a generator the Fetcher reads lazily; it ends once the inputs
    are exhausted and no result still out may lead to another page.
    """
    follow: list[Request] = []  # next pages go first: chains end, memory stays bounded
    pending = 0  # requests handed to the fetcher whose result is not fed yet
    waiter: asyncio.Future[None] | None = None
    serial = itertools.count()

    async def source() -> AsyncIterator[Request]:
        nonlocal pending, waiter
        inputs_done = False
        while True:
            if follow:
                request = follow.pop()
            elif not inputs_done:
                try:
                    item = await anext(inputs)
                except StopAsyncIteration:
                    inputs_done = True
                    continue
                index = next(serial)
                if isinstance(item, Rejected):
                    aggregator.reject(item, index)
                    continue
                base = item if isinstance(item, Request) else Request(item)
                request = replace(base, meta=aggregator.origin(index))
            elif pending:
                waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                finally:
                    waiter = None
                continue
            else:
                return
            pending += 1
            yield request

    async for result in fetcher.stream(source()):
        following = aggregator.feed(result)
        if on_result is not None:
            on_result(result)
        if following is not None:
            follow.append(following)
        pending -= 1
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def aggregate_async(
    urls: Iterable[Input] | AsyncIterable[Input] = (),
    *,
    fields: Mapping[str, str] | None = None,
    group_by: str | None = None,
    each: str | None = None,
    show: Mapping[str, str] | None = None,
    top: int | None = None,
    sort_by: str | None = None,
    ascending: bool = False,
    coerce_numbers: bool = False,
    next_page: str | None = None,
    next_link: bool = False,
    cursor_param: str | None = None,
    max_pages: int = 100,
    ids_from: str | None = None,
    select: str = "@",
    template: str | None = None,
    limit: int | None = None,
    fetcher: Fetcher | None = None,
    limits: Limits | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    caps: Caps | None = None,
    headers: Mapping[str, str] | None = None,
    user_agent: str = DEFAULT_USER_AGENT,
    on_result: Callable[[Result], None] | None = None,
) -> AggregateReport:
    """Fetch ``urls`` (and the pages they lead to), extract, group, summarise.

    ``urls`` are URL strings or :class:`Request` objects (a :class:`Rejected`
    input line is counted as a failed request), read lazily. The extraction
    options are those of :class:`AggregateSpec`; ``ids_from``, ``select``,
    ``template`` and ``limit`` add the URLs of the two-step fan-out after
    ``urls``. Requests go through ``fetcher`` when given (its limits and
    retries apply; then ``limits`` and the other fetch options must not be
    given, and it must keep bodies, as it does by default), else through a new
    :class:`Fetcher` built from those options.
    ``on_result`` sees every result, for a progress display. Failed requests
    and bad bodies are counted in the report, never raised; a bad option
    raises :class:`ConfigError`.

    >>> async def main(base: str) -> None:  # doctest: +SKIP
    ...     report = await aggregate_async(
    ...         [f"{base}/posts"], group_by="userId", fields={"likes": "likes"}
    ...     )
    ...     print(report.group(1).records, report.fields["likes"].mean)
    """
    spec = AggregateSpec(
        fields=fields or {},
        group_by=group_by,
        each=each,
        show=show or {},
        top=top,
        sort_by=sort_by,
        ascending=ascending,
        coerce_numbers=coerce_numbers,
        next_page=next_page,
        next_link=next_link,
        cursor_param=cursor_param,
        max_pages=max_pages,
    )
    compiled_select = _check_source(ids_from, select, template, limit)
    own_options = (limits, retry, timeouts, caps, headers)
    if fetcher is not None and (
        any(o is not None for o in own_options) or user_agent != DEFAULT_USER_AGENT
    ):
        raise ConfigError("give a fetcher or fetch options (limits, retry...), not both")
    aggregator = Aggregator(spec)
    started = time.perf_counter()

    async def run(active: Fetcher) -> SourceInfo | None:
        source_info: SourceInfo | None = None
        id_urls: list[str] = []
        if ids_from is not None:
            assert template is not None
            assert compiled_select is not None
            source_info, id_urls = await _fetch_ids(
                active, ids_from, compiled_select, template, limit
            )

        async def everything() -> AsyncIterator[Input]:
            async for item in _inputs(urls):
                yield item
            for url in id_urls:
                yield url

        await _drive(active, aggregator, everything(), on_result)
        return source_info

    if fetcher is not None:
        source_info = await run(fetcher)
    else:
        async with Fetcher(
            limits=limits,
            retry=retry,
            timeouts=timeouts,
            caps=caps,
            headers=headers,
            user_agent=user_agent,
        ) as own:
            source_info = await run(own)
    return aggregator.report(elapsed=time.perf_counter() - started, source=source_info)


def _check_source(
    ids_from: str | None, select: str, template: str | None, limit: int | None
) -> jmespath.parser.ParsedResult | None:
    if ids_from is None:
        if template is not None or limit is not None or select != "@":
            raise ConfigError("template, select and limit need ids_from (the id list's URL)")
        return None
    if template is None:
        raise ConfigError("ids_from needs template (a URL with '{}' for each id)")
    check_id_template(template)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    return check_expression(select, what="select")


def aggregate(
    urls: Iterable[Input] = (),
    *,
    fields: Mapping[str, str] | None = None,
    group_by: str | None = None,
    each: str | None = None,
    show: Mapping[str, str] | None = None,
    top: int | None = None,
    sort_by: str | None = None,
    ascending: bool = False,
    coerce_numbers: bool = False,
    next_page: str | None = None,
    next_link: bool = False,
    cursor_param: str | None = None,
    max_pages: int = 100,
    ids_from: str | None = None,
    select: str = "@",
    template: str | None = None,
    limit: int | None = None,
    limits: Limits | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    caps: Caps | None = None,
    headers: Mapping[str, str] | None = None,
    user_agent: str = DEFAULT_USER_AGENT,
) -> AggregateReport:
    """The synchronous twin of :func:`aggregate_async` (same options, same report).

    Runs its own event loop, or a private one in a worker thread where a loop
    is already running (a notebook), like :func:`fanout.fetch`.

    >>> report = aggregate(  # doctest: +SKIP
    ...     ids_from="http://127.0.0.1:8000/v0/topstories.json",
    ...     template="http://127.0.0.1:8000/v0/item/{}.json",
    ...     limit=100,
    ...     fields={"score": "score"},
    ...     top=5,
    ...     sort_by="score",
    ...     show={"title": "title"},
    ... )
    >>> report.fields["score"].median  # doctest: +SKIP
    """
    options: dict[str, Any] = {
        "fields": fields,
        "group_by": group_by,
        "each": each,
        "show": show,
        "top": top,
        "sort_by": sort_by,
        "ascending": ascending,
        "coerce_numbers": coerce_numbers,
        "next_page": next_page,
        "next_link": next_link,
        "cursor_param": cursor_param,
        "max_pages": max_pages,
        "ids_from": ids_from,
        "select": select,
        "template": template,
        "limit": limit,
        "limits": limits,
        "retry": retry,
        "timeouts": timeouts,
        "caps": caps,
        "headers": headers,
        "user_agent": user_agent,
    }
    return run_sync(lambda: aggregate_async(urls, **options))
