"""Shared pieces of the benchmarks: the fast server process and CPU pinning."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pin_to(cpu: int) -> str:
    """Pin this process to ``cpu`` when the machine has more than one; say what was done."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
        return f"client pinned to CPU {cpu}"
    return "no CPU pinning (one CPU or unsupported)"


@contextlib.contextmanager
def fast_server(cpu: int = 1, *options: str, host: str = "127.0.0.1") -> Iterator[str]:
    """Run benchmarks/fastserver.py in a subprocess on ``cpu``; yield its base URL."""
    multi = (os.cpu_count() or 1) > 1
    cmd = [sys.executable, str(HERE / "fastserver.py"), "--port", "0", "--host", host, *options]
    if multi:
        cmd += ["--cpu", str(cpu)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://{host}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
