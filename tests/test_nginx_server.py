"""The benchmarks' nginx (benchmarks/common.py's nginx_server): it serves the
fast server's small fixed body over keep-alive on loopback, pinned to CPU 1,
and is gone after its block; without nginx the tests needing it are skipped
with the way to install it, and fail under CI=true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.nginx import INSTALL_HINT, nginx_or_skip

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# Two requests on one connection, the server's CPUs, then whether it is gone.
_PROBE = """
import http.client, os, common
with common.nginx_server(cpu=1) as base:
    pid = common._PIDS[base]
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    for path in ("/item/1", "/item/2"):
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        print(response.status, len(body), set(body), response.getheader("Connection"))
    print(sorted(os.sched_getaffinity(pid)) if os.cpu_count() > 1 else [1])
print(os.path.exists(f"/proc/{pid}"))
"""


def test_nginx_serves_the_small_body_over_keep_alive_then_stops() -> None:
    nginx_or_skip()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=BENCHMARKS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "200 128 {120} keep-alive",
        "200 128 {120} keep-alive",
        "[1]",
        "False",
    ]


def test_without_nginx_the_tests_are_skipped_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FANOUT_BENCH_NGINX", "/nonexistent/nginx")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install nginx"):
        nginx_or_skip()


def test_under_ci_without_nginx_the_tests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_BENCH_NGINX", "/nonexistent/nginx")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        nginx_or_skip()
    assert "apt-get install nginx" in INSTALL_HINT
