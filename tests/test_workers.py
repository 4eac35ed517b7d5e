"""``fanout fetch --workers N`` (issue 22): N processes, requests sharded by host,
one writer. Real processes, real signals, real loopback servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.config import FetcherConfig
from fanout.demo import ServerThread
from fanout.errors import ConfigError
from fanout.jobs.fetch import FetchJob
from fanout.jobs.workers import shard_of, worker_configs
from fanout.policy import Limits
from tests.durability import FANOUT, assert_one_line, check_saved_files, fanout, records

# 16 hosts (ports) served, of which the tests take two per worker of two (see _bases)
HOSTS = ["127.0.0.1"] * 16

_started: list[subprocess.Popen[bytes]] = []


def _popen(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, **options)
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Until ``condition()`` holds (a condition, not a time); fail if the
    process ended first or 60 s passed."""
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, "the run ended first"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError):  # gone, or changing, meanwhile
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            if fields.get("PPid", "").strip() == str(pid):
                found.append(int(status.parent.name))
    return sorted(found)


def _started_workers(pid: int) -> list[int]:
    """The children of ``pid`` that run the worker's program (exec done)."""
    found = []
    for child in _children(pid):
        with contextlib.suppress(OSError):
            if b"fanout.jobs.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie has exited
            return False
    return True


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    while not _gone(pids):
        assert time.monotonic() < deadline, f"worker processes {pids} outlived their job"
        time.sleep(0.01)


def _comparable(row: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in row.items() if name != "elapsed_ms"}


def _key(row: dict[str, object]) -> str:
    return str(row["key"]) + str(row["line"])


def _bases(server: ServerThread) -> list[str]:
    """Four of the server's hosts, two owned by each of two workers: the ports
    are random, and so would be the split of four hosts (all to one worker, 1
    time in 8)."""
    owned: dict[int, list[str]] = {0: [], 1: []}
    for base in server.urls:
        scheme, rest = base.split("://")
        host, port = rest.rsplit(":", 1)
        owned[shard_of((scheme, host, int(port)), 2)].append(base)
    assert min(len(bases) for bases in owned.values()) >= 2  # 1 time in 2,000 not
    return [*owned[0][:2], *owned[1][:2]]


def _urls(server: ServerThread, per_host: int, tag: str) -> list[str]:
    # a path of its own per URL, so the server's counts by path are per URL
    bases = list(enumerate(_bases(server)))
    return [f"{base}/pages/{h}-{i}?run={tag}" for h, base in bases for i in range(per_host)]


# ------------------------------------------------------------------ plain runs


def test_two_workers_write_the_records_one_process_writes(tmp_path: Path) -> None:
    with ServerThread(hosts=HOSTS) as server:
        urls = _urls(server, 50, "same")
        lines = [*urls, "not a url", urls[3], f"{server.url}/status/404"]
        (tmp_path / "urls.txt").write_text("\n".join(lines) + "\n")
        outputs = []
        for workers in ("1", "2"):
            pages = tmp_path / f"pages{workers}"
            done = fanout(
                "fetch", "-i", "urls.txt", "--out-dir", str(pages), "--workers", workers, "-q",
                "--stats-json", f"stats{workers}.json", cwd=tmp_path,
            )  # fmt: skip
            assert done.returncode == 1, done.stderr  # the bad line and the 404
            assert done.stderr == b""
            rows = records(done.stdout)
            check_saved_files(rows)
            for row in rows:
                if row["path"] is not None:
                    row["path"] = str(row["path"]).replace(str(pages), "PAGES")
            outputs.append(sorted((_comparable(row) for row in rows), key=_key))
            assert not (pages / ".fanout-tmp").exists()
    one, two = outputs
    assert len(one) == len(lines)
    assert two == one
    stats = [(tmp_path / f"stats{n}.json").read_text() for n in "12"]
    assert '"duplicates": 1' in stats[1]
    assert '"failed": 2' in stats[1]
    assert [json.loads(text)["transport"] for text in stats] == ["aiohttp", "aiohttp"]


def test_ordered_output_with_workers_is_in_input_order(tmp_path: Path) -> None:
    with ServerThread(hosts=HOSTS, latency=0.002, jitter=0.004) as server:
        urls = _urls(server, 40, "ordered")
        lines = ["not a url", *urls[:50], urls[7], *urls[50:]]
        (tmp_path / "urls.txt").write_text("\n".join(lines) + "\n")
        done = fanout(
            "fetch", "-i", "urls.txt", "--workers", "3", "--ordered", "-q", "-c", "12",
            cwd=tmp_path,
        )  # fmt: skip
    rows = records(done.stdout)
    assert [row["line"] for row in rows] == list(range(1, len(lines) + 1))
    assert rows[51]["duplicate_of"] == 9


def test_per_host_limits_hold_across_workers(tmp_path: Path) -> None:
    with ServerThread(hosts=HOSTS, latency=0.02) as server:
        urls = _urls(server, 40, "limits")
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        done = fanout(
            "fetch", "-i", "urls.txt", "--workers", "2", "-c", "32", "--per-host", "2", "-q",
            "-o", "out.jsonl", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        hosts = [base.removeprefix("http://") for base in _bases(server)]
        peaks = [server.stats.peak_in_flight(host) for host in hosts]
    assert peaks == [2, 2, 2, 2]  # reached, never passed, with two processes sending
    assert len(records((tmp_path / "out.jsonl").read_bytes())) == len(urls)


def test_a_journaled_run_with_workers_resumes_and_skips_what_is_done(tmp_path: Path) -> None:
    with ServerThread(hosts=HOSTS) as server:
        urls = _urls(server, 25, "journal")
        (tmp_path / "urls.txt").write_text("\n".join(urls[:60]) + "\n")
        command = ["fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db", "-q"]
        first = fanout(*command, "--workers", "2", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        second = fanout(*command, "--workers", "3", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        counts = [server.stats.count("/" + url.split("/", 3)[3]) for url in urls]
    rows = records((tmp_path / "out.jsonl").read_bytes())
    assert sorted(str(row["key"]) for row in rows) == sorted(urls)
    assert counts == [1] * len(urls)  # the second run fetched only what the first did not


def test_fail_fast_stops_every_worker(tmp_path: Path) -> None:
    with ServerThread(hosts=HOSTS, latency=0.02) as server:
        urls = [f"{server.url}/status/500", *_urls(server, 100, "fail-fast")]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        done = fanout(
            "fetch", "-i", "urls.txt", "--workers", "2", "-c", "4", "--per-host", "1",
            "--retries", "0", "--fail-fast", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert b"stopped at the first failure (--fail-fast)" in done.stderr
    rows = records(done.stdout)
    assert any(row["status"] == 500 for row in rows)
    assert len(rows) < len(urls) // 2  # stopped, not run to the end


# --------------------------------------------------------------- faults, signals


# A run of 2,400 URLs at 16 in flight and 50 ms each: seconds, long enough to
# be cut short at its 200th record, on a loaded machine too.
def _slow_run(
    tmp_path: Path, server: ServerThread, tag: str, *extra: str
) -> tuple[list[str], list[str]]:
    urls = _urls(server, 600, tag)
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    command = [*FANOUT, "fetch", "-i", "urls.txt", "-o", "out.jsonl", "--journal", "run.db"]
    command += ["--out-dir", "pages", "-c", "16", "--per-host", "4", "--workers", "2", "-q"]
    return urls, [*command, *extra]


def _exact_after_resume(tmp_path: Path, command: list[str], urls: list[str]) -> None:
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = records((tmp_path / "out.jsonl").read_bytes())
    assert sorted(str(row["key"]) for row in rows) == sorted(urls)  # one line per key
    for row in rows:  # the paths are relative to the run's directory
        row["path"] = None if row["path"] is None else str(tmp_path / str(row["path"]))
    check_saved_files(rows)
    assert not list((tmp_path / "pages").rglob("*.tmp"))  # the resume removed a kill's


@pytest.mark.slow
def test_kill_9_of_the_job_ends_its_workers_and_resume_is_exact(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    with ServerThread(hosts=HOSTS, latency=0.05) as server:
        urls, command = _slow_run(tmp_path, server, "kill9")
        process = _popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
        _wait_for(lambda: _lines(output) >= 200, process)
        _wait_for(lambda: len(_children(process.pid)) == 2, process)
        workers = _children(process.pid)
        process.kill()
        _, stderr = process.communicate(timeout=60)  # the workers hold stderr too
        _wait_gone(workers)  # no orphan: each saw its parent go
        assert b"Traceback" not in stderr
        assert _lines(output) < len(urls)
        _exact_after_resume(tmp_path, command, urls)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
    # SIGTERM to every process: systemd, docker stop; SIGINT to every process: Ctrl-C
    ids=["SIGTERM", "SIGTERM-to-all", "SIGINT-to-all"],
)
def test_a_signal_stops_every_worker_and_writes_what_was_fetched(
    tmp_path: Path, signum: int, to_group: bool
) -> None:
    output = tmp_path / "out.jsonl"
    with ServerThread(hosts=HOSTS, latency=0.05) as server:
        urls, command = _slow_run(tmp_path, server, f"signal{signum}{to_group}")
        command.remove("-q")
        process = _popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
        _wait_for(lambda: _lines(output) >= 200, process)
        _wait_for(lambda: len(_children(process.pid)) == 2, process)
        workers = _children(process.pid)
        if to_group:
            for pid in [process.pid, *workers]:
                os.kill(pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signum, stderr
        assert b"Traceback" not in stderr
        assert b"every result fetched so far was written" in stderr
        assert _gone(workers)
        written = records(output.read_bytes())
        assert 200 <= len(written) < len(urls)
        summary = stderr.split(b" inputs in ", 1)[0].rsplit(b"\n", 1)[-1]
        assert len(written) == int(summary.replace(b",", b""))  # every result counted is written
        _exact_after_resume(tmp_path, command, urls)


@pytest.mark.slow
def test_a_worker_killed_ends_the_job_in_one_line_and_resume_is_exact(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    with ServerThread(hosts=HOSTS, latency=0.05) as server:
        urls, command = _slow_run(tmp_path, server, "worker9")
        process = _popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
        _wait_for(lambda: _lines(output) >= 200, process)
        _wait_for(lambda: len(_children(process.pid)) == 2, process)
        workers = _children(process.pid)
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1, stderr
        assert_one_line(stderr, " of 2 (pid ", "was killed by SIGKILL", "run again")
        assert _gone(workers)
        assert _lines(output) < len(urls)
        _exact_after_resume(tmp_path, command, urls)


def test_ctrl_c_as_the_workers_start_is_the_parents_alone(tmp_path: Path) -> None:
    """Ctrl-C reaches the terminal's foreground process group: the workers are
    in one of their own (the parent stops them), so one pressed while they are
    still importing (before they ignore SIGINT) prints no traceback of theirs."""
    with ServerThread(hosts=HOSTS, latency=0.05) as server:
        _, command = _slow_run(tmp_path, server, "ctrl-c")
        command.remove("-q")
        process = _popen(command, cwd=tmp_path, stderr=subprocess.PIPE, process_group=0)
        _wait_for(lambda: len(_started_workers(process.pid)) == 2, process)
        workers = _started_workers(process.pid)
        assert all(os.getpgid(pid) != process.pid for pid in workers)
        os.killpg(process.pid, signal.SIGINT)  # at once: the workers are starting
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert b"Traceback" not in stderr, stderr
    assert b"KeyboardInterrupt" not in stderr
    assert _gone(workers)


# ------------------------------------------------------------------ bad options


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_worker_count_is_one_line_and_exit_2(value: str) -> None:
    done = fanout("fetch", "http://127.0.0.1:9/", "--workers", value)
    assert done.returncode == 2
    assert_one_line(done.stderr, "--workers")


def test_more_workers_than_the_concurrency_is_refused() -> None:
    done = fanout("fetch", "http://127.0.0.1:9/", "--workers", "4", "-c", "3")
    assert done.returncode == 2
    assert_one_line(done.stderr, "4 workers need a concurrency of at least 4")
    with pytest.raises(ConfigError, match="workers must be an integer"):
        FetchJob(workers=0)


def test_a_worker_whose_parent_is_gone_before_its_setup_exits_quietly(tmp_path: Path) -> None:
    worker = [*FANOUT[:1], "-m", "fanout.jobs.worker"]
    done = subprocess.run(worker, input=b"", capture_output=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"", b"")
    with (tmp_path / "out").open("wb") as file:  # not a pipe: refused, one line
        done = subprocess.run(worker, input=b"", stdout=file, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 2
    assert_one_line(done.stderr, "fanout fetch --workers N")


# ------------------------------------------------------------------ arithmetic


def test_shards_are_stable_and_spread() -> None:
    keys = [("http", f"host{i}.example", 80) for i in range(1000)]
    shards = [shard_of(key, 4) for key in keys]
    assert shards == [shard_of(key, 4) for key in keys]
    assert shard_of(("http", "a.example", 80), 7) == 5  # the same in every process and run
    assert all(200 <= shards.count(n) <= 300 for n in range(4))


def test_each_worker_gets_a_share_of_the_concurrency_and_rate() -> None:
    limits = Limits(concurrency=10, per_host=3, rate=90.0, per_host_rate=2.0, window=30)
    configs = worker_configs(FetcherConfig(limits=limits), 3)
    assert [c.limits.concurrency for c in configs] == [4, 3, 3]
    assert {c.limits.rate for c in configs} == {30.0}
    assert {c.limits.window for c in configs} == {10}
    assert {(c.limits.per_host, c.limits.per_host_rate) for c in configs} == {(3, 2.0)}
