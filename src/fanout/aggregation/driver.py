"""The driver: :func:`aggregate_async` (and its synchronous twin :func:`aggregate`)
fetches the inputs, the id list of the two-step fan-out and every next page,
and feeds each result to an :class:`~fanout.aggregation.aggregator.Aggregator`.

The rule, which ``docs/aggregate.md`` states for users too:

- **Two steps.** ``ids_from`` + ``select`` + ``template``: fetch one JSON
  document, take the list ``select`` gives (``@`` for a plain list), and
  fetch ``template`` with ``{}`` replaced by each id (integers, and strings
  percent-encoded; other values are counted as ``skipped``), the first
  ``limit`` of them. That first request is reported in ``source``, not in the
  request counts. If it fails, the report says so and has no records.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias

import jmespath.parser
import orjson

from fanout.aggregation.aggregator import Aggregator
from fanout.aggregation.expressions import (
    _EVAL_ERRORS,
    _first_line,
    _reason,
    _search,
    check_expression,
)
from fanout.aggregation.report import AggregateReport, SourceInfo
from fanout.aggregation.spec import AggregateSpec
from fanout.aggregation.templates import check_id_template, fill
from fanout.config import FetcherConfig, FetcherOptions, resolve_config
from fanout.engine import Fetcher
from fanout.errors import ConfigError
from fanout.inputs.sources import Rejected
from fanout.models import Request, Result
from fanout.runtime import run_sync

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.12

P = ParamSpec("P")
Input: TypeAlias = str | Request | Rejected


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
    config: FetcherConfig | None = None,
    on_result: Callable[[Result], None] | None = None,
    **options: Unpack[FetcherOptions],
) -> AggregateReport:
    """Fetch ``urls`` (and the pages they lead to), extract, group, summarise.

    ``urls`` are URL strings or :class:`Request` objects (a :class:`Rejected`
    input line is counted as a failed request), read lazily. The extraction
    options are those of :class:`AggregateSpec`; ``ids_from``, ``select``,
    ``template`` and ``limit`` add the URLs of the two-step fan-out after
    ``urls``. Requests go through ``fetcher`` when given (its options apply;
    then ``config`` and the fetch options must not be given, and it must keep
    bodies, as it does by default), else through a new :class:`Fetcher` made
    from ``config`` and the keyword fetch options over it, as
    ``Fetcher(config, **options)`` would be.
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
    if fetcher is not None and (config is not None or options):
        raise ConfigError("give a fetcher or fetch options (config, limits...), not both")
    own_config = None if fetcher is not None else resolve_config(config, options, "aggregate")
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
        async with Fetcher(own_config) as own:
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


def _synchronous(
    coroutine_function: Callable[P, Coroutine[Any, Any, AggregateReport]],
) -> Callable[P, AggregateReport]:
    """The synchronous twin of ``coroutine_function``: the same parameters, run
    by :func:`fanout.runtime.run_sync`. A ``fetcher`` cannot be given: a
    Fetcher belongs to the event loop it was entered in."""

    @functools.wraps(coroutine_function)
    def call(*args: P.args, **kwargs: P.kwargs) -> AggregateReport:
        if kwargs.get("fetcher") is not None:
            raise ConfigError("fetcher= is for aggregate_async: a Fetcher is bound to its loop")
        return run_sync(lambda: coroutine_function(*args, **kwargs))

    return call


aggregate = _synchronous(aggregate_async)
aggregate.__doc__ = """The synchronous twin of :func:`aggregate_async` (same options, same
report; no ``fetcher``).

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
