"""The system's nginx for the benchmarks' tests (benchmarks/common.py starts it).

Without nginx the tests that need it are skipped with the way to install it;
under ``CI=true`` they fail instead, so CI cannot pass without running them
(``.ci/run`` installs it). The lookup is the benchmarks' own: the binary
``$FANOUT_BENCH_NGINX`` names when set, else nginx on the PATH or in /usr/sbin.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["INSTALL_HINT", "nginx_or_skip"]

INSTALL_HINT = "nginx is not installed: apt-get install nginx"


def nginx_or_skip() -> str:
    """The path of nginx; skip the test without it (fail under CI=true)."""
    named = os.environ.get("FANOUT_BENCH_NGINX")
    if named is not None:
        path = named if os.access(named, os.X_OK) else None
    else:
        search = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"
        path = shutil.which("nginx", path=search)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{INSTALL_HINT} (CI=true: the benchmarks' nginx tests must run)")
        pytest.skip(INSTALL_HINT)
    return path
