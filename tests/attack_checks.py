"""What every attack test checks of fanout's output, and how it runs the command.

The command runs in-process (click's CliRunner) to keep the suite quick; a
raised exception fails the test with its traceback, and so does a
"Traceback" written on stderr.
"""

from __future__ import annotations

import base64
import json
import traceback
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result as CliResult

from fanout.cli import cli
from fanout.models import ErrorKind, Result

__all__ = [
    "MESSAGE_MAX",
    "check_message",
    "check_record",
    "check_result",
    "invoke",
    "read_records",
]

MESSAGE_MAX = 600
"""The longest error message allowed (fanout bounds them to about 500 characters)."""


def check_message(message: str) -> None:
    """A message a server's bytes went into: bounded and with no raw control characters."""
    assert len(message) <= MESSAGE_MAX, f"a message of {len(message)} characters"
    assert message.isprintable(), f"raw control characters in {message[:200]!r}"


def check_result(result: Result, cap: int | None = None) -> None:
    """One result of a hostile response: a known kind, a safe message, a bounded body."""
    if result.error is not None:
        assert result.error.kind in set(ErrorKind)
        check_message(result.error.message)
    if cap is not None:
        assert result.size <= cap
        assert result.body is None or len(result.body) <= cap


def check_record(record: dict[str, Any], mode: str, cap: int) -> None:
    """One JSONL record: a safe message, and no body over ``cap`` decoded bytes."""
    error = record["error"]
    if error is not None:
        assert error["kind"] in {kind.value for kind in ErrorKind}
        check_message(error["message"])
    assert record["bytes"] <= cap
    body = record.get("body")
    if mode == "text" and body is not None:
        assert len(body) <= cap  # a character holds at least one byte
    if mode == "base64" and body is not None:
        assert len(base64.b64decode(body)) <= cap


def invoke(args: list[str]) -> CliResult:
    """``fanout *args`` in-process: fail on a raised exception, a traceback on
    stderr or an exit status other than 0 and 1 (2 would be a usage error)."""
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        shown = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"fanout {' '.join(args)[:300]} raised:\n{shown[-4000:]}")
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr[-2000:])
    return result


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSONL records of a fetch output file, each line whole JSON."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]
