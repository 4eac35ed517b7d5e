"""The journal's integrity: one run at a time, a damaged journal is one line,
and the way back from a missing or another output is spelled out.

Every journal here is made by a real run against the demo server, every
command is a real ``fanout`` process.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fanout.cli import exit_status
from fanout.demo import ServerThread
from fanout.errors import JournalError
from fanout.journal import Journal, State, lock_path

FANOUT = [sys.executable, "-m", "fanout"]
N_PAGES = 1500


def _fanout(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*FANOUT, *args], cwd=cwd, capture_output=True, check=False, timeout=120)


def _fetch(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return _fanout(cwd, "fetch", "--journal", "run.db", "-q", *args)


def _error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a usage error (exit status 2) prints."""
    assert done.returncode == exit_status.USAGE, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fanout: error: "), lines
    return lines[0]


def _wait_until(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Poll ``condition`` (not a time) while ``process`` runs; fail after 60 s."""
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, process.communicate(timeout=30)
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, server: ServerThread) -> Path:
    """A directory holding urls.txt and what a run that fetched them all left:
    run.db and out.jsonl (copy it before changing it)."""
    where = tmp_path_factory.mktemp("finished")
    urls = [f"{server.url}/pages/{i}?finished" for i in range(N_PAGES)]
    (where / "urls.txt").write_text("\n".join(urls) + "\n")
    done = _fetch(where, "-i", "urls.txt", "-o", "out.jsonl")
    assert done.returncode == exit_status.OK, done.stderr
    assert not (where / "run.db-wal").exists()  # checkpointed: run.db holds everything
    return where


def _copy(finished: Path, to: Path) -> Path:
    for name in ("urls.txt", "run.db", "out.jsonl"):
        shutil.copy(finished / name, to / name)
    return to


def _requests(server: ServerThread, marker: str) -> int:
    """How many requests the server saw whose query holds ``marker``."""
    return sum(count for path, count in server.stats.by_path.items() if marker in path)


# ------------------------------------------------------------------ one run per journal


def test_a_second_run_exits_2_while_the_first_runs_and_kill_9_frees_the_journal(
    tmp_path: Path, server: ServerThread
) -> None:
    base = server.url
    pages = [f"{base}/pages/{i}?inuse" for i in range(20)]
    (tmp_path / "urls.txt").write_text("\n".join([f"{base}/hang?inuse", *pages]) + "\n")
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    first = subprocess.Popen([*command, "-q", "-c", "4"], cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        _wait_until(
            lambda: (tmp_path / "run.db").exists() and server.stats.count("/hang?inuse") == 1,
            first,
        )
        second = _fetch(tmp_path, f"{base}/pages/second?inuse", "-o", "out.jsonl")
        line = _error_line(second)
        assert "journal 'run.db' is in use by another fanout run" in line
        assert f"(process {first.pid})" in line
        assert server.stats.count("/pages/second?inuse") == 0  # nothing fetched

        # reading takes no lock: status and export work while the run holds it
        status = _fanout(tmp_path, "status", "--journal", "run.db", "--json")
        assert status.returncode == exit_status.OK, status.stderr
        counts = json.loads(status.stdout)
        assert counts["pending"] >= 1  # the hanging request, at least
        assert counts["output"] == "out.jsonl"
        export = _fanout(tmp_path, "export", "--journal", "run.db", "-o", "snapshot.jsonl")
        assert export.returncode == exit_status.OK, export.stderr
        assert all(r["ok"] for r in _records(tmp_path / "snapshot.jsonl"))
        assert first.poll() is None  # neither disturbed the run
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert lock_path(tmp_path / "run.db").exists()  # left behind, holding a dead process id
    third = _fetch(tmp_path, f"{base}/pages/third?inuse", "-o", "out.jsonl")
    assert third.returncode == exit_status.OK, third.stderr
    assert server.stats.count("/pages/third?inuse") == 1


def test_the_lock_is_its_own_file_so_sqlite_closing_descriptors_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with Journal.open(path, key_scheme="url") as journal:
        with pytest.raises(JournalError, match="in use by another fanout run"):
            Journal.open(path, key_scheme="url")
        # a reader opens and closes the database file: SQLite's own POSIX locks
        # of this process would go with it, the run's lock does not
        with Journal.open(path, key_scheme="", create=False) as reader:
            reader.counts()
        sqlite3.connect(path).close()
        with pytest.raises(JournalError, match="in use"):
            Journal.open(path, key_scheme="url")
        journal.begin_run()
    with Journal.open(path, key_scheme="url") as again:  # closed: free again
        assert again.counts().runs == 1


# ------------------------------------------------------------------ damaged journals


def _overwrite_a_middle_page(path: Path) -> None:
    with sqlite3.connect(path) as db:
        pages, size = db.execute("PRAGMA page_count").fetchone()[0], 4096
        assert db.execute("PRAGMA page_size").fetchone()[0] == size
    db.close()
    garbage = random.Random(17).randbytes(size)
    with path.open("r+b") as stream:
        stream.seek((pages // 2) * size)
        stream.write(garbage)


def test_pages_overwritten_by_garbage_are_one_line_from_every_command(
    tmp_path: Path, finished: Path, server: ServerThread
) -> None:
    work = _copy(finished, tmp_path)
    _overwrite_a_middle_page(work / "run.db")
    (work / "saved.jsonl").write_bytes(b"kept\n")
    before = _requests(server, "finished")

    for done in (
        _fanout(work, "status", "--journal", "run.db"),
        _fanout(work, "export", "--journal", "run.db"),
        _fanout(work, "export", "--journal", "run.db", "-o", "saved.jsonl", "--format", "csv"),
        _fetch(work, "-i", "urls.txt", "-o", "out.jsonl"),  # it meets the page mid-run
    ):
        line = _error_line(done)
        assert "journal 'run.db' is damaged (database disk image is malformed)" in line
        assert "'fanout status --check'" in line
    assert (work / "saved.jsonl").read_bytes() == b"kept\n"  # the export replaced nothing
    assert not list(work.glob(".saved.jsonl.*"))
    assert _requests(server, "finished") == before
    assert (work / "out.jsonl").read_bytes() == (finished / "out.jsonl").read_bytes()

    check = _fanout(work, "status", "--journal", "run.db", "--check")
    assert "SQLite's integrity check found a problem" in _error_line(check)
    report = check.stdout.decode().splitlines()
    assert report[0] == "journal run.db: SQLite's integrity check found problems:"
    assert len(report) >= 2
    check = _fanout(work, "status", "--journal", "run.db", "--check", "--json")
    assert _error_line(check)
    integrity = json.loads(check.stdout)["integrity"]
    assert integrity["ok"] is False
    assert integrity["problems"]


def test_status_check_of_a_sound_journal(finished: Path) -> None:
    done = _fanout(finished, "status", "--journal", "run.db", "--check")
    assert done.returncode == exit_status.OK, done.stderr
    text = done.stdout.decode()
    assert "  check    ok (SQLite's integrity check)" in text
    assert f"  done     {N_PAGES:,}" in text
    assert "  output   out.jsonl (" in text
    done = _fanout(finished, "status", "--journal", "run.db", "--check", "--json")
    assert json.loads(done.stdout)["integrity"] == {"ok": True, "problems": []}


def test_a_file_that_is_not_sqlite_is_one_line_from_status_and_export(tmp_path: Path) -> None:
    (tmp_path / "run.db").write_bytes(random.Random(3).randbytes(64 * 1024))
    for command in ("status", "export"):
        line = _error_line(_fanout(tmp_path, command, "--journal", "run.db"))
        assert "journal 'run.db' is not a fanout journal (not a SQLite database)" in line


@contextlib.contextmanager
def _small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_space_is_freed(
    tmp_path: Path, server: ServerThread
) -> None:
    with _small_tmpfs(tmp_path / "disk") as disk:
        first = _fetch(disk, f"{server.url}/pages/1?full", "-o", "out.jsonl")
        assert first.returncode == exit_status.OK, first.stderr
        filler = disk / "filler"
        with filler.open("wb") as stream, contextlib.suppress(OSError):
            while True:  # bounded by the 1 MiB of the disk
                stream.write(bytes(64 * 1024))
                stream.flush()
        # SQLite cannot even map its -shm file: reading fails too, as an I/O error
        for done in (
            _fanout(disk, "status", "--journal", "run.db"),
            _fanout(disk, "export", "--journal", "run.db"),
            _fetch(disk, f"{server.url}/pages/2?full", "-o", "out.jsonl"),
        ):
            line = _error_line(done)
            assert "journal 'run.db' cannot be written: the disk holding it is full" in line
        assert server.stats.count("/pages/2?full") == 0
        filler.unlink()
        again = _fetch(disk, f"{server.url}/pages/2?full", "-o", "out.jsonl")
        assert again.returncode == exit_status.OK, again.stderr
        assert [r["url"] for r in _records(disk / "out.jsonl")] == [
            f"{server.url}/pages/1?full",
            f"{server.url}/pages/2?full",
        ]


# ------------------------------------------------------------------ recovery


def test_a_missing_output_tells_how_to_rebuild_it(
    tmp_path: Path, finished: Path, server: ServerThread
) -> None:
    work = _copy(finished, tmp_path)
    (work / "out.jsonl").unlink()
    before = _requests(server, "finished")
    line = _error_line(_fetch(work, "-i", "urls.txt", "-o", "out.jsonl"))
    assert "output 'out.jsonl' is missing, but journal 'run.db' recorded" in line
    assert "rebuild it from the journal with 'fanout export --journal run.db -o out.jsonl'" in line
    assert not (work / "out.jsonl").exists()

    rebuilt = _fanout(work, "export", "--journal", "run.db", "-o", "out.jsonl")
    assert rebuilt.returncode == exit_status.OK, rebuilt.stderr
    resumed = _fetch(work, "-i", "urls.txt", "-o", "out.jsonl")
    assert resumed.returncode == exit_status.OK, resumed.stderr
    assert _requests(server, "finished") == before  # nothing fetched again
    assert len(_records(work / "out.jsonl")) == N_PAGES


def test_a_rebuilt_output_is_taken_when_the_old_one_held_superseded_lines(
    tmp_path: Path, server: ServerThread
) -> None:
    url = f"{server.url}/pages/1?superseded"
    (tmp_path / "urls.txt").write_text(f"{url}\n{url}\n{server.url}/pages/2?superseded\n")
    first = _fetch(tmp_path, "-i", "urls.txt", "-o", "out.jsonl", "--no-dedupe")
    assert first.returncode == exit_status.OK, first.stderr
    assert len(_records(tmp_path / "out.jsonl")) == 3  # two lines for one key
    (tmp_path / "out.jsonl").unlink()
    assert (
        _fanout(tmp_path, "export", "--journal", "run.db", "-o", "out.jsonl").returncode
        == exit_status.OK
    )
    resumed = _fetch(tmp_path, "-i", "urls.txt", "-o", "out.jsonl")
    assert resumed.returncode == exit_status.OK, resumed.stderr
    assert len(_records(tmp_path / "out.jsonl")) == 2
    assert server.stats.count("/pages/1?superseded") == 2  # --no-dedupe, then never again


def test_another_output_than_the_journal_wrote_to_is_named(
    tmp_path: Path, finished: Path, server: ServerThread
) -> None:
    work = _copy(finished, tmp_path)
    before = _requests(server, "finished")
    line = _error_line(_fetch(work, "-i", "urls.txt", "-o", "b.jsonl"))
    assert "journal 'run.db' wrote to 'out.jsonl'; this run asks for 'b.jsonl'" in line
    assert "resume with -o out.jsonl" in line
    line = _error_line(_fetch(work, "-i", "urls.txt"))
    assert "wrote to 'out.jsonl'; this run asks for standard output" in line
    assert not (work / "b.jsonl").exists()
    assert _requests(server, "finished") == before
    assert (work / "out.jsonl").read_bytes() == (finished / "out.jsonl").read_bytes()

    # the same files by other names: another directory, a path through it
    (work / "sub").mkdir()
    same = _fanout(
        work / "sub", "fetch", "-i", "../urls.txt", "-o", str(work / "out.jsonl"),
        "--journal", "../run.db", "-q",
    )  # fmt: skip
    assert same.returncode == exit_status.OK, same.stderr


def test_a_journal_of_standard_output_keeps_to_it(tmp_path: Path, server: ServerThread) -> None:
    first = _fetch(tmp_path, f"{server.url}/pages/1?stdout")
    assert first.returncode == exit_status.OK, first.stderr
    assert len(first.stdout.splitlines()) == 1
    line = _error_line(_fetch(tmp_path, f"{server.url}/pages/2?stdout", "-o", "out.jsonl"))
    assert "wrote to standard output; this run asks for 'out.jsonl'" in line
    assert "resume without -o" in line
    again = _fetch(tmp_path, f"{server.url}/pages/1?stdout", f"{server.url}/pages/2?stdout")
    assert again.returncode == exit_status.OK, again.stderr
    assert [r["url"] for r in map(json.loads, again.stdout.splitlines())] == [
        f"{server.url}/pages/2?stdout"
    ]


def test_until_a_record_is_written_a_run_may_change_the_output(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with Journal.open(path, key_scheme="url") as journal:
        journal.claim_output(str(tmp_path / "a.jsonl"))
        run = journal.begin_run()
        journal.classify([("k", 1)], run)
        journal.check_output(str(tmp_path / "b.jsonl"))  # nothing recorded yet
        journal.claim_output(str(tmp_path / "b.jsonl"))
        journal.record([("k", State.DONE, None, b"{}\n")], 3)
        with pytest.raises(JournalError, match=r"wrote to '.*b\.jsonl'; this run asks for"):
            journal.check_output(str(tmp_path / "a.jsonl"))


def test_status_counts_as_pending_the_keys_a_stopped_run_never_sent(
    tmp_path: Path, server: ServerThread
) -> None:
    base = server.url
    pages = [f"{base}/pages/{i}?failfast" for i in range(50)]
    (tmp_path / "urls.txt").write_text("\n".join([f"{base}/status/404?failfast", *pages]) + "\n")
    args = ("-i", "urls.txt", "-o", "out.jsonl", "-c", "1", "--retries", "0")
    stopped = _fetch(tmp_path, *args, "--fail-fast")
    assert stopped.returncode == exit_status.FAILURES, stopped.stderr
    never_sent = sum(1 for url in pages if server.stats.count(url[len(base) :]) == 0)
    assert never_sent > 0
    status = _fanout(tmp_path, "status", "--journal", "run.db")
    assert status.returncode == exit_status.OK, status.stderr
    pending = next(line for line in status.stdout.decode().splitlines() if "pending" in line)
    assert int(pending.split()[1]) >= never_sent  # not only what was in flight
    assert "queued" in pending
    assert "the next run fetches them" in pending
    resumed = _fetch(tmp_path, *args)
    assert resumed.returncode == exit_status.OK, (
        resumed.stderr
    )  # the 404 is an earlier run's failure
    assert len(_records(tmp_path / "out.jsonl")) == 51
    counts = [server.stats.count(url[len(base) :]) for url in pages]
    assert min(counts) == 1
    assert sum(counts) - len(pages) <= 2  # sent again: what was in flight (-c 1) when it stopped
