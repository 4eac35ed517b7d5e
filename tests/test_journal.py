"""The journal: resume after Ctrl-C or kill -9 with nothing lost and nothing fetched twice."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.demo import ServerThread
from fanout.errors import JournalError
from fanout.inputs.sources import Rejected
from fanout.journal import Journal, State, repair_output
from fanout.models import ErrorKind, Request

pytestmark = pytest.mark.usefixtures("transport")

FANOUT = [sys.executable, "-m", "fanout"]
N_URLS = 2000


@pytest.fixture
def slow_server() -> Iterator[ServerThread]:
    """The demo server with a little latency, so a run lasts long enough to kill."""
    with ServerThread(latency=0.004) as running:
        yield running


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _fetch(workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["--out-dir", "pages", "-c", "16", "--per-host", "16", "-q", *extra]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(condition: object, process: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    """Wait until ``condition()`` holds or the process ends (a condition, not a time)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)


def _write_inputs(workdir: Path, base: str) -> list[str]:
    urls = [f"{base}/pages/{i}" for i in range(N_URLS)]
    text = "\n".join(urls) + f"\n{urls[10]}\nnot a url\n"  # a duplicate and a bad line
    (workdir / "urls.txt").write_text(text)
    return urls


def _check_exact(workdir: Path, urls: list[str]) -> None:
    records = [json.loads(line) for line in (workdir / "out.jsonl").read_bytes().splitlines()]
    keys = [r["key"] or r["url"] for r in records]
    assert len(keys) == len(set(keys)), "a key has two lines"
    assert set(keys) == {*urls, "not a url"}, "a key has no line"
    for record in records:
        if record["ok"]:
            data = Path(record["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
    # a kill -9 mid-write leaves a temporary only in pages/.fanout-tmp, which the
    # next run removes: never a partial file under a final name
    for path in (workdir / "pages").rglob("*"):
        assert path.suffix != ".tmp", path


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path: Path, slow_server: ServerThread) -> None:
    urls = _write_inputs(tmp_path, slow_server.url)
    rng = random.Random(7)
    thresholds = sorted(rng.sample(range(50, N_URLS - 200), 4))
    kills = 0
    for threshold in thresholds:
        process = _fetch(tmp_path)
        _wait_for(lambda t=threshold: _lines(tmp_path / "out.jsonl") >= t, process)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=30)
    process = _fetch(tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr  # the bad line is a failure
    assert kills >= 3
    _check_exact(tmp_path, urls)
    stats = slow_server.server.stats
    counts = [stats.count(url.split(slow_server.url, 1)[1]) for url in urls]
    assert min(counts) >= 1
    refetched = sum(count - 1 for count in counts)
    # only requests in flight or not yet committed at a kill are sent again:
    # at most 2 x concurrency + 64 per kill
    assert refetched <= kills * (2 * 16 + 64)


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_completes(
    tmp_path: Path, slow_server: ServerThread
) -> None:
    urls = _write_inputs(tmp_path, slow_server.url)
    process = _fetch(tmp_path)
    _wait_for(lambda: _lines(tmp_path / "out.jsonl") >= 300, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"Traceback" not in stderr
    done_before = _lines(tmp_path / "out.jsonl")
    process = _fetch(tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    _check_exact(tmp_path, urls)
    stats = slow_server.server.stats
    refetched = sum(stats.count(u.split(slow_server.url, 1)[1]) - 1 for u in urls)
    # sent again: the requests in flight (16) and the results received but not yet
    # taken by the writer when the signal landed (at most the window, 2 x 16)
    assert refetched <= 3 * 16
    assert done_before >= 300


@pytest.mark.slow
def test_sigkill_in_the_first_moment(tmp_path: Path, slow_server: ServerThread) -> None:
    urls = _write_inputs(tmp_path, slow_server.url)
    process = _fetch(tmp_path)
    _wait_for(lambda: (tmp_path / "run.db").exists(), process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    process = _fetch(tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr  # the bad line is a failure
    _check_exact(tmp_path, urls)


def test_retry_failed_refetches_only_the_chosen_kinds(
    tmp_path: Path, slow_server: ServerThread
) -> None:
    base = slow_server.url
    (tmp_path / "urls.txt").write_text(f"{base}/flaky/1?key=a\n{base}/status/404\n{base}/pages/1\n")
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["--retries", "0", "-q"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, check=False)
    assert first.returncode == 1
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, check=False)
    assert again.returncode == 0  # nothing left to do: everything is recorded
    retry = subprocess.run(
        [*command, "--retry-kinds", "http_status"], cwd=tmp_path, capture_output=True, check=False
    )
    assert retry.returncode == 1  # the 404 is still a 404
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    by_url = {r["url"]: r for r in records}
    assert len(records) == 3  # rewritten: one line per key
    assert by_url[f"{base}/flaky/1?key=a"]["ok"] is True  # 503 the first time, 200 now
    assert by_url[f"{base}/status/404"]["status"] == 404
    stats = slow_server.server.stats
    assert stats.count("/pages/1") == 1
    assert stats.count("/flaky/1?key=a") == 2
    status = subprocess.run(
        [*FANOUT, "status", "--journal", "run.db", "--json"], cwd=tmp_path, capture_output=True
    )
    counts = json.loads(status.stdout)
    assert (counts["done"], counts["failed"], counts["pending"]) == (2, 1, 0)
    export = subprocess.run(
        [*FANOUT, "export", "--journal", "run.db", "--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert export.stdout.decode().splitlines()[0].startswith("url,key,line,ok,status")
    assert len(export.stdout.decode().splitlines()) == 4


def _run_status(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*FANOUT, "fetch", "http://127.0.0.1:1/", "--journal", str(path), "-q"],
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_bad_journals_are_one_line_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    newer = tmp_path / "newer.db"
    with Journal.open(newer, key_scheme="url"):
        pass
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    db.close()
    scheme = tmp_path / "scheme.db"
    with Journal.open(scheme, key_scheme="jsonl"):
        pass
    cases = {text: "not a SQLite", other: "not a fanout journal", newer: "newer fanout"}
    cases[scheme] = "keys by"
    for path, expected in cases.items():
        done = _run_status(path)
        assert done.returncode == 2, path
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert expected in lines[0]
        assert str(path) in lines[0]


def test_read_only_location_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # root ignores permissions; /proc is read-only for everyone
        target = locked / "run.db" if not os.access(locked, os.W_OK) else Path("/proc/run.db")
        done = _run_status(target)
        assert done.returncode == 2
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert str(target) in lines[0]
    finally:
        locked.chmod(0o700)


def test_classify_and_record_across_runs(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db", key_scheme="url") as journal:
        run = journal.begin_run()
        verdicts = journal.classify([("a", 1), ("b", 2), ("a", 3), ("c", 4)], run)
        assert [v.action for v in verdicts] == ["fetch", "fetch", "duplicate", "fetch"]
        assert verdicts[2].first_line == 1
        journal.record(
            [("a", State.DONE, None, b"{}\n"), ("b", State.FAILED, "timeout", b"{}\n")], 6
        )
        # c stays pending: it was in flight when this run stopped
        run = journal.begin_run()
        actions = [v.action for v in journal.classify([("a", 1), ("b", 2), ("c", 4)], run)]
        assert actions == ["skip", "skip", "fetch"]
        run = journal.begin_run()
        retried = journal.classify([("b", 2)], run, retry_failed=frozenset({"timeout"}))
        assert [v.action for v in retried] == ["fetch"]
        assert journal.output_offset() == 6
        counts = journal.counts()
        assert (counts.done, counts.pending, counts.runs) == (1, 2, 3)


def test_classify_a_hundred_thousand_keys(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "big.db", key_scheme="url") as journal:
        run = journal.begin_run()
        keys = [(f"http://127.0.0.1/{i}", i) for i in range(100_000)]
        for start in range(0, len(keys), 256):
            journal.classify(keys[start : start + 256], run)
        again = journal.classify(keys[:1000], run)
        assert {v.action for v in again} == {"duplicate"}
        assert journal.counts().pending == 100_000


def test_repair_output_drops_a_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert repair_output(out, 8) == len(b'{"b":2}\n{"c":')
    assert out.read_bytes() == b'{"a":1}\n'
    with pytest.raises(JournalError, match="shorter"):
        repair_output(out, 100)
    assert repair_output(tmp_path / "missing.jsonl", 0) == 0


_V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, state INTEGER NOT NULL,
    run INTEGER NOT NULL, line INTEGER, kind TEXT, record BLOB
);
"""


def _v1_journal(
    path: Path, rows: list[tuple[str, int, str | None, dict[str, object] | None]]
) -> None:
    """A journal as schema 1 wrote it: keys as read, passwords and all."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(_V1_SCHEMA)
    meta = [("schema_version", "1"), ("key_scheme", "jsonl"), ("runs", "1")]
    db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
    for line, (key, state, kind, record) in enumerate(rows, start=1):
        data = None if record is None else json.dumps(record).encode()
        db.execute(
            "INSERT INTO entries (key, state, run, line, kind, record) VALUES (?, ?, 1, ?, ?, ?)",
            (key, state, line, kind, data),
        )
    db.close()


def test_schema_1_keys_are_migrated_by_what_their_records_say(tmp_path: Path) -> None:
    secret = "s3cret-pw"
    url = f"http://bob:{secret}@127.0.0.1:1/a"
    line = f"ftp://bob:{secret}@x/"
    rows: list[tuple[str, int, str | None, dict[str, object] | None]] = [
        (url, 1, None, {"key": "http://***@127.0.0.1:1/a"}),  # a URL
        ("alice@example", 1, None, {"key": "alice@example"}),  # the user's own key
        (line, 2, "unsupported_scheme", {"key": None}),  # a rejected line
        (f"http://bob:{secret}@127.0.0.1:1/pending", 0, None, None),  # in flight
        ("http://127.0.0.1:1/plain", 1, None, {"key": "http://127.0.0.1:1/plain"}),
    ]
    path = tmp_path / "old.db"
    _v1_journal(path, rows)

    def files() -> bytes:
        return b"".join(part.read_bytes() for part in tmp_path.glob("old.db*"))

    assert secret.encode() in files()

    with Journal.open(path, key_scheme="", create=False) as journal:  # status, export
        counts = journal.counts()
    assert (counts.schema_version, counts.plain_keys) == (1, 4)
    assert secret.encode() in files()  # reading changes nothing

    with Journal.open(path, key_scheme="jsonl") as journal:  # a run: migrated
        expected = [
            journal.key(Request(url)),
            "alice@example",
            journal.key(Rejected(3, line, ErrorKind.UNSUPPORTED_SCHEME, "")),
            "http://127.0.0.1:1/plain",
        ]
        run = journal.begin_run()
        again = [(expected[0], 1), ("alice@example", 2), (expected[2], 3), (expected[3], 5)]
        assert [v.action for v in journal.classify(again, run)] == ["skip"] * 4
        assert journal.counts().plain_keys == 0
    with sqlite3.connect(path) as db:
        keys = [row[0] for row in db.execute("SELECT key FROM entries ORDER BY id")]
        version = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    db.close()
    assert keys == expected
    assert expected[0].startswith("http://***@127.0.0.1:1/a\x00")
    assert version == ("2",)
    assert secret.encode() not in files()
