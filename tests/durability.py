"""Helpers of the durability tests (issue 17): the real command in a process,
a small tmpfs for full disks, and what a run left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FANOUT = [sys.executable, "-m", "fanout"]


def fanout(
    *args: str, cwd: Path | None = None, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    """Run ``fanout ARGS`` to its end (at most 120 s)."""
    return subprocess.run(
        [*FANOUT, *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, timeout=120, check=False
    )


def records(data: bytes) -> list[dict[str, object]]:
    """The JSON records of JSONL output (every line must be whole)."""
    return [json.loads(line) for line in data.splitlines()]


def error_kind(record: dict[str, object]) -> str | None:
    error = record["error"]
    return None if error is None else str(error["kind"])  # type: ignore[index]


def check_saved_files(rows: list[dict[str, object]]) -> None:
    """Every ok record's file holds the body its sha256 names; a failed one has no path."""
    for row in rows:
        if row["ok"] and row["path"] is not None:
            data = Path(str(row["path"])).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        elif not row["ok"]:
            assert row["path"] is None


def assert_one_line(stderr: bytes, *expected: str) -> None:
    """stderr is exactly one line, holding every ``expected`` text, and no traceback."""
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert "Exception ignored" not in text, text
    assert text.count("\n") == 1, text
    assert text.endswith("\n"), text
    for part in expected:
        assert part in text, text


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Until ``condition()`` holds or the process ends (at most 60 s; a condition, not a time)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.005)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` (made here) for the block;
    the test is skipped, saying why, where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def resize(where: Path, size: str) -> None:
    """Give a mounted tmpfs another size (space freed)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)
