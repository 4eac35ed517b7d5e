"""A command's report reaches a slow reader whole: after the event loop has
run, a write to a full pipe may take only part of what it is given, and the
rest must still be written (fanout aggregate printed the first 64 KiB of a
122 KiB report, exit status 0, when its reader was slower than it)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.demo import ServerThread

FANOUT = [str(Path(sys.executable).parent / "fanout")]


@pytest.fixture(scope="module")
def demo() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_an_aggregate_report_reaches_a_slow_reader_whole(demo: ServerThread, fmt: str) -> None:
    fields = [f"--field={name}=to_string(@)" for name in "stuv"]
    command = [*FANOUT, "aggregate", "-q", "--format", fmt, f"{demo.url}/posts"]
    command += ["--group-by", "id", *fields]
    whole = subprocess.run(command, capture_output=True, timeout=120, check=True).stdout
    assert len(whole) > 40_000
    read, write = os.pipe()
    fcntl.fcntl(read, fcntl.F_SETPIPE_SZ, 4096)  # full at once: the writer must wait for us
    with subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE) as process:
        os.close(write)
        # Nothing read for a while: the report meets a full pipe. Cut short, the
        # command ends meanwhile; whole, it waits for us (either way, read on).
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        got = b""
        with os.fdopen(read, "rb") as pipe:
            while chunk := pipe.read1(1024):  # small reads: the pipe fills again and again
                got += chunk
        assert process.wait(timeout=120) == 0
    # the same lines (their figures, elapsed time among them, may differ)
    assert got.count(b"\n") == whole.count(b"\n")
    if fmt == "json":
        json.loads(got)
    else:
        assert got.rstrip().endswith("┘".encode())
