"""Standard output as a pipe (issue 17): a reader that goes away stops the run
with status 141 and nothing marked done that it did not read; a slow reader
holds back new requests, never the ones in flight."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.cli import exit_status
from fanout.demo import ServerThread
from tests.durability import FANOUT, error_kind, records

N_URLS = 2000


@pytest.fixture
def urls(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A file of 2,000 URLs (their records fill a pipe's buffer ten times over)."""
    with ServerThread() as server:
        listed = [f"{server.url}/pages/{i}" for i in range(N_URLS)]
        path = tmp_path / "urls.txt"
        path.write_text("\n".join(listed) + "\n")
        yield path, listed


def _read_one_line_and_close(command: list[str]) -> tuple[int, bytes, bytes]:
    """Run ``command``, read its first line a byte at a time (so nothing else
    is taken from the pipe), close the pipe; return status, line and stderr."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(process.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    return process.returncode, line, stderr


def test_a_reader_that_goes_away_stops_the_run_with_141_and_no_noise(
    urls: tuple[Path, list[str]],
) -> None:
    path, _ = urls
    status, line, stderr = _read_one_line_and_close([*FANOUT, "fetch", "-i", str(path)])
    assert json.loads(line)["ok"] is True
    assert status == exit_status.BROKEN_PIPE == 141
    assert stderr == b""  # like a process killed by SIGPIPE: no traceback, no message


def test_records_the_reader_did_not_read_are_not_marked_done(
    urls: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path, listed = urls
    journal = tmp_path / "run.db"
    command = [*FANOUT, "fetch", "-i", str(path), "--journal", str(journal), "-q"]
    status, line, stderr = _read_one_line_and_close(command)
    assert status == 141, stderr
    assert stderr == b""
    first = json.loads(line)["key"]
    with sqlite3.connect(journal) as db:
        done = [key for (key,) in db.execute("SELECT key FROM entries WHERE state != 0")]
    assert done == [first]  # the one line read, and nothing the pipe held unread

    rerun = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    delivered = [str(row["key"]) for row in records(rerun.stdout)]
    assert sorted([first, *delivered]) == sorted(listed)  # every key once, over both runs


@pytest.mark.slow
def test_a_slow_reader_causes_no_false_timeouts_and_gets_every_record_in_order(
    tmp_path: Path,
) -> None:
    # The reader takes 1 KiB every 50 ms. Before, a run wrote to stdout on its
    # event loop: each write of 100 records blocked it for over a second, and
    # requests in flight met their deadlines late (timeouts with a server that
    # answers in 10 ms).
    reader = (
        "import os, sys, time\n"
        "out = bytearray()\n"
        "while chunk := os.read(0, 1024):\n"
        "    out += chunk\n"
        "    time.sleep(0.05)\n"
        "sys.stdout.buffer.write(out)\n"
    )
    count = 400
    with ServerThread(latency=0.01) as server:
        listed = [f"{server.url}/pages/{i}" for i in range(count)]
        path = tmp_path / "urls.txt"
        path.write_text("\n".join(listed) + "\n")
        command = [*FANOUT, "fetch", "-i", str(path), "--ordered", "-q", "-c", "16"]
        command += ["--read-timeout", "1s", "--timeout", "1s", "--retries", "0"]
        slow = subprocess.Popen(
            [sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert slow.stdin is not None
        fetch = subprocess.Popen(command, stdout=slow.stdin, stderr=subprocess.PIPE)
        slow.stdin.close()
        _, stderr = fetch.communicate(timeout=120)
        assert slow.stdout is not None
        output = slow.stdout.read()  # the reader ends at the end of the pipe
        slow.stdout.close()
        slow.wait(timeout=30)
    rows = records(output)
    assert [row["line"] for row in rows] == list(range(1, count + 1))  # complete, in order
    assert [error_kind(row) for row in rows if not row["ok"]] == []  # no timeout at all
    assert fetch.returncode == 0, stderr
