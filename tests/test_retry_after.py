"""Retry-After in both forms (RFC 9110 §10.2.3); garbage is None."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.engine.retry_after import MAX_RETRY_AFTER, parse_retry_after

NOW = 1_700_000_000.0


def test_delta_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0


def test_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0


def test_past_date_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0


def test_garbage() -> None:
    for value in ["", "soon", "-5", "1.5", "1e3", "Wed, 99 Oct 2015", None, "٣"]:
        assert parse_retry_after(value, NOW) is None


@given(st.integers(min_value=0, max_value=10**9))
def test_any_delta_round_trips(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == float(seconds)


@given(st.integers(min_value=0, max_value=10**8))
def test_any_date_round_trips(offset: int) -> None:
    when = datetime.fromtimestamp(NOW + offset, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == float(offset)


@pytest.mark.parametrize(
    "value",
    [
        "9" * 400,  # float(int(...)) raised OverflowError
        "1" * 5000,  # past int()'s 4300-digit limit: ValueError
        "0" * 400 + "7",
        str(10**9 + 1),
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ],
)
def test_huge_waits_are_clamped(value: str) -> None:
    expected = 7.0 if value.endswith("7") else MAX_RETRY_AFTER
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "Mon, 32 Jan 2024 00:00:00 GMT",
        "Mon, 01 Jan 2024 25:61:61 GMT",
        "Mon, 01 Jan 2024 00:00:00 +9999",
        "Mon, 01 Jan -1 00:00:00 GMT",
        "Mon, 01 Jan 2024 00:00:00",
        "\udcff\udcfe",
        "x" * 10_000,
    ],
)
def test_malformed_dates_are_garbage(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def _in_range(parsed: float | None) -> bool:
    return parsed is None or (math.isfinite(parsed) and 0.0 <= parsed <= MAX_RETRY_AFTER)


@given(st.text())
def test_any_text_is_none_or_clamped(value: str) -> None:
    assert _in_range(parse_retry_after(value, NOW))


@given(st.text("0123456789", min_size=1, max_size=5000), st.text(" \t", max_size=2))
def test_any_digits_are_clamped(digits: str, blank: str) -> None:
    significant = digits.lstrip("0") or "0"
    expected = MAX_RETRY_AFTER
    if len(significant) < 12:
        expected = min(float(int(significant)), MAX_RETRY_AFTER)
    assert parse_retry_after(blank + digits + blank, NOW) == expected


@given(
    st.sampled_from(["Mon", "Tue", "Sun", "Xyz"]),
    st.integers(-5, 99),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
    st.integers(-10_000, 10**6),
    st.integers(-1, 99),
    st.sampled_from(["GMT", "UTC", "+0000", "-2359", "+9999", "EST", ""]),
)
def test_any_date_is_none_or_clamped(
    weekday: str, day: int, month: str, year: int, clock: int, zone: str
) -> None:
    value = f"{weekday}, {day:02d} {month} {year} {clock:02d}:{clock:02d}:{clock:02d} {zone}"
    assert _in_range(parse_retry_after(value, NOW))
