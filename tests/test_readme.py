"""The examples of the README and of docs/ run as shown.

Every ```python block and every ```console block with ``$`` prompts is taken
from README.md and docs/*.md and run against the demo server, with ``127.0.0.1:8000`` (the
address the README's ``fanout serve --port 8000`` gives) replaced by the test
server's. A ``fanout serve`` line is left out: the test's server stands in for
it. Signatures and synopses are in ```text blocks, which are not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.demo import ServerThread

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BIN = Path(sys.executable).parent


def _blocks(page: Path, language: str) -> list[tuple[str, str]]:
    """``(where, text)`` of each block of ``language`` in ``page``."""
    text = page.read_text(encoding="utf-8")
    return [
        (
            f"{page.relative_to(ROOT)} line {text[: match.start()].count(chr(10)) + 1}",
            match.group(2),
        )
        for match in BLOCK.finditer(text)
        if match.group(1) == language
    ]


def _commands(block: str) -> Iterator[str]:
    """The ``$`` commands of a console block, continuation lines joined."""
    command: list[str] = []
    for line in block.splitlines():
        if command:
            command.append(line)
        elif line.startswith("$ "):
            command.append(line[2:])
        else:
            continue
        if not line.endswith("\\"):
            yield "\n".join(command)
            command = []


def _console(page: Path) -> list[tuple[str, str]]:
    return [(where, block) for where, block in _blocks(page, "console") if "\n$ " in "\n" + block]


CONSOLE = {page.name: _console(page) for page in PAGES if _console(page)}
PYTHON = [block for page in PAGES for block in _blocks(page, "python")]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


def _address(server: ServerThread) -> str:
    return server.url.split("://", 1)[1]


def _environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_the_readme_has_examples_of_each_kind() -> None:
    assert len(CONSOLE["README.md"]) >= 4
    assert sum(where.startswith("README.md") for where, _ in PYTHON) >= 3


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", sorted(CONSOLE))
def test_console_examples_run_in_order(page: str, server: ServerThread, tmp_path: Path) -> None:
    """A page's examples in one directory, in order, as a reader would type
    them (a later example may use a file an earlier one made)."""
    for where, block in CONSOLE[page]:
        for command in _commands(block):
            if command.startswith("fanout serve"):
                continue
            command = command.replace("127.0.0.1:8000", _address(server))
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=_environment(),
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, (
                f"{where}: {command}\nexit {done.returncode}\n{done.stderr.decode()}"
            )
            assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(("where", "block"), PYTHON, ids=[where for where, _ in PYTHON])
def test_python_example_runs(where: str, block: str, server: ServerThread, tmp_path: Path) -> None:
    """Each Python example against the demo server (and, for the Redis mode's,
    a redis-server of its own in place of ``127.0.0.1:6379``)."""
    code = "import asyncio\nimport fanout\n" + block.replace("127.0.0.1:8000", _address(server))
    with contextlib.ExitStack() as stack:
        if "127.0.0.1:6379" in code:
            from tests.redis_server import running_redis

            redis = stack.enter_context(running_redis(tmp_path / "redis"))
            code = code.replace("127.0.0.1:6379", f"127.0.0.1:{redis.port}")
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 0, f"{where}\n{done.stderr.decode()}"


def test_the_sample_record_is_one_fanout_writes(server: ServerThread, tmp_path: Path) -> None:
    """The README's sample record has the fields of a real one, in order, with
    the same values but for the address, the time and the directory."""
    ((where, sample),) = _blocks(ROOT / "README.md", "json")[:1]
    shown = json.loads(sample)
    url = f"{server.url}/items/1"
    done = subprocess.run(
        ["fanout", "fetch", url, "--out-dir", "pages", "-q"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert list(record) == list(shown), where
    varying = {"url", "key", "final_url", "elapsed_ms", "path"}
    assert {k: v for k, v in record.items() if k not in varying} == {
        k: v for k, v in shown.items() if k not in varying
    }, where
