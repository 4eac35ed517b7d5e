"""What to aggregate: :class:`AggregateSpec`, the extraction options, checked
and compiled once when it is made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fanout.aggregation.expressions import check_expression
from fanout.errors import ConfigError

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateSpec:
    """What to take from each response and how to summarise it; checked on creation.

    See :mod:`fanout.aggregation` for the rules. Expressions are JMESPath;
    a bad one raises :class:`ConfigError` naming the parameter.

    >>> spec = AggregateSpec(fields={"likes": "likes"}, group_by="userId")
    >>> AggregateSpec(top=5)
    Traceback (most recent call last):
    fanout.errors.ConfigError: top needs sort_by (the field to rank records by)
    """

    fields: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    group_by: str | None = None
    each: str | None = None
    show: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    top: int | None = None
    sort_by: str | None = None
    ascending: bool = False
    coerce_numbers: bool = False
    next_page: str | None = None
    next_link: bool = False
    cursor_param: str | None = None
    max_pages: int = 100
    _compiled: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = self._compiled
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        object.__setattr__(self, "show", MappingProxyType(dict(self.show)))
        for kind, named in (("fields", self.fields), ("show", self.show)):
            for name, expression in named.items():
                if not isinstance(name, str) or not name:
                    raise ConfigError(f"{kind}: a name must be a non-empty string, got {name!r}")
                compiled[f"{kind}:{name}"] = check_expression(expression, what=f"{kind}[{name!r}]")
        clash = sorted(set(self.fields) & set(self.show))
        if clash:
            raise ConfigError(f"show uses names that are already fields: {', '.join(clash)}")
        for name in ("group_by", "each", "next_page"):
            expression = getattr(self, name)
            if expression is not None:
                compiled[name] = check_expression(expression, what=name)
        if self.top is not None and (
            isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1
        ):
            raise ConfigError(f"top must be a positive integer, got {self.top!r}")
        if self.sort_by is not None:
            if self.sort_by not in self.fields:
                raise ConfigError(f"sort_by {self.sort_by!r} is not one of the fields")
            if self.top is None:
                object.__setattr__(self, "top", 10)
        elif self.top is not None:
            raise ConfigError("top needs sort_by (the field to rank records by)")
        if self.show and self.sort_by is None:
            raise ConfigError("show needs sort_by: shown values appear only in the top list")
        if self.next_page is not None and self.next_link:
            raise ConfigError("give next_page or next_link, not both")
        if self.cursor_param is not None and (self.next_page is None or not self.cursor_param):
            raise ConfigError("cursor_param needs next_page (the expression giving the cursor)")
        if isinstance(self.max_pages, bool) or not isinstance(self.max_pages, int):
            raise ConfigError(f"max_pages must be an integer, got {self.max_pages!r}")
        if self.max_pages < 1:
            raise ConfigError(f"max_pages must be >= 1, got {self.max_pages!r}")

    @property
    def paginates(self) -> bool:
        """Whether pages are followed (``next_page`` or ``next_link``)."""
        return self.next_page is not None or self.next_link
