"""Retry-After in both forms (RFC 9110 §10.2.3); garbage is None."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from fanout.retry_after import parse_retry_after

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


@given(st.text(max_size=60))
def test_never_raises_and_never_negative(value: str) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed is None or parsed >= 0.0
