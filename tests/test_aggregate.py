"""fanout aggregate: extraction, statistics, groups, pagination, and its command.

Behaviour tests run against the real demo server on 127.0.0.1. Expected
values are computed here, independently, from the server's own responses
(fetched with plain aiohttp) and Python's ``statistics`` module.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import re
import statistics
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from fanout import ConfigError, ErrorKind, Fetcher, Limits, Request, Result, RetryPolicy
from fanout.aggregation import (
    AggregateReport,
    AggregateSpec,
    Aggregator,
    FieldStats,
    aggregate,
    aggregate_async,
    check_expression,
    expand,
    fill,
    parse_named,
)
from fanout.cli import cli, main
from fanout.demo import DemoServer
from fanout.inputs.sources import Rejected

NO_RETRY = RetryPolicy(attempts=1)
WIDE = Limits(concurrency=32, per_host=32)


# ------------------------------------------------------------------ helpers


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, url
        return json.loads(await response.read())


async def get_all(urls: Iterable[str]) -> list[Any]:
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(get_json(session, url) for url in urls)))


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_stats(
    stats: FieldStats, values: list[float], *, missing: int = 0, wrong: int = 0
) -> None:
    """Every statistic, against the statistics module (computed independently)."""
    assert stats.count == len(values)
    assert stats.missing == missing
    assert stats.wrong_type == wrong
    assert stats.sum == pytest.approx(math.fsum(values), rel=1e-12)
    assert stats.mean == pytest.approx(statistics.mean(values), rel=1e-12)
    assert stats.median == pytest.approx(statistics.median(values), rel=1e-12)
    assert stats.min == min(values)
    assert stats.max == max(values)
    assert stats.stdev == pytest.approx(statistics.stdev(values), rel=1e-9)
    percentiles = statistics.quantiles(values, n=100, method="inclusive")
    assert stats.p90 == pytest.approx(percentiles[89], rel=1e-12)
    assert stats.p99 == pytest.approx(percentiles[98], rel=1e-12)


def ok(base: str, path: str) -> Result:
    return Result(request=Request(base + path), status=200, body=b"{}")


def body_result(agg: Aggregator, index: int, url: str, body: object, **extra: Any) -> Result:
    return Result(
        request=Request(url, meta=agg.origin(index)),
        status=200,
        body=json.dumps(body).encode(),
        **extra,
    )


# ------------------------------------------------------------- statistics


async def test_every_statistic_matches_the_statistics_module(server: DemoServer) -> None:
    urls = list(expand(f"{server.url}/items/{{1..300}}"))
    items = await get_all(urls)
    report = await aggregate_async(
        urls, fields={"price": "price", "stock": "stock"}, limits=WIDE, retry=NO_RETRY
    )
    assert (report.requests, report.ok, report.records) == (300, 300, 300)
    assert_stats(report.fields["price"], [i["price"] for i in items])
    assert_stats(report.fields["stock"], [i["stock"] for i in items])
    assert isinstance(report.fields["stock"].sum, int)  # integers sum exactly
    assert report.groups == ()


@given(
    st.lists(
        st.one_of(
            st.integers(-(10**6), 10**6),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        ),
        min_size=2,
        max_size=200,
    )
)
def test_field_stats_agree_with_statistics_on_any_numbers(values: list[float]) -> None:
    stats = FieldStats.of(values)
    assert stats.count == len(values)
    assert stats.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    assert stats.median == statistics.median(values)
    assert (stats.min, stats.max) == (min(values), max(values))
    assert stats.stdev == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-6)
    expected = statistics.quantiles(values, n=100, method="inclusive")
    assert stats.p90 == pytest.approx(expected[89], rel=1e-9, abs=1e-6)
    assert stats.p99 == pytest.approx(expected[98], rel=1e-9, abs=1e-6)


def test_field_stats_of_zero_and_one_value() -> None:
    empty = FieldStats.of([], missing=2, wrong_type=1)
    assert (empty.count, empty.missing, empty.wrong_type, empty.sum) == (0, 2, 1, 0)
    assert empty.mean is empty.median is empty.stdev is empty.p90 is empty.p99 is None
    one = FieldStats.of([7.5])
    assert (one.sum, one.mean, one.median, one.min, one.max, one.p90, one.p99) == (7.5,) * 7
    assert one.stdev is None


# ----------------------------------------------------------------- groups


async def test_posts_per_user_grouped(server: DemoServer) -> None:
    (posts,) = await get_all([f"{server.url}/posts"])
    likes: dict[int, list[float]] = defaultdict(list)
    for post in posts:
        likes[post["userId"]].append(post["likes"])
    report = await aggregate_async(
        [f"{server.url}/posts"], group_by="userId", fields={"likes": "likes"}
    )
    assert report.records == len(posts)
    assert [g.key for g in report.groups] == sorted(likes)  # numbers in numeric order
    for group in report.groups:
        assert isinstance(group.key, int)
        assert group.records == len(likes[group.key])
        assert_stats(group.fields["likes"], likes[group.key])
    assert_stats(report.fields["likes"], [p["likes"] for p in posts])
    assert len({g.records for g in report.groups}) > 1  # uneven counts, as promised
    assert report.group(3).records == len(likes[3])


async def test_two_step_posts_per_user_from_the_users_list(server: DemoServer) -> None:
    (users,) = await get_all([f"{server.url}/users"])
    (posts,) = await get_all([f"{server.url}/posts"])
    report = await aggregate_async(
        ids_from=f"{server.url}/users",
        select="[].id",
        template=f"{server.url}/posts?userId={{}}",
        group_by="userId",
    )
    assert report.source is not None
    assert (report.source.ids, report.source.skipped, report.source.error) == (len(users), 0, None)
    assert report.requests == len(users)
    expected = {u["id"]: sum(1 for p in posts if p["userId"] == u["id"]) for u in users}
    assert {g.key: g.records for g in report.groups} == expected


def test_group_keys_of_every_type_are_kept_apart_and_sorted() -> None:
    agg = Aggregator(AggregateSpec(group_by="k", fields={"v": "v"}))
    records = [
        {"k": "b", "v": 1},
        {"k": 2, "v": 1},
        {"k": True, "v": 1},
        {"k": 1, "v": 1},
        {"k": 1.0, "v": 1},
        {"v": 1},
        {"k": None, "v": 1},
        {"k": [1, 2], "v": 1},
        {"k": "a", "v": 1},
    ]
    agg.feed(body_result(agg, 0, "http://h.test/x", records))
    report = agg.report()
    assert [(g.key, g.records) for g in report.groups] == [
        (1, 2),
        (2, 1),
        ("[1,2]", 1),
        ("a", 1),
        ("b", 1),
        (True, 1),
        (None, 2),
    ]


# ------------------------------------------------------- the top stories


async def stories(server: DemoServer, limit: int) -> tuple[list[int], list[Any]]:
    (ids,) = await get_all([f"{server.url}/v0/topstories.json"])
    ids = ids[:limit]
    return ids, await get_all(f"{server.url}/v0/item/{i}.json" for i in ids)


@pytest.mark.parametrize("coerce", [False, True])
async def test_top_story_scores(server: DemoServer, coerce: bool) -> None:
    _, bodies = await stories(server, 300)
    report = await aggregate_async(
        ids_from=f"{server.url}/v0/topstories.json",
        template=f"{server.url}/v0/item/{{}}.json",
        limit=300,
        fields={"score": "score"},
        top=5,
        sort_by="score",
        show={"title": "title"},
        coerce_numbers=coerce,
        limits=WIDE,
    )
    present = [b for b in bodies if b is not None]
    scores = [b["score"] for b in present if is_number(b.get("score"))]
    strings = [b["score"] for b in present if isinstance(b.get("score"), str)]
    missing = sum(1 for b in present if b.get("score") is None)
    assert strings
    assert missing
    assert len(present) < len(bodies)  # some stories are null
    if coerce:
        scores += [float(s) for s in strings]
    assert_stats(
        report.fields["score"], scores, missing=missing, wrong=0 if coerce else len(strings)
    )
    assert (report.requests, report.json_bodies, report.records) == (300, 300, len(present))
    assert report.empty == len(bodies) - len(present)
    assert report.source is not None
    assert report.source.ids == 300
    ranked = sorted(
        (
            (float(b["score"]), rank, b)
            for rank, b in enumerate(bodies)
            if b is not None and (is_number(b.get("score")) or (coerce and "score" in b))
        ),
        key=lambda t: (-t[0], t[1]),
    )[:5]
    assert [(t.rank, t.values["title"]) for t in report.top] == [
        (n, b["title"]) for n, (_, _, b) in enumerate(ranked, start=1)
    ]
    assert [t.url for t in report.top] == [
        f"{server.url}/v0/item/{b['id']}.json" for _, _, b in ranked
    ]


def test_top_ties_follow_input_order_and_ascending_ranks_lowest() -> None:
    for ascending, expected in ((False, ["b", "d", "a"]), (True, ["c", "a", "b"])):
        agg = Aggregator(
            AggregateSpec(
                fields={"s": "s"}, sort_by="s", top=3, ascending=ascending, show={"n": "n"}
            )
        )
        rows = [("a", 2), ("b", 5), ("c", 1), ("d", 5), ("e", "9"), ("f", None)]
        for index, (name, score) in enumerate(rows):
            agg.feed(body_result(agg, index, f"http://h.test/{name}", {"s": score, "n": name}))
        assert [t.values["n"] for t in agg.report().top] == expected


# ------------------------------------------------------------- pagination


async def test_pagination_by_next_expression_across_many_pages(server: DemoServer) -> None:
    (everything,) = await get_all([f"{server.url}/items?per_page=1000"])
    items = everything["items"]
    per_page = 7
    pages = math.ceil(len(items) / per_page)
    report = await aggregate_async(
        [f"{server.url}/items?per_page={per_page}"],
        each="items",
        next_page="next",
        max_pages=pages + 10,
        fields={"price": "price"},
        group_by="category",
    )
    assert (report.requests, report.pages, report.truncated) == (pages, pages - 1, 0)
    assert report.records == len(items)
    assert_stats(report.fields["price"], [i["price"] for i in items])
    by_category: dict[str, list[float]] = defaultdict(list)
    for item in items:
        by_category[item["category"]].append(item["price"])
    assert [g.key for g in report.groups] == sorted(by_category)
    for group in report.groups:
        assert isinstance(group.key, str)
        assert_stats(group.fields["price"], by_category[group.key])


async def test_pagination_by_link_header_stops_at_max_pages(server: DemoServer) -> None:
    starts = [f"{server.url}/items?per_page=10&start={n}" for n in range(3)]
    report = await aggregate_async(starts, each="items", next_link=True, max_pages=12)
    assert (report.requests, report.pages, report.truncated) == (36, 33, 3)
    assert report.records == 360
    full = await aggregate_async(starts[:1], each="items", next_link=True, max_pages=1000)
    assert (full.requests, full.truncated, full.records) == (100, 0, 1000)


def test_cursor_relative_urls_link_headers_and_loops() -> None:
    base = "http://h.test/api/list?size=2"
    agg = Aggregator(AggregateSpec(next_page="meta.cursor", cursor_param="after", max_pages=5))
    following = agg.feed(body_result(agg, 0, base, {"meta": {"cursor": "c2"}}))
    assert following is not None
    assert following.url == "http://h.test/api/list?size=2&after=c2"
    again = agg.feed(Result(request=following, status=200, body=b'{"meta": {"cursor": 7}}'))
    assert again is not None
    assert again.url == "http://h.test/api/list?size=2&after=7"
    assert agg.feed(Result(request=again, status=200, body=b'{"meta": {"cursor": [1]}}')) is None
    assert agg.report().bad_next == 1

    agg = Aggregator(AggregateSpec(next_page="next"))
    following = agg.feed(body_result(agg, 0, "http://h.test/a/p1", {"next": "p2?x=1"}))
    assert following is not None
    assert following.url == "http://h.test/a/p2?x=1"
    loop = agg.feed(Result(request=following, status=200, body=b'{"next": "/a/p1"}'))
    assert loop is None
    report = agg.report()
    assert report.bad_next == 1
    assert report.problems[-1].kind == "bad_next"

    agg = Aggregator(AggregateSpec(next_link=True))
    headers = {"Link": '<http://h.test/first>; rel="first", </b?page=3>; rel="prev next"'}
    following = agg.feed(body_result(agg, 0, "http://h.test/a", [], headers=headers))
    assert following is not None
    assert following.url == "http://h.test/b?page=3"
    assert agg.feed(body_result(agg, 1, "http://h.test/c", [], headers={})) is None


# ------------------------------------------------------- nothing crashes it


async def test_bad_bodies_failures_and_missing_fields_are_counted(server: DemoServer) -> None:
    base = server.url
    good = list(expand(f"{base}/items/{{1..20}}"))
    (ids,) = await get_all([f"{base}/v0/topstories.json"])
    stories = await get_all(f"{base}/v0/item/{i}.json" for i in ids)
    null_story = next(i for i, s in zip(ids, stories, strict=True) if s is None)
    no_score = next(i for i, s in zip(ids, stories, strict=True) if s and "score" not in s)
    text_score = next(
        i for i, s in zip(ids, stories, strict=True) if s and isinstance(s.get("score"), str)
    )
    urls = [
        *good,
        f"{base}/json/bad",
        f"{base}/pages/1",
        f"{base}/status/500",
        f"{base}/items/0",
        f"{base}/v0/item/{null_story}.json",
        f"{base}/v0/item/{no_score}.json",
        f"{base}/v0/item/{text_score}.json",
        f"{base}/posts?userId=99",
        "ftp://127.0.0.1/x",
        "http://127.0.0.1:1/refused",
    ]
    report = await aggregate_async(
        [*urls, Rejected(99, "http://bad line", ErrorKind.INVALID_URL, "whitespace")],
        fields={"price": "price", "score": "score", "tags": "tags"},
        retry=NO_RETRY,
    )
    items = await get_all(good)
    assert report.requests == len(urls) + 1
    assert report.failed == {
        "connect": 1,
        "http_status": 2,
        "invalid_url": 1,
        "unsupported_scheme": 1,
    }
    assert report.ok == len(good) + 6
    assert report.statuses == {200: len(good) + 6, 404: 1, 500: 1}
    assert (report.not_json, report.empty) == (2, 2)  # bad JSON, HTML; null, []
    assert report.records == len(good) + 2
    price = report.fields["price"]
    assert_stats(price, [i["price"] for i in items], missing=2)
    score = report.fields["score"]
    assert (score.count, score.missing, score.wrong_type) == (0, len(good) + 1, 1)
    tags = report.fields["tags"]  # lists count element by element; [] is missing
    assert tags.count == 0
    assert tags.wrong_type == sum(len(i["tags"]) for i in items)
    assert tags.missing == sum(1 for i in items if not i["tags"]) + 2
    kinds = {p.url: p.kind for p in report.problems}
    assert kinds[f"{base}/json/bad"] == "not_json"
    assert kinds[f"{base}/status/500"] == "http_status"
    assert len(report.problems) == 7
    assert [p.url for p in report.problems][:2] == [f"{base}/json/bad", f"{base}/pages/1"]


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_DEEP_OBJECT = b'[{"a": 1, "b": ' + _deep(300) + b"}]"
_U64 = b"18446744073709551615"


def feed_and_render(body: bytes, **spec: Any) -> AggregateReport:
    """Feed one body, then render the report in every format, as the command does."""
    from rich.console import Console

    from fanout.aggregation.render import render_csv, render_json, render_table

    agg = Aggregator(AggregateSpec(**spec))
    agg.feed(Result(request=Request("http://h.test/p", meta=agg.origin(0)), status=200, body=body))
    report = agg.report()
    json.loads(render_json(report))
    render_csv(report)
    render_table(report, Console(file=io.StringIO(), width=100, color_system=None))
    assert "internal" not in report.failed
    return report


@pytest.mark.parametrize(
    ("body", "spec", "count", "wrong"),
    [
        # Each of these raised and ended the run (RecursionError, OverflowError,
        # ValueError, or orjson's TypeError when writing the report).
        (_deep(1000), {"fields": {"f": "to_string(@)"}}, 0, 1),
        (_deep(1000), {"each": "to_string(@)"}, None, None),
        (_DEEP_OBJECT, {"fields": {"f": "a"}, "sort_by": "f", "show": {"s": "b"}}, 1, 0),
        (_DEEP_OBJECT, {"fields": {"f": "a", "g": "b"}, "sort_by": "f"}, 1, 0),
        (b'["' + b"9" * 400 + b'"]', {"fields": {"f": "@"}, "coerce_numbers": True}, 0, 1),
        (b'["' + b"9" * 5000 + b'"]', {"fields": {"f": "@"}, "coerce_numbers": True}, 0, 1),
        (b'["' + b"9" * 400 + b'"]', {"fields": {"f": "to_number(@)"}}, 0, 1),
        (b"[" + b",".join([_U64] * 3) + b"]", {"fields": {"f": "@"}}, 3, 0),
        (b"[[" + b",".join([_U64] * 3) + b"]]", {"fields": {"f": "sum(@)"}}, 1, 0),
        (b"[[" + b",".join([_U64] * 3) + b"]]", {"group_by": "sum(@)"}, None, None),
        (b"[1.7e308, 1.7e308]", {"fields": {"f": "@"}}, 2, 0),
        (b"[1.7e308, -1.7e308]", {"fields": {"f": "@"}}, 2, 0),
        (b'[{"a": "' + b"9" * 400 + b'"}]', {"fields": {"f": "a"}, "sort_by": "f"}, 0, 1),
        (b'["1e400"]', {"fields": {"f": "to_number(@)"}, "group_by": "to_number(@)"}, 0, 1),
        (b'{"a": "' + b"x" * 100_000 + b'"}', {"each": "sum(a)"}, None, None),
        (_deep(1024), {"fields": {"f": "@ == @"}, "group_by": "@"}, 0, 1),
        (b"[" + _deep(1000) + b"," + _deep(1000) + b"]", {"fields": {"f": "sort(@)"}}, 0, 2),
    ],
)
def test_hostile_bodies_are_counted_never_raised(
    body: bytes, spec: dict[str, Any], count: int | None, wrong: int | None
) -> None:
    report = feed_and_render(body, **spec)
    assert report.json_bodies == 1
    if count is not None:
        stats = report.fields["f"]
        assert (stats.count, stats.wrong_type) == (count, wrong)
    for problem in report.problems:
        assert len(problem.message) <= 501


def test_hostile_pagination_values_are_bad_next() -> None:
    for value in [
        b'"' + b"a" * 100_000 + b'"',
        b'"http://[::1"',
        b'{"a": "' + b"x" * 10_000 + b'"}',
    ]:
        report = feed_and_render(b'{"next": ' + value + b"}", next_page="next")
        assert report.bad_next + report.pages <= 1
        assert all(len(p.message) <= 600 for p in report.problems)
    report = feed_and_render(b'{"next": ' + _U64 + b"}", next_page="next", cursor_param="c")
    assert report.bad_next == 0
    # repr() of a value this deep raised RecursionError while writing the message.
    for cursor in (None, "c"):
        report = feed_and_render(
            b'{"next": ' + _deep(1000) + b"}", next_page="next", cursor_param=cursor
        )
        assert report.bad_next == 1
        assert (
            report.problems[0].message
            == "next page value (a list that cannot be shown) is not usable"
        )


def test_statistics_near_and_past_the_float_range() -> None:
    # fsum and (a + b) / 2 overflow here; the exact results are floats.
    near = FieldStats.of([1.7e308, 1.7e308])
    assert (near.mean, near.median, near.p90, near.stdev) == (1.7e308, 1.7e308, 1.7e308, 0.0)
    assert near.sum == math.inf
    spread = FieldStats.of([-1.7e308, 1.7e308])
    assert (spread.sum, spread.mean, spread.median) == (0.0, 0.0, 0.0)
    assert spread.p90 == pytest.approx(1.36e308)
    assert spread.stdev == math.inf  # about 2.4e308
    huge = FieldStats.of([10**400, 10**400 + 1])
    assert (huge.sum, huge.mean, huge.median, huge.min, huge.max) == (math.inf,) * 5
    assert huge.stdev == pytest.approx(math.sqrt(0.5))
    u64 = FieldStats.of([2**64 - 1] * 3)
    assert u64.sum == pytest.approx(3 * 2**64)
    assert isinstance(u64.sum, float)  # JSON has no integer past 64 bits
    assert u64.max == 2**64 - 1


_big_numbers = st.one_of(
    st.integers(-(10**500), 10**500),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 5e-324]),
)


@given(st.lists(_big_numbers, max_size=50))
def test_field_stats_of_any_numbers_never_raise_and_can_be_written(values: list[float]) -> None:
    stats = FieldStats.of(values)
    as_json = json.loads(orjson_dumps(stats.as_dict()))
    assert as_json["count"] == len(values)
    for name, value in stats.as_dict().items():
        assert value is None or isinstance(value, int | float), name
        assert not (isinstance(value, float) and math.isnan(value)), name


def orjson_dumps(value: object) -> bytes:
    import orjson

    return orjson.dumps(value)


def _nested(depth: int, leaf: bytes) -> bytes:
    return b"[" * depth + leaf + b"]" * depth


_LEAVES = [
    b"1",
    b"-2.5",
    b"1.7e308",
    _U64,
    b"-9223372036854775808",
    b'"' + b"9" * 400 + b'"',
    b'"1e400"',
    b'"12"',
    b'"x"',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"http://h.test/next"',
    b'"//[::1"',
]


def _array(values: list[bytes]) -> bytes:
    return b"[" + b",".join(values) + b"]"


def _object(values: list[bytes]) -> bytes:
    pairs = zip([b"a", b"b", b"c", b"n"], values, strict=False)
    return b"{" + b",".join(b'"%s":%s' % pair for pair in pairs) + b"}"


_json_bodies = st.recursive(
    st.sampled_from(_LEAVES),
    lambda inner: (
        st.lists(inner, max_size=4).map(_array) | st.lists(inner, max_size=4).map(_object)
    ),
    max_leaves=20,
)
_any_bodies = (
    _json_bodies
    | st.builds(_nested, st.integers(1, 100_000) | st.integers(240, 1030), st.sampled_from(_LEAVES))
    | st.binary(max_size=100)
)
_expressions = st.sampled_from(
    [
        "a", "@", "a[]", "n", "to_string(@)", "sort(@)", "@ == @", "max_by(@, &a)",
        "to_number(a)", "sum(@)", "avg(@)", "length(@)", "keys(@)", "sort_by(@, &a)",
        "abs(a)", "ceil(a)", "max(@)", "map(&to_number(@), @)", "[a, b]", "{x: a}",
    ]
)  # fmt: skip


@given(
    st.lists(_any_bodies, min_size=1, max_size=3),
    _expressions,
    _expressions,
    st.none() | _expressions,
    st.none() | _expressions,
    st.booleans(),
    st.booleans(),
    st.none() | _expressions,
)
def test_any_bodies_and_expressions_are_counted_never_raised(
    bodies: list[bytes],
    first: str,
    second: str,
    group_by: str | None,
    each: str | None,
    coerce: bool,
    top: bool,
    next_page: str | None,
) -> None:
    agg = Aggregator(
        AggregateSpec(
            fields={"f": first, "g": second},
            group_by=group_by,
            each=each,
            coerce_numbers=coerce,
            sort_by="f" if top else None,
            show={"s": second} if top else {},
            next_page=next_page,
            max_pages=3,
        )
    )
    for index, body in enumerate(bodies):
        result = Result(
            request=Request("http://h.test/p", meta=agg.origin(index)), status=200, body=body
        )
        following = agg.feed(result)
        if following is not None:
            agg.feed(Result(request=following, status=200, body=body))
    report = agg.report()
    assert "internal" not in report.failed
    assert report.json_bodies + report.not_json == report.ok
    json.loads(orjson_dumps(report.as_dict()))


async def test_field_lists_flatten_and_numbers_in_strings(server: DemoServer) -> None:
    (page,) = await get_all([f"{server.url}/items?page=2&per_page=20"])
    report = await aggregate_async(
        [f"{server.url}/items?page=2&per_page=20"],
        fields={"price": "items[].price", "total": "sum(items[].stock)", "bad": "length(page)"},
    )
    assert report.records == 1
    assert_stats(report.fields["price"], [i["price"] for i in page["items"]])
    assert report.fields["total"].sum == sum(i["stock"] for i in page["items"])
    assert report.fields["bad"].wrong_type == 1  # a JMESPath type error, not a crash

    agg = Aggregator(AggregateSpec(fields={"n": "n"}, coerce_numbers=True))
    texts = ["12", " -3.5e2 ", "+4", "0x10", "1_000", "nan", "inf", "", "1e999", "١٢"]
    agg.feed(body_result(agg, 0, "http://h.test/n", [{"n": t} for t in texts]))
    n = agg.report().fields["n"]
    assert (n.count, n.wrong_type, n.sum) == (3, 7, 12 - 350.0 + 4)


# ------------------------------------------------------------ the library


def test_sync_aggregate_matches_async(server_thread: str) -> None:
    report = aggregate([f"{server_thread}/posts"], group_by="userId", fields={"likes": "likes"})
    again = asyncio.run(
        aggregate_async([f"{server_thread}/posts"], group_by="userId", fields={"likes": "likes"})
    )
    assert without_elapsed(report) == without_elapsed(again)


async def test_sync_aggregate_works_where_a_loop_runs(server_thread: str) -> None:
    asyncio.get_running_loop()  # as in a notebook: the sync call runs on a private loop
    report = aggregate([f"{server_thread}/users"], fields={"id": "id"})
    assert report.fields["id"].count == 10


async def test_a_given_fetcher_is_used_and_options_conflict(server: DemoServer) -> None:
    async with Fetcher(limits=Limits(concurrency=2, per_host=2)) as fetcher:
        report = await aggregate_async(
            expand(f"{server.url}/items/{{1..10}}"), fields={"p": "price"}, fetcher=fetcher
        )
        assert report.fields["p"].count == 10
        with pytest.raises(ConfigError, match="not both"):
            await aggregate_async([], fetcher=fetcher, retry=NO_RETRY)
        with pytest.raises(ConfigError, match="fetcher= is for aggregate_async"):
            aggregate([], fetcher=fetcher)  # its loop is this one, not the twin's


def without_elapsed(report: AggregateReport) -> dict[str, object]:
    data = report.as_dict()
    del data["elapsed_s"]
    return data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fields": {"a": "a["}}, r"fields\['a'\]: invalid JMESPath"),
        ({"fields": {"a": "nope(a)"}}, "unknown function nope"),
        ({"fields": {"a": "sum(a, b)"}}, "takes 1 argument, got 2"),
        ({"group_by": ""}, "group_by: empty"),
        ({"top": 3}, "top needs sort_by"),
        ({"fields": {"a": "a"}, "sort_by": "b"}, "not one of the fields"),
        ({"show": {"t": "t"}}, "show needs sort_by"),
        ({"next_page": "next", "next_link": True}, "not both"),
        ({"cursor_param": "c"}, "cursor_param needs next_page"),
        ({"max_pages": 0}, "max_pages must be >= 1"),
        ({"template": "http://h.test/{}"}, "need ids_from"),
        ({"ids_from": "http://h.test/ids"}, "needs template"),
        ({"ids_from": "http://h.test/ids", "template": "http://h.test/x"}, re.escape("'{}'")),
        ({"ids_from": "http://h.test/i", "template": "http://h.test/{}", "limit": 0}, "limit"),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        aggregate([], **options)


async def test_a_failed_id_list_is_reported_not_raised(server: DemoServer) -> None:
    for path, select, error in [
        ("/status/404", "@", "http_status"),
        ("/json/bad", "@", "not JSON"),
        ("/users", "[0]", "select gave dict, not a list"),
    ]:
        report = await aggregate_async(
            ids_from=server.url + path,
            select=select,
            template=f"{server.url}/posts/{{}}",
            retry=NO_RETRY,
        )
        assert report.source is not None
        assert report.source.error is not None
        assert error in report.source.error
        assert report.requests == report.records == 0


async def test_ids_that_cannot_be_ids_are_skipped(server: DemoServer) -> None:
    agg_ids = [1, "2", 3.0, 2.5, True, None, {"id": 4}, "", "a/b"]
    assert [fill("http://h.test/{}", i) for i in agg_ids] == [
        "http://h.test/1",
        "http://h.test/2",
        "http://h.test/3",
        None,
        None,
        None,
        None,
        None,
        "http://h.test/a%2Fb",
    ]
    report = await aggregate_async(
        ids_from=f"{server.url}/users",
        select="[].[id, username, `true`][]",
        template=f"{server.url}/posts/{{}}",
        limit=12,
        fields={"id": "id"},
        retry=NO_RETRY,
    )
    assert report.source is not None
    assert (report.source.ids, report.source.skipped) == (12, 5)  # 5 `true`s before the 12th
    assert report.failed == {"http_status": 6}  # /posts/user1 and so on: 400
    assert report.fields["id"].count == 6


# -------------------------------------------------------------- templates


def test_templates_expand_to_ranges_and_products() -> None:
    assert list(expand("http://h.test/a")) == ["http://h.test/a"]
    assert list(expand("http://h.test/{3..1}")) == [f"http://h.test/{n}" for n in (3, 2, 1)]
    assert list(expand("http://h.test/{-1..1}")) == [f"http://h.test/{n}" for n in (-1, 0, 1)]
    assert list(expand("http://h.test/p{08..10}")) == [
        "http://h.test/p08",
        "http://h.test/p09",
        "http://h.test/p10",
    ]
    assert list(expand("http://h.test/{1..2}/x/{1..3}?q")) == [
        f"http://h.test/{a}/x/{b}?q" for a in (1, 2) for b in (1, 2, 3)
    ]


@given(st.lists(st.tuples(st.integers(-12, 12), st.integers(-12, 12)), max_size=3))
def test_template_count_is_the_product_of_the_ranges(ranges: list[tuple[int, int]]) -> None:
    template = "http://h.test/" + "/".join(f"{{{a}..{b}}}" for a, b in ranges)
    urls = list(expand(template))
    assert len(urls) == math.prod(abs(a - b) + 1 for a, b in ranges)
    assert len(set(urls)) == len(urls)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("http://h.test/{1..5", "'{' is not a range"),
        ("http://h.test/1..5}", "'}' is not a range"),
        ("http://h.test/{a..b}", "not a range"),
        ("http://h.test/{}", "only in a --from template"),
        ("http://h.test/{1..1000}/{1..1001}", "1,001,000 URLs, more than 1,000,000"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand(template)


def test_names_and_expressions() -> None:
    assert parse_named("comments=descendants") == ("comments", "descendants")
    assert parse_named("score") == ("score", "score")
    assert parse_named("a.b=c") == ("a.b", "c")
    assert parse_named("x == 'y'")[0] == "x == 'y'"
    with pytest.raises(ConfigError, match="no expression"):
        parse_named("a=")
    assert check_expression("max_by(@, &n).n").search([{"n": 1}, {"n": 3}]) == 3


# -------------------------------------------------------------- the command


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["aggregate", *args], catch_exceptions=False)
    return result


def test_command_json_is_the_library_report(server_thread: str) -> None:
    args = [f"{server_thread}/posts", "--group-by", "userId", "-f", "likes", "-f", "id"]
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    del printed["elapsed_s"]
    library = aggregate(
        [f"{server_thread}/posts"], group_by="userId", fields={"likes": "likes", "id": "id"}
    )
    assert printed == without_elapsed(library)


def test_command_reads_a_fifo_in_a_thread(server_thread: str, tmp_path: Path) -> None:
    """-i from a FIFO (a pipe with a name, so read in a thread) gives the same report."""
    fifo = tmp_path / "urls"
    os.mkfifo(fifo)
    urls = [f"{server_thread}/posts", f"{server_thread}/users"]

    def produce() -> None:
        with fifo.open("w") as stream:  # waits for the command to open it
            stream.write("".join(f"{url}\n" for url in urls))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    result = invoke("-i", str(fifo), "--group-by", "userId", "--format", "json")
    producer.join(timeout=30)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    del printed["elapsed_s"]
    assert printed == without_elapsed(aggregate(urls, group_by="userId"))


def test_command_csv(server_thread: str) -> None:
    result = invoke(
        f"{server_thread}/posts", "--group-by", "userId", "-f", "likes", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    library = aggregate([f"{server_thread}/posts"], group_by="userId", fields={"likes": "likes"})
    assert rows[0]["scope"] == "all"
    assert float(rows[0]["median"]) == library.fields["likes"].median
    groups = {row["group"]: row for row in rows[1:]}
    for group in library.groups:
        row = groups[str(group.key)]
        assert int(row["records"]) == group.records
        assert float(row["p90"]) == pytest.approx(group.fields["likes"].p90)
        assert row["field"] == "likes"


def test_command_table_shows_everything(server_thread: str, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server_thread}/json/bad\nnot a url\n")
    result = invoke(
        "--from",
        f"{server_thread}/v0/topstories.json",
        "--template",
        f"{server_thread}/v0/item/{{}}.json",
        "--limit",
        "60",
        "-f",
        "score",
        "-f",
        "comments=descendants",
        "--top",
        "3",
        "--sort-by",
        "score",
        "--show",
        "title=title",
        "-i",
        str(urls),
        "--retries",
        "0",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("60 from", "statistics", "top 3 by score", "Story number", "problems"):
        assert text in out
    assert "not_json" in out
    assert "invalid_url" in out
    assert "p99" in out


def test_command_group_counts_without_fields(server_thread: str) -> None:
    result = invoke(f"{server_thread}/posts", "--group-by", "userId")
    assert result.exit_code == 0, result.output
    assert "records by userId" in result.output
    assert "100" in result.output


def test_command_pagination(server_thread: str) -> None:
    result = invoke(
        f"{server_thread}/items?per_page=100",
        "--each",
        "items",
        "--next-link",
        "--max-pages",
        "4",
        "-f",
        "price",
        "--format",
        "json",
    )
    data = json.loads(result.output)
    assert data["pagination"] == {"pages": 3, "truncated": 1, "bad_next": 0}
    assert data["records"] == 400


def test_command_exit_one_when_the_id_list_fails(server_thread: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "aggregate",
            "--from",
            f"{server_thread}/status/404",
            "--template",
            f"{server_thread}/posts/{{}}",
            "--retries",
            "0",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["source"]["error"].startswith("http_status")
    assert "--from" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "no input"),
        (["http://h.test/x", "-f", "a[", "--retries", "0"], "'--field'"),
        (["http://h.test/x", "--group-by", "nope()"], "'--group-by'"),
        (["http://h.test/x", "--each", "a["], "'--each'"),
        (["http://h.test/x", "--next", "[[["], "'--next'"),
        (["http://h.test/{1..x}"], "not a range"),
        (["http://h.test/{1..2000000}"], "more than 1,000,000"),
        (["--from", "http://h.test/ids"], "--from needs --template"),
        (["--from", "http://h.test/i", "--template", "http://h.test/x"], "needs '{}'"),
        (["http://h.test/x", "--template", "http://h.test/{}"], "--template needs --from"),
        (["http://h.test/x", "--limit", "3"], "--limit needs --from"),
        (["http://h.test/x", "--next", "n", "--next-link"], "not both"),
        (["http://h.test/x", "--cursor-param", "c"], "--cursor-param needs --next"),
        (["http://h.test/x", "--max-pages", "3"], "--max-pages needs"),
        (["http://h.test/x", "--top", "3"], "--top needs --sort-by"),
        (["http://h.test/x", "-f", "a", "--sort-by", "b"], "not a --field"),
        (["http://h.test/x", "-f", "a", "-f", "a=b"], "given twice"),
        (["http://h.test/x", "-f", "a", "--sort-by", "a", "--format", "csv"], "csv"),
        (["http://h.test/x", "--rate", "fast"], "--rate"),
    ],
)
def test_usage_errors_are_one_line_and_status_two(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["aggregate", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert captured.out == ""


def test_report_mappings_are_read_only(server_thread: str) -> None:
    report = aggregate([f"{server_thread}/users"], fields={"id": "id"})
    fields: Mapping[str, FieldStats] = report.fields
    with pytest.raises(TypeError):
        fields["x"] = report.fields["id"]  # type: ignore[index]


def test_table_fits_a_narrow_terminal_and_prints_data_not_markup() -> None:
    from rich.console import Console

    from fanout.aggregation.render import render_table

    agg = Aggregator(AggregateSpec(group_by="g", fields={"v": "v"}, sort_by="v", show={"t": "t"}))
    records = [
        {"g": "[bold]odd[/bold]", "v": 123456.789 * n, "t": "[red]x[/red]"} for n in range(1, 9)
    ]
    agg.feed(body_result(agg, 0, "http://h.test/[b]", records))
    out = io.StringIO()
    render_table(agg.report(), Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # no number cut short
    assert "[bold]odd[/bold]" in text
    assert "[red]x[/red]" in text
    assert "987,654.31" in text  # the max, whole
    assert "(continued)" in text
