"""Option parsing shared by the commands that fetch: one definition of each
HTTP option (concurrency, rates, retries, deadlines, caps, headers) and of
how the options become policies. Only click is imported here."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

__all__ = [
    "DELAY",
    "DURATION",
    "HEADER",
    "RATE",
    "SIZE",
    "http_options",
    "parsed",
    "policies",
]

F = TypeVar("F", bound=Callable[..., Any])


def parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that converts with ``parse``; its ValueError becomes a usage error."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, tuple):
                return tuple(parse(v) for v in value)
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


def _duration(text: str) -> float:
    from fanout.units import parse_duration

    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return value


def _delay(text: str) -> float:
    from fanout.units import parse_duration

    return parse_duration(text)


def _size(text: str) -> int:
    from fanout.units import parse_size

    value = parse_size(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of requests per second, got {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise ValueError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


DURATION = parsed(_duration)
DELAY = parsed(_delay)
SIZE = parsed(_size)
RATE = parsed(_rate)
HEADER = parsed(_header)

_HTTP_OPTIONS = [
    click.option(
        "-c", "--concurrency", type=click.IntRange(min=1), default=64, help="Requests in flight."
    ),
    click.option(
        "--per-host", type=click.IntRange(min=1), default=8, help="Requests in flight per host."
    ),
    click.option(
        "--rate",
        callback=RATE,
        metavar="R",
        help="Requests started per second, all hosts.  [default: none]",
    ),
    click.option(
        "--per-host-rate",
        callback=RATE,
        metavar="R",
        help="Requests per second per host.  [default: none]",
    ),
    click.option(
        "--retries", type=click.IntRange(min=0), default=2, help="Retries after the first try."
    ),
    click.option(
        "--timeout",
        callback=DURATION,
        metavar="DURATION",
        default="120s",
        help="Total deadline of one attempt.",
    ),
    click.option(
        "--connect-timeout",
        callback=DURATION,
        metavar="DURATION",
        default="10s",
        help="Deadline to connect.",
    ),
    click.option(
        "--read-timeout",
        callback=DURATION,
        metavar="DURATION",
        default="30s",
        help="Longest gap between reads.",
    ),
    click.option(
        "--max-bytes",
        callback=SIZE,
        metavar="SIZE",
        default="8MiB",
        help="Largest body (decoded), e.g. 10MB.",
    ),
    click.option(
        "--max-redirects", type=click.IntRange(min=0), default=10, help="Redirects to follow."
    ),
    click.option(
        "-H",
        "--header",
        "headers",
        callback=HEADER,
        metavar="'NAME: VALUE'",
        multiple=True,
        help="'Name: value', repeatable.",
    ),
    click.option(
        "--user-agent", default=None, help="User-Agent header.  [default: fanout/VERSION]"
    ),
]


def http_options(command: F) -> F:
    """Add the shared HTTP options to a click command."""
    for option in reversed(_HTTP_OPTIONS):
        command = option(command)
    return command


def policies(options: dict[str, Any]) -> tuple[Limits, RetryPolicy, Timeouts, Caps]:
    """The policies the shared HTTP options describe."""
    from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

    return (
        Limits(
            concurrency=options["concurrency"],
            per_host=options["per_host"],
            rate=options["rate"],
            per_host_rate=options["per_host_rate"],
        ),
        RetryPolicy(attempts=options["retries"] + 1),
        Timeouts(
            connect=options["connect_timeout"],
            read=options["read_timeout"],
            total=options["timeout"],
        ),
        Caps(max_bytes=options["max_bytes"], max_redirects=options["max_redirects"]),
    )
