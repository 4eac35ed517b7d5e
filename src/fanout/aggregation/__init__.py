"""JSON extraction and statistics over results: ``fanout aggregate`` as a library.

Fetch JSON APIs concurrently, pull values out of every record with JMESPath,
group them, and compute statistics, in one call::

    report = fanout.aggregate(
        expand("http://127.0.0.1:8000/items/{1..500}"),
        fields={"price": "price", "stock": "stock"},
        group_by="category",
    )
    report.fields["price"].median

The rules, which ``docs/aggregate.md`` states for users too, are each in the
docstring of the module that applies them. The modules:

- :mod:`~fanout.aggregation.templates`: URL templates (``{1..500}``) and the
  id templates of the two-step fan-out (``{}``);
- :mod:`~fanout.aggregation.expressions`: JMESPath expressions, checked up
  front and evaluated on data;
- :mod:`~fanout.aggregation.spec`: :class:`AggregateSpec`, the extraction
  options, checked once;
- :mod:`~fanout.aggregation.driver`: :func:`aggregate_async` and
  :func:`aggregate`, which fetch and feed (the two-step rule);
- :mod:`~fanout.aggregation.aggregator`: :class:`Aggregator`, the pure core
  (the rules for records, the top list and pagination), with
  :mod:`~fanout.aggregation.links` for ``Link`` headers;
- :mod:`~fanout.aggregation.values`: what a value counts as (the rules for
  values, numbers in strings and groups);
- :mod:`~fanout.aggregation.statistics`: :class:`FieldStats` and the
  accumulators (the statistics rule);
- :mod:`~fanout.aggregation.report`: :class:`AggregateReport` and its parts;
- :mod:`~fanout.aggregation.render`: the report as rich tables, JSON or CSV.

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
