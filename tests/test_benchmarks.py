"""benchmarks/: each script runs end to end at a tiny size and prints its figures.

The figures themselves are for `make bench` on a quiet machine; here only
that every script still runs (a renamed API once broke them unnoticed) and
says what it measured. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nginx import nginx_or_skip

# Each script starts servers and runs a workload: minutes in all, so marked slow
# (run by make test and make test-slow, not by make test-fast).
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        (
            "throughput.py",
            ["-n", "300", "--repeat", "1", "--server", "fast"],
            "ratio fanout/raw on",
        ),
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
        (
            "workers.py",
            ["-n", "300", "--repeat", "1", "-c", "16", "--per-host", "4", "--latency", "0.01"],
            "throughput --workers 2 / --workers 1",
        ),
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


def run_benchmark(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/``script`` to its end (at most 300 s)."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


HAS_PYCURL = importlib.util.find_spec("pycurl") is not None
# What the scripts print for the curl transport when pycurl is installed.
CURL_LINES = {
    "throughput.py": [
        "ratio fanout on curl/raw on asyncio",
        "ratio fanout on curl/bare pycurl on asyncio",
        "ratio bare pycurl/raw on asyncio",
        "ratio bare pycurl without a loop (perform, select)/raw on asyncio",
    ],
    "latency.py": ["ratio fanout on curl/raw wall", "ratio fanout on curl/bound wall"],
    "memory.py": ["fanout-curl growth"],
}


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("throughput.py", ["-n", "300", "--repeat", "1"]),
        ("latency.py", ["-n", "200", "-c", "50", "--latency", "0.01", "--repeat", "1"]),
        ("memory.py", ["--sizes", "1000", "2000"]),
    ],
)
def test_the_curl_transport_is_a_contender(script: str, args: list[str]) -> None:
    """With pycurl installed, throughput.py (on nginx), latency.py and
    memory.py run fanout on the curl transport too and print its figures
    (throughput.py also the bare pycurl floor)."""
    if not HAS_PYCURL:
        pytest.skip("pycurl is not installed: pip install 'fanout[curl]'")
    if script == "throughput.py":
        nginx_or_skip()
    done = run_benchmark(script, *args)
    assert done.returncode == 0, done.stderr
    for line in CURL_LINES[script]:
        assert line in done.stdout
    assert "skipped" not in done.stdout


@pytest.mark.parametrize("server", ["nginx", "fast"])
def test_fanout_fetch_against_curl_parallel(server: str) -> None:
    """benchmarks/cli_vs_curl.py, small, on either server: it checks fanout's
    records and curl's exit status, and prints the ratios."""
    if server == "nginx":
        nginx_or_skip()
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: apt-get install curl")
    if not HAS_PYCURL:
        pytest.skip("pycurl is not installed: pip install 'fanout[curl]'")
    done = run_benchmark("cli_vs_curl.py", "-n", "200", "--repeat", "1", "--server", server)
    assert done.returncode == 0, done.stderr
    assert f"{server} server" in done.stdout
    for line in (
        "ratio fanout fetch on curl/curl --parallel:",
        "ratio fanout fetch on aiohttp/curl --parallel:",
        "ratio fanout fetch on curl/on aiohttp:",
    ):
        assert line in done.stdout


@pytest.mark.parametrize("script", ["throughput.py", "cli_vs_curl.py"])
def test_without_nginx_one_line_and_exit_2(script: str) -> None:
    """nginx is the default server: without it a benchmark says in one line how
    to get it (or to pass --server fast), exits 2 and measures nothing."""
    done = run_benchmark(script, "-n", "10", env={"FANOUT_BENCH_NGINX": "/nonexistent/nginx"})
    assert done.returncode == 2
    assert done.stderr == "nginx not found: apt-get install nginx, or --server fast\n"
    assert done.stdout == ""


def test_the_eta_is_close_to_the_time_actually_left() -> None:
    """benchmarks/eta.py, small: at 25 % and 50 % of a run with one host held
    to 6 requests per second among fast ones, by its robots.txt and by its
    advertised quota, the bar's ETA is within a generous band of the time
    that was actually left (the naive ETA, about 0.3 of it, would not be)."""
    done = subprocess.run(
        [sys.executable, "eta.py", "--fast", "1000", "--slow", "30", "--rate", "6"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # "  25%    258     4.2      4.4   0.94      1.9        0.42"
    rows = re.findall(r"^\s+(\d+)%\s+\d+\s+\S+\s+\S+\s+(\S+)\s", done.stdout, re.MULTILINE)
    assert [point for point, _ in rows] == ["25", "50"] * 2, done.stdout
    for _, ratio in rows:
        assert 0.6 <= float(ratio) <= 1.6, done.stdout


def test_shedding_benchmark_meets_its_goals() -> None:
    """benchmarks/shedding.py, small: after the warm-up the shedding host's 429
    fraction is at most 10 % and its throughput at least 0.7 R with adaptation,
    while the static run is hammered; the healthy hosts are not slowed (a
    generous bound: on a shared machine their sub-second time is noisy)."""
    done = subprocess.run(
        [sys.executable, "shedding.py", "--duration", "6", "--warmup", "3", "-n", "100", "--json"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    adaptive, static = figures["adaptive"], figures["static"]
    assert adaptive["shed"] <= 0.10
    assert adaptive["served"] >= 0.7
    assert adaptive["healthy_ratio"] <= 2.0
    assert static["shed"] > 0.5
