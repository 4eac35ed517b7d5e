"""fanout.net.aiohttp_internals: the canaries (a new aiohttp that renames an internal
fails here), the switch that forces every fallback, and the aiohttp installed
within the range pyproject.toml declares.

The tests of what each hook does run in both modes: ``make test-fallback``
runs them with ``FANOUT_AIOHTTP_INTERNALS=off``."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
from packaging.requirements import Requirement

from fanout.net import aiohttp_internals as internals
from fanout.net.aiohttp_internals import ENVIRONMENT_VARIABLE, FORCED_OFF, HOOKS, IN_USE

ROOT = Path(__file__).resolve().parent.parent


def test_canary_every_internal_fanout_relies_on_is_still_there() -> None:
    """Fails when a new aiohttp renames or changes one of the internals fanout
    uses: the run would go on, on that hook's fallback (slower, or without
    keep-alive). Update fanout.net.aiohttp_internals. With the fallbacks forced,
    every hook says so."""
    if FORCED_OFF:
        assert not any(IN_USE.values())
        assert internals.send_once is not None
    else:
        assert internals._checked() == {}
        assert all(IN_USE.values())
        assert internals.send_once is None
    assert set(IN_USE) == set(HOOKS)
    # read by the retry fallback, to keep a session given's own middlewares
    assert "_middlewares" in aiohttp.ClientSession.ATTRS


def test_the_installed_aiohttp_is_within_the_declared_range() -> None:
    """The internals were checked against the aiohttp range pyproject.toml
    declares; CI installs its minimum. An aiohttp outside it fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (declared,) = (
        Requirement(line)
        for line in project["dependencies"]
        if Requirement(line).name.lower() == "aiohttp"
    )
    assert declared.specifier, "aiohttp is pinned to a range"
    assert declared.specifier.contains(aiohttp.__version__), (aiohttp.__version__, declared)


def _in_child(code: str, value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENVIRONMENT_VARIABLE: value}
    command = [sys.executable, "-c", code]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)


def test_the_environment_forces_every_fallback_and_a_session_logs_it() -> None:
    code = """
import asyncio, logging
logging.basicConfig(level=logging.DEBUG)
from fanout.net.aiohttp_internals import IN_USE
from fanout.policy import Timeouts
from fanout.net.transport import make_session

async def main():
    session, resolver = make_session(concurrency=1, timeouts=Timeouts(), headers={})
    print(session.connector.force_close)
    await session.close()
    await resolver.close()

print(sorted(hook for hook, used in IN_USE.items() if not used))
asyncio.run(main())
"""
    forced = _in_child(code, "off")
    assert forced.stdout.splitlines() == [str(sorted(HOOKS)), "True"]
    assert "aiohttp internals: fallbacks in use: connect_frame (forced by" in forced.stderr
    normal = _in_child(code, "")
    assert normal.stdout.splitlines() == ["[]", "False"]
    assert "fallbacks in use" not in normal.stderr
