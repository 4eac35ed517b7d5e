"""The expression language: JMESPath expressions checked up front
(:func:`check_expression`), ``NAME=EXPR`` options (:func:`parse_named`), and
evaluation on data, whose errors are the ones in :data:`_EVAL_ERRORS`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import orjson

from fanout.errors import ConfigError
from fanout.safetext import shown

_NAME_RE: Final = re.compile(r"[A-Za-z_][\w.\-]*")
_FOR_EXPRESSION_RE: Final = re.compile(r",? for expression:\s*$")
_FUNCTIONS: Final[Mapping[str, Any]] = jmespath.functions.Functions.FUNCTION_TABLE


def check_expression(text: str, *, what: str = "expression") -> jmespath.parser.ParsedResult:
    """Compile a JMESPath expression, or raise :class:`ConfigError` naming ``what``
    (the message starts with ``what:`` unless ``what`` is empty).

    Unknown functions and wrong argument counts are found here, not at the
    first record.

    >>> check_expression("items[].price").search({"items": [{"price": 2}]})
    [2]
    >>> check_expression("sum(a, b)", what="--field total")
    Traceback (most recent call last):
    fanout.errors.ConfigError: --field total: invalid JMESPath expression 'sum(a, b)': \
sum() takes 1 argument, got 2
    """
    prefix = f"{what}: " if what else ""
    if not isinstance(text, str):
        raise ConfigError(f"{prefix}a JMESPath expression must be a string, got {text!r}")
    if not text.strip():
        raise ConfigError(f"{prefix}empty JMESPath expression")
    try:
        compiled = jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        reason = _first_line(str(exc))
        raise ConfigError(f"{prefix}invalid JMESPath expression {text!r}: {reason}") from None
    problem = _check_functions(compiled.parsed)
    if problem is not None:
        raise ConfigError(f"{prefix}invalid JMESPath expression {text!r}: {problem}")
    return compiled


def _reason(exc: BaseException) -> str:
    """Why an expression failed on some data, bounded (JMESPath quotes the data)."""
    return shown(_first_line(str(exc)))


def _shown_value(value: object) -> str:
    """A JSON value in a message: as JSON, bounded (repr would recurse into a deep one)."""
    try:
        return shown(orjson.dumps(value))
    except orjson.JSONEncodeError:  # nested too deep, or an integer past 64 bits
        return f"(a {type(value).__name__} that cannot be shown)"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "syntax error"
    line = line.removeprefix("Invalid jmespath expression: ")
    return _FOR_EXPRESSION_RE.sub("", line)


def _check_functions(node: Mapping[str, Any]) -> str | None:
    """Why a parsed expression would fail on every input: unknown function, bad arity."""
    children = node.get("children", [])
    if node.get("type") == "function_expression":
        name = node.get("value")
        spec = _FUNCTIONS.get(str(name))
        if spec is None:
            return f"unknown function {name}()"
        signature = spec["signature"]
        given = len(children)
        if signature and signature[-1].get("variadic"):
            if given < len(signature):
                return f"{name}() takes at least {len(signature)} arguments, got {given}"
        elif given != len(signature):
            plural = "" if len(signature) == 1 else "s"
            return f"{name}() takes {len(signature)} argument{plural}, got {given}"
    for child in children:
        if isinstance(child, Mapping):
            problem = _check_functions(child)
            if problem is not None:
                return problem
    return None


def parse_named(text: str, *, what: str = "--field") -> tuple[str, str]:
    """Split ``NAME=EXPR`` into its name and JMESPath expression.

    Without a leading ``name=``, the expression is its own name. The name is
    letters, digits, ``_``, ``.`` and ``-``, starting with a letter or ``_``;
    ``a==b`` is an expression, not a name.

    >>> parse_named("score=score"), parse_named("descendants"), parse_named("x=='y'")
    (('score', 'score'), ('descendants', 'descendants'), ("x=='y'", "x=='y'"))
    """
    name, sep, expression = text.partition("=")
    name = name.strip()
    if sep and _NAME_RE.fullmatch(name) and not expression.startswith("="):
        if not expression.strip():
            raise ConfigError(f"{what} {text!r}: no expression after '='")
        return name, expression.strip()
    return text.strip(), text.strip()


def _search(expression: jmespath.parser.ParsedResult, data: object) -> object:
    """Evaluate ``expression``; a type error on this data raises :data:`_EVAL_ERRORS`."""
    return expression.search(data)


# JMESPathError is a ValueError; a few functions let a plain TypeError out;
# avg() of huge integers overflows; comparing or writing (to_string) a value
# nested deeper than Python's recursion limit raises RecursionError.
_EVAL_ERRORS: Final = (ValueError, TypeError, OverflowError, RecursionError)
