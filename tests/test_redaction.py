"""A URL's credentials never reach anything fanout writes.

The tests run the real command against the demo server (which ignores
credentials) with ``bob:hunter2-SECRET@`` in its URLs, then search every byte
it wrote for the password: standard output and error, the terminal, every
file in its directory (names too), the journal with its -wal and -shm files.
Journal keys must still tell apart URLs that differ only in their password.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from subprocess import DEVNULL, PIPE
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from fanout.cli import cli
from fanout.demo import ServerThread
from fanout.journal import SCHEMA_VERSION, Journal, KeySource, stored_key
from fanout.models import Request

FANOUT = [sys.executable, "-m", "fanout"]
SECRET = "hunter2-SECRET"
USERINFO = f"bob:{SECRET}"
# The password as text, and as the Basic credentials a client would derive from it.
FORBIDDEN = (SECRET.encode(), base64.b64encode(USERINFO.encode()))


def _credentialed(base: str, userinfo: str = USERINFO) -> str:
    return base.replace("://", f"://{userinfo}@", 1)


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*FANOUT, *args], cwd=cwd, capture_output=True, timeout=120, check=False)


def _leaks(data: bytes) -> list[bytes]:
    return [secret for secret in FORBIDDEN if secret in data]


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


INPUTS = frozenset({"urls.txt", "in.jsonl", "lines.txt"})  # the tests' own, with passwords


def assert_clean(root: Path, *outputs: bytes) -> None:
    """No password in the outputs given, nor in any file under ``root`` (name or
    bytes) but the inputs the test wrote there."""
    for number, output in enumerate(outputs):
        assert not _leaks(output), f"output {number} leaks: {output[:2000]!r}"
    for path in _files(root):
        name = str(path.relative_to(root))
        if name in INPUTS:
            continue
        assert not _leaks(name.encode()), f"file name leaks: {name!r}"
        data = path.read_bytes()
        assert not _leaks(data), f"{path.name} leaks"


def _write_inputs(root: Path, base: str) -> int:
    """urls.txt: fetched, redirected, failed, rejected, unreachable and duplicate
    URLs, every one with credentials; return how many records it makes."""
    cred = _credentialed(base)
    lines = [
        f"{cred}/items/1",
        f"{cred}/pages/2?x=1",
        f"{cred}/redirect/2",
        f"{cred}/status/404",
        f"ftp://{USERINFO}@x/",
        f"http://{USERINFO}@127.0.0.1:{_dead_port()}/x",
        f"{cred}/items/1",
    ]
    (root / "urls.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def _records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# Redirects aiohttp refuses, with a message that is the whole target URL.
TRAPS = {"ftp": f"ftp://{USERINFO}@x/", "invalid": f"http://{USERINFO}@/x"}


@contextlib.asynccontextmanager
async def _trap_server() -> AsyncIterator[str]:
    """A loopback server redirecting ``/to/<name>`` to ``TRAPS[name]``; yields its URL."""

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": TRAPS[request.match_info["name"]]})

    app = web.Application()
    app.router.add_get("/to/{name}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def _run_async(*args: str, cwd: Path) -> tuple[int, bytes, bytes]:
    """:func:`_run` for a test whose own loop serves a server meanwhile."""
    process = await asyncio.create_subprocess_exec(
        *FANOUT, *args, cwd=cwd, stdout=PIPE, stderr=PIPE, stdin=DEVNULL
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out, err


# ---------------------------------------------------------------- fetch


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "out.jsonl", "--out-dir", "pages", "--stats-json", "stats.json", "--progress"],
        ["--ordered", "--progress"],  # records to standard output
        ["-o", "out.jsonl", "--ordered", "--out-dir", "pages"],
    ],
    ids=["file", "stdout-ordered", "file-ordered"],
)
async def test_fetch_writes_no_credentials(
    server_thread: str, tmp_path: Path, options: list[str]
) -> None:
    count = _write_inputs(tmp_path, server_thread)
    async with _trap_server() as trap:
        args = [_credentialed(server_thread) + "/items/2"]
        args += [f"{_credentialed(trap)}/to/{name}" for name in TRAPS]
        status, out, err = await _run_async(
            "--debug", "fetch", *args, "-i", "urls.txt", "--retries", "0", *options, cwd=tmp_path
        )
    assert status == 1, err  # the 404, the rejected, the dead and the trapped lines
    assert_clean(tmp_path, out, err)
    output = out if "-o" not in options else (tmp_path / "out.jsonl").read_bytes()
    got = _records(output)
    assert len(got) == count + len(args)
    kinds = {r["error"]["kind"] for r in got if r["error"]}
    assert {"http_status", "unsupported_scheme", "connect", "invalid_url"} <= kinds
    assert all("***@" in r["url"] for r in got)  # the URLs are there, their passwords not
    assert b"***@" in err  # --debug logged the URLs
    if "--out-dir" in options:
        assert any(Path(name).parts[0] == "pages" for name in _relative(tmp_path))


def _relative(root: Path) -> list[str]:
    return [str(path.relative_to(root)) for path in _files(root)]


@pytest.mark.slow
def test_jsonl_input_writes_no_credentials(server_thread: str, tmp_path: Path) -> None:
    cred = _credentialed(server_thread)
    requests = [
        {"url": f"{cred}/items/1"},
        {"url": f"{cred}/items/2", "key": "mine"},
        {"url": f"ftp://{USERINFO}@x/"},
        {"url": f"http://{USERINFO}@127.0.0.1:{_dead_port()}/"},
    ]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests))
    command = ["--debug", "fetch", "--jsonl-input", "in.jsonl", "-o", "out.jsonl"]
    command += ["--journal", "run.db", "--retries", "0"]
    for status in (1, 0):  # the run, then a resume with nothing left to do
        done = _run(*command, cwd=tmp_path)
        assert done.returncode == status, done.stderr
        assert_clean(tmp_path, done.stdout, done.stderr)
    got = _records((tmp_path / "out.jsonl").read_bytes())
    keys = {r["line"]: r["key"] for r in got}
    assert len(got) == len(keys) == len(requests)
    assert keys[1] == f"{_credentialed(server_thread, '***')}/items/1"
    assert (keys[2], keys[3]) == ("mine", None)
    assert str(keys[4]).startswith("http://***@127.0.0.1:")


# -------------------------------------------------------------- journal


def _journal_keys(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        keys = [str(row[0]) for row in db.execute("SELECT key FROM entries ORDER BY id")]
    db.close()
    return keys


@pytest.mark.slow
def test_journal_status_and_export_write_no_credentials(server_thread: str, tmp_path: Path) -> None:
    count = _write_inputs(tmp_path, server_thread)
    command = ["--debug", "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["--retries", "0", "--progress", "--stats-json", "stats.json"]
    first = _run(*command, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert_clean(tmp_path, first.stdout, first.stderr)
    keys = _journal_keys(tmp_path / "run.db")
    assert len(keys) == count - 1  # the duplicate has no key of its own
    assert sum("***@" in key and "\x00" in key for key in keys) == count - 1
    output = (tmp_path / "out.jsonl").read_bytes()

    again = _run(*command, cwd=tmp_path)  # the resume
    assert again.returncode == 0, again.stderr  # nothing left to fetch
    assert_clean(tmp_path, again.stdout, again.stderr)
    assert json.loads((tmp_path / "stats.json").read_bytes())["already_done"] == count
    assert (tmp_path / "out.jsonl").read_bytes() == output

    outputs = []
    for extra in ([], ["--json"]):
        done = _run("status", "--journal", "run.db", *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    for fmt in ("jsonl", "csv"):
        done = _run("export", "--journal", "run.db", "--format", fmt, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(b"\n") >= count - 1
        outputs += [done.stdout, done.stderr]
        done = _run(
            "export", "--journal", "run.db", "--format", fmt, "-o", f"x.{fmt}", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
    assert_clean(tmp_path, *outputs)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_a_killed_run_leaves_no_credentials_in_the_journal_files(tmp_path: Path) -> None:
    """After kill -9 the -wal and -shm files stay behind: they hold no password either."""
    with ServerThread(latency=0.004) as server:
        cred = _credentialed(server.url)
        urls = [f"{cred}/pages/{i}" for i in range(4000)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
        command += ["-c", "16", "--per-host", "16", "-q"]
        process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _lines(tmp_path / "out.jsonl") < 600 and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
        assert (tmp_path / "run.db-wal").exists()
        assert_clean(tmp_path, stderr)
        done = _run(*command[3:], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert_clean(tmp_path, done.stderr)
        assert _lines(tmp_path / "out.jsonl") == len(urls)
        assert server.stats.count("/pages/0") == 1


# ------------------------------------------- URLs differing in their password


def _fetched_with(records: list[dict[str, Any]]) -> list[str]:
    return sorted(r["body"]["headers"]["Authorization"] for r in records)


@pytest.mark.parametrize("journal", [False, True], ids=["deduper", "journal"])
def test_urls_differing_only_in_password_are_both_fetched_once(
    tmp_path: Path, journal: bool
) -> None:
    with ServerThread() as server:
        one, two = _credentialed(server.url, "bob:pw1"), _credentialed(server.url, "bob:pw2")
        urls = [f"{one}/echo", f"{two}/echo", f"{one}/echo", f"{two}/echo"]
        command = ["fetch", *urls, "--body", "json", "-q", "-o", "out.jsonl"]
        command += ["--stats-json", "stats.json"]
        if journal:
            command += ["--journal", "run.db"]
        done = _run(*command, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        got = _records((tmp_path / "out.jsonl").read_bytes())
        fetched = [r for r in got if r["ok"]]
        assert _fetched_with(fetched) == sorted(
            "Basic " + base64.b64encode(user.encode()).decode() for user in ("bob:pw1", "bob:pw2")
        )
        assert server.stats.count("/echo") == 2
        stats = json.loads((tmp_path / "stats.json").read_bytes())
        assert stats["duplicates"] == 2
        if journal:
            keys = _journal_keys(tmp_path / "run.db")
            assert len(set(keys)) == 2
            assert not any("pw1" in key or "pw2" in key for key in keys)
            done = _run(*command, cwd=tmp_path)  # the resume skips both
            assert done.returncode == 0, done.stderr
            assert server.stats.count("/echo") == 2
            stats = json.loads((tmp_path / "stats.json").read_bytes())
            assert stats["already_done"] == len(urls)


# ------------------------------------------------------------ the key format


def test_stored_keys_hide_credentials_and_tell_passwords_apart() -> None:
    salt = b"0123456789abcdef"
    url = KeySource.URL
    assert stored_key("http://h.example/a@b", url, salt) == "http://h.example/a@b"
    one = stored_key("http://bob:pw1@h.example/a", url, salt)
    two = stored_key("http://bob:pw2@h.example/a", url, salt)
    shown, mark, digest = one.partition("\x00")
    assert (shown, mark, len(digest)) == ("http://***@h.example/a", "\x00", 32)
    assert two.partition("\x00")[0] == shown
    assert one != two
    assert stored_key("http://bob:pw1@h.example/b", url, salt).endswith(digest)  # per credential
    assert stored_key("http://bob:pw1@h.example/a", url, b"another salt....") != one
    # a user's own key is theirs, as given
    assert stored_key("bob:pw1@h", KeySource.GIVEN, salt) == "bob:pw1@h"
    line = stored_key(f"ftp://{USERINFO}@x/ and http://a:b@h/", KeySource.LINE, salt)
    assert line.startswith("ftp://***@x/ and http://***@h/\x00")
    assert SECRET not in line


def test_each_journal_has_its_own_salt(tmp_path: Path) -> None:
    keys = []
    for name in ("a.db", "b.db"):
        with Journal.open(tmp_path / name, key_scheme="url") as journal:
            keys.append(journal.key(Request(f"http://{USERINFO}@h.example/")))
    assert keys[0].partition("\x00")[0] == keys[1].partition("\x00")[0]
    assert keys[0] != keys[1]


# ------------------------------------------------------------- migration


_V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, state INTEGER NOT NULL,
    run INTEGER NOT NULL, line INTEGER, kind TEXT, record BLOB
);
"""


def _make_v1_journal(root: Path, base: str) -> bytes:
    """A journal as fanout wrote it before schema 2: raw keys, password and all.
    Its records (and the output) come from a real run without a journal."""
    cred = _credentialed(base)
    lines = [
        f"{cred}/items/1",
        f"{cred}/items/2",
        f"ftp://{USERINFO}@x/",
        f"{base}/items/3",
        f"{cred}/items/4",  # left pending by the run that wrote the journal
    ]
    (root / "urls.txt").write_text("\n".join(lines[:4]) + "\n")
    done = _run("fetch", "-i", "urls.txt", "-o", "out.jsonl", "-q", "--ordered", cwd=root)
    assert done.returncode == 1, done.stderr
    output = (root / "out.jsonl").read_bytes()
    records = output.splitlines(keepends=True)
    db = sqlite3.connect(root / "run.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(_V1_SCHEMA)
    meta = {
        "schema_version": "1",
        "key_scheme": "url",
        "runs": "1",
        "output_offset": str(len(output)),
    }
    db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    for number, (key, record) in enumerate(zip(lines, records, strict=False), start=1):
        state = 2 if b'"ok":false' in record else 1
        kind = json.loads(record)["error"]["kind"] if state == 2 else None
        db.execute(
            "INSERT INTO entries (key, state, run, line, kind, record) VALUES (?, ?, 1, ?, ?, ?)",
            (key, state, number, kind, record),
        )
    db.execute("INSERT INTO entries (key, state, run, line) VALUES (?, 0, 1, 5)", (lines[4],))
    db.close()
    (root / "urls.txt").write_text("\n".join(lines) + "\n")
    assert _leaks(b"".join(path.read_bytes() for path in root.glob("run.db*")))
    return output


@pytest.mark.slow
def test_a_schema_1_journal_is_migrated_and_resumes_exactly(tmp_path: Path) -> None:
    with ServerThread() as server:
        output = _make_v1_journal(tmp_path, server.url)
        status = _run("status", "--journal", "run.db", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert b"rewrites them" in status.stdout  # read as it is, and the user is told
        assert not _leaks(status.stdout + status.stderr)
        export = _run("export", "--journal", "run.db", cwd=tmp_path)
        assert export.stdout == output  # the records were always redacted
        assert not _leaks(export.stdout + export.stderr)
        paths = ("/items/1", "/items/2", "/items/3", "/items/4")
        before = [server.stats.count(path) for path in paths]

        command = ["fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db", "-q"]
        done = _run(*command, "--stats-json", "stats.json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        stats = json.loads((tmp_path / "stats.json").read_bytes())
        assert (stats["already_done"], stats["ok"], stats["failed"]) == (4, 1, 0)
        after = [server.stats.count(path) for path in paths]
        assert after == [*before[:3], before[3] + 1]  # only the pending key was fetched
    got = (tmp_path / "out.jsonl").read_bytes()
    assert got.startswith(output)
    assert len(got.splitlines()) == 5
    assert_clean(tmp_path, done.stdout, done.stderr)
    with sqlite3.connect(tmp_path / "run.db") as db:
        (version,) = db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    db.close()
    assert int(version) == SCHEMA_VERSION
    status = _run("status", "--journal", "run.db", "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["plain_keys"] == 0


# ------------------------------------------------------------- aggregate


def _aggregate_modes(base: str, root: Path) -> dict[str, tuple[list[str], bool]]:
    """Every way ``aggregate`` can print a URL: name -> (arguments, whether a URL shows)."""
    cred = _credentialed(base)
    dead = f"http://{USERINFO}@127.0.0.1:{_dead_port()}"
    lines = root / "lines.txt"
    lines.write_text(f"ftp://{USERINFO}@x/\n{cred}/users\nno url but http://{USERINFO}@h\n")
    items = f"{cred}/items?page=1&per_page=5"
    story = f"{cred}/v0/item/{{}}.json"
    return {
        "plain": (
            [
                f"{cred}/posts",
                f"{cred}/json/bad",
                f"{cred}/status/404",
                f"{dead}/x",
                f"{cred}/items/{{1..3}}",
                "-i",
                str(lines),
                "-f",
                "likes",
            ],
            True,
        ),
        "group-by": (
            [f"{cred}/posts", f"{cred}/json/bad", "--group-by", "userId", "-f", "likes"],
            True,
        ),
        "group-counts": ([f"{cred}/posts", "--group-by", "userId"], False),
        "top": (
            [
                f"{cred}/posts",
                "--group-by",
                "userId",
                "-f",
                "likes",
                "--top",
                "3",
                "--sort-by",
                "likes",
                "--show",
                "title=title",
            ],
            True,
        ),
        "each": ([f"{cred}/posts", "--each", "abs(@)", "-f", "likes"], True),
        "two-step": (
            [
                "--from",
                f"{cred}/v0/topstories.json",
                "--template",
                story,
                "--limit",
                "5",
                "-f",
                "score",
                "--top",
                "3",
                "--sort-by",
                "score",
            ],
            True,
        ),
        "two-step-404": (["--from", f"{cred}/status/404", "--template", story], True),
        "two-step-dead": (["--from", f"{dead}/ids", "--template", story], True),
        "cursor": (
            [
                items,
                "--each",
                "items",
                "--next",
                "sum([page, `1`])",
                "--cursor-param",
                "page",
                "--max-pages",
                "3",
                "-f",
                "price",
            ],
            False,
        ),
        "bad-next": ([items, "--each", "items", "--next", "page", "--cursor-param", "page"], True),
        "next-url": ([items, "--each", "items", "--next", "next", "--max-pages", "3"], False),
        "next-link": ([items, "--each", "items", "--next-link", "--max-pages", "3"], False),
    }


MODES = ["plain", "group-by", "group-counts", "top", "each", "two-step", "two-step-404"]
MODES += ["two-step-dead", "cursor", "bad-next", "next-url", "next-link"]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("mode", MODES)
def test_aggregate_prints_no_credentials(
    server_thread: str, tmp_path: Path, mode: str, fmt: str
) -> None:
    args, shows_url = _aggregate_modes(server_thread, tmp_path)[mode]
    if fmt == "csv" and "--sort-by" in args:
        pytest.skip("--format csv has no top list")
    result = CliRunner().invoke(cli, ["aggregate", *args, "--retries", "0", "--format", fmt])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == (1 if mode.startswith("two-step-") else 0), result.output
    assert_clean(tmp_path, result.stdout_bytes, result.stderr_bytes)
    if shows_url and fmt != "csv":  # CSV holds only the statistics
        assert "***@" in result.stdout + result.stderr


def _in_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes, bytes]:
    """Run fanout with its standard error on a pseudo-terminal (so the progress
    bar shows); return its status, its output and what the terminal got."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*FANOUT, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + 120
    watch = selectors.DefaultSelector()  # not select(): it refuses descriptors above 1023
    watch.register(controller, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if not watch.select(1.0):
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's last writer is gone
            break
        if not chunk:
            break
        shown += chunk
    watch.close()
    os.close(controller)
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    return process.wait(timeout=30), out, bytes(shown)


@pytest.mark.parametrize("mode", ["plain", "top", "two-step-dead", "bad-next"])
def test_aggregate_progress_and_debug_log_no_credentials(
    server_thread: str, tmp_path: Path, mode: str
) -> None:
    args, _ = _aggregate_modes(server_thread, tmp_path)[mode]
    status, out, terminal = _in_a_terminal(
        ["--debug", "aggregate", *args, "--retries", "0", "--format", "json"], tmp_path
    )
    assert status == (1 if mode.startswith("two-step-") else 0), terminal
    assert b"DEBUG" in terminal  # the log was written...
    assert b"***@" in terminal  # ...with the URLs in it
    assert_clean(tmp_path, out, terminal)


def test_usage_errors_show_no_credentials(tmp_path: Path) -> None:
    for args in (
        ["aggregate", f"http://{USERINFO}@127.0.0.1:1/{{1..x}}"],
        [
            "aggregate",
            "--from",
            f"http://{USERINFO}@127.0.0.1:1/",
            "--template",
            f"http://{USERINFO}@h/x",
        ],
    ):
        done = _run(*args, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.startswith(b"fanout: error: ")
        assert b"***@" in done.stderr
        assert_clean(tmp_path, done.stdout, done.stderr)


def test_errors_logged_without_debug_hide_credentials(tmp_path: Path) -> None:
    """With no log handler configured, logging's last resort prints warnings and
    errors (an unexpected exception's traceback) to stderr: redacted too."""
    url = f"http://{USERINFO}@127.0.0.1:1/x"
    script = (
        "import logging\n"
        "from fanout.cli.logs import redact_logs\n"
        "redact_logs()\n"
        f"logging.getLogger('fanout').error('failed: %s', {url!r}, exc_info=ValueError({url!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert b"failed: http://***@127.0.0.1:1/x" in done.stderr
    assert b"ValueError: http://***@127.0.0.1:1/x" in done.stderr
    assert_clean(tmp_path, done.stdout, done.stderr)
