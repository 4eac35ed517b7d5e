"""Kept bodies are bounded: gzip, brotli and zstd bombs cost a small multiple of max_bytes.

Peak RSS of a real ``fanout fetch --body text`` process (from wait4) over six
bombs of the demo server, each inflating to exactly max_bytes of zeros (the
largest body kept; text of NUL bytes is 6 bytes of JSON per byte), against
the same run over six small pages; and over six bombs of 1 GiB, cut at
max_bytes. benchmarks/bombs.py prints the figures.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from fanout.journal import Journal, JournaledOutput, State

pytestmark = pytest.mark.usefixtures("transport")

MIB = 1024 * 1024
BOMBS = 6


def peak_rss(*args: str, failed: bool = False) -> int:
    """Peak RSS in bytes of one ``fanout`` process, killed if it runs past 120 s;
    ``failed``: its URLs are meant to fail (exit status 1)."""
    command = [sys.executable, "-m", "fanout", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timer = threading.Timer(120, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    errors = process.stderr.read()
    process.stderr.close()
    assert process.returncode == (1 if failed else 0), errors
    return int(usage.ru_maxrss) * 1024  # KiB on Linux


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB: Linux")
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_six_bombs_cost_a_small_multiple_of_max_bytes(
    server_thread: str, encoding: str, transport: str
) -> None:
    if encoding == "zstd" and transport == "curl":
        pytest.skip("the pycurl wheel's libcurl has no zstd (nor asks for it)")
    cap = 8 * MIB
    fetch = ["fetch", "-q", "--body", "text", "--max-bytes", str(cap), "-o", os.devnull]
    baseline = peak_rss(*fetch, *(f"{server_thread}/pages/{n}" for n in range(BOMBS)))
    bombs = [f"{server_thread}/{encoding}-bomb?size={cap}&n={n}" for n in range(BOMBS)]
    peak = peak_rss(*fetch, *bombs)
    # Six bodies in flight, and one record (its text, its JSON line) built at a time:
    # about 13 x max_bytes. It was 74 x (a queue of 100 records of 48 MiB lines, joined).
    assert peak - baseline < BOMBS * cap * 3, f"{(peak - baseline) / cap:.1f} x max_bytes"
    # Bombs of 1 GiB each are cut at the cap: never inflated whole.
    cut = [f"{server_thread}/{encoding}-bomb?size={1024**3}&n={n}" for n in range(BOMBS)]
    peak = peak_rss(*fetch, *cut, failed=True)
    assert peak - baseline < BOMBS * cap * 3, f"{(peak - baseline) / cap:.1f} x max_bytes"


class _Held(io.RawIOBase):
    """An output whose writes wait until the test lets them through."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.go.wait(30)
        return len(data)


async def test_a_journaled_run_waits_once_a_mebibyte_or_two_waits(tmp_path: Path) -> None:
    # 512 lines were queued before a batch went: with text bodies, 512 x 6 x max_bytes.
    # Now the consumer waits (JournaledOutput.full) once the backlog holds 2 MiB.
    with Journal.open(tmp_path / "run.db", key_scheme="url") as journal:
        held = _Held()
        output = JournaledOutput(journal, cast(BinaryIO, held), track_offset=False)
        output.add(b"{}\n", None, State.DONE, None)
        assert not output.full
        output.add(b"x" * MIB + b"\n", None, State.DONE, None)
        assert not output.full
        output.add(b"x" * MIB + b"\n", None, State.DONE, None)
        assert output.full
        held.go.set()
        await output.room()
        await output.close()
