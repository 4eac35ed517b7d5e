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

from fanout.aggregation.aggregator import Aggregator
from fanout.aggregation.driver import aggregate, aggregate_async
from fanout.aggregation.expressions import check_expression, parse_named
from fanout.aggregation.report import AggregateReport, GroupStats, Problem, SourceInfo, TopRecord
from fanout.aggregation.spec import AggregateSpec
from fanout.aggregation.statistics import FieldStats
from fanout.aggregation.templates import MAX_EXPANSION, check_id_template, expand, fill
from fanout.aggregation.values import GroupKey

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
