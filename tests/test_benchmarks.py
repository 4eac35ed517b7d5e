"""benchmarks/: each script runs end to end at a tiny size and prints its figures.

The figures themselves are for `make bench` on a quiet machine; here only
that every script still runs (a renamed API once broke them unnoticed) and
says what it measured. No timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Each script starts servers and runs a workload: minutes in all, so marked slow
# (run by make test and make test-slow, not by make test-fast).
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("throughput.py", ["-n", "300", "--repeat", "1"], "ratio fanout/raw on"),
        (
            "latency.py",
            ["-n", "200", "-c", "50", "--latency", "0.01", "--repeat", "1"],
            "ratio fanout/raw wall",
        ),
        ("memory.py", ["--sizes", "1000", "2000"], "fanout growth"),
        ("fairness.py", ["-n", "200", "--repeat", "1"], "ratio:"),
        ("fairness.py", ["-n", "200", "--repeat", "1", "--other", "slow"], "ratio:"),
        ("quota.py", ["-n", "12", "--quota", "6"], "throughput / advertised"),
        (
            "manyhosts.py",
            ["-n", "400", "--hosts", "200", "--few", "8", "--repeat", "1"],
            "ratio 200 hosts / 1 host",
        ),
        ("journal.py", ["-n", "300", "--big", "1000", "--repeat", "1"], "journaled run over"),
        ("writes.py", ["--against", "HEAD", "-n", "300", "--repeat", "1"], "ratio"),
        ("kills.py", ["-n", "600", "--kills", "1", "-c", "8"], "refetches per kill"),
        ("redis_workers.py", ["-n", "300", "-c", "8"], "Redis calls per request"),
        ("sockets.py", ["--hosts", "200", "-c", "8", "--against", "HEAD"], "peak sockets"),
        (
            "hosts.py",
            ["--hosts", "100", "300", "-n", "300", "--big", "600", "--against", "HEAD"],
            "growth 100 -> 300 hosts",
        ),
        ("startup.py", ["--repeat", "1"], "fetch"),
        ("bombs.py", ["--bombs", "2", "--max-bytes", "1MiB"], "bombs of 1 MiB, kept"),
        (
            "dns.py",
            ["--names", "500", "--baseline-names", "200", "--repeat", "2", "--hits", "500"],
            "ratio fanout.net.dns/aiohttp",
        ),
        # Without valgrind it says it skipped; with it, four short runs under
        # callgrind, about a minute on a 2-core machine: past the default timeout.
        pytest.param(
            "instructions.py",
            ["--sizes", "20", "40", "--loops", "asyncio"],
            "instructions",
            marks=pytest.mark.timeout(300),
        ),
    ],
)
def test_benchmark_script_runs(script: str, args: list[str], expected: str) -> None:
    if script == "redis_workers.py":
        from tests.redis_server import redis_or_skip

        redis_or_skip()
    done = subprocess.run(
        [sys.executable, script, *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
