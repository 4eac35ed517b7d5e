"""`fanout bench`: four modes against the demo server, bounded in time."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

FANOUT = [sys.executable, "-m", "fanout"]


@pytest.mark.slow
def test_bench_json_reports_four_modes_against_the_bound() -> None:
    done = subprocess.run(
        [*FANOUT, "bench", "-n", "40", "--latency", "20ms", "-c", "10", "--json"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout)
    modes = [r["mode"] for r in report["results"]]
    assert modes == ["sequential", "threads (10)", "naive gather", "fanout"]
    bound = math.ceil(40 / 10) * 0.020
    for result in report["results"]:
        assert result["completed"] == 40
        assert result["lower_bound"] == bound
        assert result["wall"] >= bound  # nothing beats the lower bound
    sequential = report["results"][0]
    assert sequential["speedup"] == 1.0


@pytest.mark.slow
def test_bench_caps_the_sequential_mode_and_says_so() -> None:
    done = subprocess.run(
        [
            *FANOUT,
            "bench",
            "-n",
            "200",
            "--latency",
            "50ms",
            "-c",
            "50",
            "--sequential-cap",
            "0.3s",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    table = done.stdout.decode()
    assert "sequential *" in table
    assert "extrapolated" in table


def test_plot_without_matplotlib_is_a_one_line_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is not None:
        done = subprocess.run(
            [*FANOUT, "bench", "-n", "10", "--latency", "10ms", "-c", "5", "--plot", "b.png"],
            capture_output=True,
            timeout=120,
            cwd=tmp_path,
            check=True,
        )
        assert (tmp_path / "b.png").stat().st_size > 0
        return
    done = subprocess.run(
        [*FANOUT, "bench", "-n", "10", "--latency", "10ms", "-c", "5", "--plot", "b.png"],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "fanout: error: --plot needs matplotlib: pip install 'fanout[plot]'"
    ]
