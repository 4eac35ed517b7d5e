"""Policies are checked on creation; the error names the field."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from fanout import Caps, ConfigError, Limits, RetryPolicy, Timeouts


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Limits(concurrency=0), "concurrency"),
        (lambda: Limits(concurrency=-3), "concurrency"),
        (lambda: Limits(per_host=0), "per_host"),
        (lambda: Limits(rate=math.nan), "rate"),
        (lambda: Limits(per_host_rate=-1.0), "per_host_rate"),
        (lambda: Limits(rate=math.inf), "rate"),
        (lambda: Limits(burst=0), "burst"),
        (lambda: Limits(window=0), "window"),
        (lambda: Timeouts(connect=-1.0), "connect"),
        (lambda: Timeouts(read=math.nan), "read"),
        (lambda: Timeouts(total=0), "total"),
        (lambda: Caps(max_bytes=0), "max_bytes"),
        (lambda: Caps(max_redirects=-1), "max_redirects"),
        (lambda: RetryPolicy(attempts=0), "attempts"),
        (lambda: RetryPolicy(backoff=math.nan), "backoff"),
        (lambda: RetryPolicy(retry_statuses=frozenset({42})), "retry_statuses"),
        (lambda: RetryPolicy(retry_after_max=-5.0), "retry_after_max"),
    ],
)
def test_bad_values_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()  # type: ignore[operator]


def test_defaults_are_bounded() -> None:
    limits = Limits()
    assert limits.per_host is not None
    assert Timeouts().read is not None
    assert Timeouts().connect is not None
    assert Timeouts().total is not None
    assert limits.effective_window == 2 * limits.concurrency


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Limits(concurrency=True)


def test_replace_checks_again() -> None:
    with pytest.raises(ConfigError, match="per_host"):
        replace(Limits(), per_host=0)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.5, backoff_max=3.0, jitter=False)
    assert [policy.delay(n, None) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_stays_within_the_bound() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=8.0)
    rng = random.Random(7)
    delays = [policy.delay(3, None, rng) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.0
    assert min(delays) < 1.0


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(retry_after_max=10.0)
    assert policy.delay(1, 4.0) == 4.0
    assert policy.delay(1, 3600.0) == 10.0
    ignoring = RetryPolicy(respect_retry_after=False, jitter=False, backoff=0.25)
    assert ignoring.delay(1, 4.0) == 0.25
