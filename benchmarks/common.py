"""Shared pieces of the benchmarks: the fast server process and CPU pinning."""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PIDS: dict[str, int] = {}  # base URL -> pid of the fast server behind it


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
    base = ""
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        base = f"http://{host}:{port}"
        _PIDS[base] = process.pid
        yield base
    finally:
        _PIDS.pop(base, None)
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def fast_servers(
    ports: int, *options: str, hosts: tuple[str, ...] = ("127.0.0.1",), cpu: int = 1
) -> Iterator[list[str]]:
    """One benchmarks/fastserver.py process listening on ``ports`` ports spread
    over ``hosts``, on ``cpu``; yield their base URLs (distinct host:port pairs)."""
    multi = (os.cpu_count() or 1) > 1
    cmd = [sys.executable, str(HERE / "fastserver.py"), "--ports", str(ports)]
    cmd += ["--host", ",".join(hosts), *options]
    if multi:
        cmd += ["--cpu", str(cpu)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        bases = [f"http://{pair}" for pair in process.stdout.readline().split()]
        if len(bases) != ports:
            raise RuntimeError(f"fastserver listened on {len(bases)} of {ports} ports")
        yield bases
    finally:
        process.terminate()
        process.wait(timeout=30)


def settle_heap() -> None:
    """Collect, then freeze what is left (the benchmark's own objects, the
    modules): a full collection during a measured run then scans the run's
    objects only. Without it, whether a run happened to need one (about 0.2 s
    over this process's heap) swung a 3-second run by 10 %."""
    gc.collect()
    gc.freeze()


def raise_open_files() -> str:
    """Raise this process's soft limit of open files to its hard limit; say so."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f"open files limit {hard}"


def server_cpu_seconds(base: str) -> float:
    """CPU seconds (user + system) the fast server at ``base`` has used so far,
    from /proc; 0.0 where /proc is missing. Its share of a run's wall time
    shows whether the server, not the client, was the bottleneck."""
    try:
        fields = Path(f"/proc/{_PIDS[base]}/stat").read_text().rsplit(")", 1)[1].split()
    except (KeyError, OSError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def compile_fanout() -> str:
    """Byte-compile the fanout package, as pip does when it installs a wheel, so a
    timed fresh process loads it from .pyc files like it loads aiohttp (an
    editable install under PYTHONDONTWRITEBYTECODE=1 would compile it from source
    at every start). Says what was done."""
    import compileall

    import fanout

    package = Path(fanout.__file__).parent
    compileall.compile_dir(package, quiet=1)
    return f"fanout byte-compiled in {package}"


@contextlib.contextmanager
def collections_counted() -> Iterator[collections.Counter[int]]:
    """Count the garbage collector's collections, by generation, in the block."""
    counted: collections.Counter[int] = collections.Counter()

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counted[info["generation"]] += 1

    gc.callbacks.append(count)
    try:
        yield counted
    finally:
        gc.callbacks.remove(count)


def median_and_middle_half(ratios: list[float]) -> str:
    """The median of the rounds' ratios, and their middle half when there are 4 or more."""
    text = f"{statistics.median(ratios):.3f}"
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4)
        text += f" (middle half {low:.3f}-{high:.3f})"
    return text
