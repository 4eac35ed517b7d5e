"""The statistics of a field: :class:`FieldStats` from the numbers, and the
accumulators that collect them per field and group while records are fed.

The rule, which ``docs/aggregate.md`` states for users too:

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
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from fanout.aggregation.values import _INT_MAX, _INT_MIN, GroupKey, Number


@dataclass(frozen=True, slots=True)
class FieldStats:
    """Statistics of one field (in one group, or over all records).

    ``count`` numbers were found; ``missing`` values were null or absent;
    ``wrong_type`` were present but not numbers. See the module docs for the
    exact definition of each statistic.

    >>> s = FieldStats.of([3, 1, 2], missing=1)
    >>> s.count, s.sum, s.median, s.p90, s.missing
    (3, 6, 2, 2.8, 1)
    """

    count: int
    missing: int
    wrong_type: int
    sum: Number
    mean: float | None
    median: Number | None
    min: Number | None
    max: Number | None
    stdev: float | None
    p90: Number | None
    p99: Number | None

    @classmethod
    def of(cls, values: Iterable[Number], *, missing: int = 0, wrong_type: int = 0) -> FieldStats:
        """The statistics of ``values`` (finite numbers); never raises, see the
        module docs for values near or past the float range."""
        data = sorted(values)
        n = len(data)
        if n == 0:
            return cls(0, missing, wrong_type, 0, None, None, None, None, None, None, None)
        middle = n // 2
        if n % 2:
            median = _fit(data[middle])
        else:
            a, b = data[middle - 1], data[middle]
            median = _finite(lambda: (a + b) / 2, lambda: (Fraction(a) + Fraction(b)) / 2)
        return cls(
            count=n,
            missing=missing,
            wrong_type=wrong_type,
            sum=_total(data),
            mean=_finite(lambda: statistics.fmean(data), lambda: _exact_sum(data) / n),
            median=median,
            min=_fit(data[0]),
            max=_fit(data[-1]),
            stdev=_stdev(data) if n > 1 else None,
            p90=_percentile(data, 90),
            p99=_percentile(data, 99),
        )

    def as_dict(self) -> dict[str, Number | None]:
        """The statistics as plain JSON-able data."""
        return {
            "count": self.count,
            "missing": self.missing,
            "wrong_type": self.wrong_type,
            "sum": self.sum,
            "mean": self.mean,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "stdev": self.stdev,
            "p90": self.p90,
            "p99": self.p99,
        }


def _percentile(data: list[Number], p: int) -> Number:
    """``statistics.quantiles(data, n=100, method="inclusive")[p - 1]`` on sorted data,
    and the one value itself when there is only one."""
    if len(data) == 1:
        return _fit(data[0])
    j, delta = divmod(p * (len(data) - 1), 100)
    a, b = data[j], data[j + 1]
    return _finite(
        lambda: (a * (100 - delta) + b * delta) / 100,
        lambda: (Fraction(a) * (100 - delta) + Fraction(b) * delta) / 100,
    )


# Statistics of values near the float range: the float arithmetic of the usual
# formulas overflows (fsum raises, a + b is inf, inf - inf is nan) where the
# exact result may well be a float; then it is computed with fractions.


def _finite(fast: Callable[[], Number], exact: Callable[[], Fraction]) -> Number:
    """``fast()`` when it is a finite number, else ``exact()`` as the nearest float."""
    try:
        value = fast()
    except OverflowError:
        value = math.nan
    if isinstance(value, int) or math.isfinite(value):
        return value
    return _nearest_float(exact())


def _nearest_float(value: Fraction) -> float:
    """``value`` as a float, ``inf`` or ``-inf`` past the float range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _fit(value: Number) -> Number:
    """A statistic as JSON can hold it: an integer past 64 bits as a float."""
    if isinstance(value, float) or _INT_MIN <= value <= _INT_MAX:
        return value
    return _nearest_float(Fraction(value))


def _exact_sum(data: list[Number]) -> Fraction:
    return sum((Fraction(v) for v in data), Fraction(0))


def _total(data: list[Number]) -> Number:
    """The sum: exact for integers (a float past 64 bits, so JSON can hold it)."""
    if all(isinstance(v, int) for v in data):
        return _fit(sum(data))
    return _finite(lambda: math.fsum(data), lambda: _exact_sum(data))


def _stdev(data: list[Number]) -> float:
    """The sample standard deviation, as :func:`statistics.stdev` where it does not overflow."""
    try:
        return statistics.stdev(data)
    except OverflowError:
        pass
    exact = [Fraction(v) for v in data]
    mean = sum(exact, Fraction(0)) / len(exact)
    variance = sum(((x - mean) ** 2 for x in exact), Fraction(0)) / (len(exact) - 1)
    try:
        return math.sqrt(variance)
    except OverflowError:  # the variance is past the float range; its root may not be
        try:
            return math.ldexp(math.sqrt(variance / (1 << 1200)), 600)
        except OverflowError:
            return math.inf


class _FieldAcc:
    __slots__ = ("missing", "values", "wrong_type")

    def __init__(self) -> None:
        self.values: list[Number] = []
        self.missing = 0
        self.wrong_type = 0


class _GroupAcc:
    __slots__ = ("fields", "key", "records")

    def __init__(self, key: GroupKey, names: Iterable[str]) -> None:
        self.key = key
        self.records = 0
        self.fields = {name: _FieldAcc() for name in names}
