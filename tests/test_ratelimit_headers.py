"""The rate-limit headers a server advertises its quota with, parsed: the
draft's structured fields, the older separate headers and X-RateLimit-*."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from fanout.engine.ratelimit_headers import (
    RateHint,
    has_rate_limit_headers,
    parse_rate_limit,
)

NOW = 1_700_000_000.0


def parse(**headers: str) -> RateHint | None:
    fields = CIMultiDict((name.replace("_", "-"), value) for name, value in headers.items())
    return parse_rate_limit(fields, NOW)


def test_the_draft_fields_give_remaining_reset_and_the_policy_quota() -> None:
    hint = parse(RateLimit='"default";r=0;t=5', RateLimit_Policy='"default";q=100;w=60')
    assert hint == RateHint(remaining=0, reset=5.0, limit=100)


def test_of_several_policies_the_one_with_least_remaining_counts() -> None:
    hint = parse(
        RateLimit='"day";r=900;t=3600, "minute";r=2;t=7',
        RateLimit_Policy='"day";q=1000;w=86400, "minute";q=10;w=60',
    )
    assert hint == RateHint(remaining=2, reset=7.0, limit=10)


def test_tokens_as_names_and_no_policy_field() -> None:
    assert parse(ratelimit="burst;r=3;t=1") == RateHint(3, 1.0, None)


def test_the_older_combined_field() -> None:
    assert parse(RateLimit="limit=10, remaining=4, reset=2") == RateHint(4, 2.0, 10)


@pytest.mark.parametrize("prefix", ["RateLimit-", "X-RateLimit-", "x-ratelimit-"])
def test_the_separate_headers(prefix: str) -> None:
    hint = parse_rate_limit(
        CIMultiDict({prefix + "Limit": "60", prefix + "Remaining": "0", prefix + "Reset": "12"}),
        NOW,
    )
    assert hint == RateHint(0, 12.0, 60)


def test_a_reset_above_ten_to_the_nine_is_a_timestamp() -> None:
    assert parse(X_RateLimit_Remaining="1", X_RateLimit_Reset=str(int(NOW) + 30)) == (
        RateHint(1, 30.0, None)
    )
    # a timestamp already past: go on now
    assert parse(X_RateLimit_Remaining="0", X_RateLimit_Reset=str(int(NOW) - 30)) == (
        RateHint(0, 0.0, None)
    )
    assert parse(X_RateLimit_Remaining="0", X_RateLimit_Reset="1000000000") == (
        RateHint(0, 1e9, None)  # at the threshold: still a delay (the engine caps it)
    )


def test_no_reset_is_none() -> None:
    assert parse(X_RateLimit_Remaining="0") == RateHint(0, None, None)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-RateLimit-Limit": "60"},  # no remaining
        {"X-RateLimit-Remaining": "-1"},
        {"X-RateLimit-Remaining": "1e3"},
        {"X-RateLimit-Remaining": "٣"},  # a digit, not an ASCII one
        {"X-RateLimit-Remaining": "9" * 400},
        {"RateLimit": "garbage"},
        {"RateLimit": '"default";t=5'},  # no r
        {"RateLimit": '"default";r=x;t=5'},
        {"RateLimit": '"a";r=1;t=1,' * 5000},  # too long
        {"RateLimit": ",".join(['"a";r=1'] * 17)},  # too many policies
        {"RateLimit": "limit=10, reset=2"},  # the older form without remaining
    ],
)
def test_garbage_is_ignored(headers: dict[str, str]) -> None:
    assert parse_rate_limit(CIMultiDict(headers), NOW) is None


@pytest.mark.parametrize("reset", ["soon", "nan", "inf", "-5", "1e999", "9" * 400])
def test_a_garbage_reset_is_none(reset: str) -> None:
    assert parse(RateLimit_Remaining="0", RateLimit_Reset=reset) == RateHint(0, None, None)


def test_the_trigger_names_are_case_insensitive_in_a_response() -> None:
    assert has_rate_limit_headers(CIMultiDict({"x-ratelimit-remaining": "1"}))
    assert has_rate_limit_headers(CIMultiDict({"RATELIMIT": '"a";r=1'}))
    assert not has_rate_limit_headers(CIMultiDict({"X-RateLimit-Limit": "1", "Retry-After": "1"}))
