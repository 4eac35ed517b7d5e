"""End to end: the real ``fanout`` command in a subprocess against a real local server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fanout.cli import cli

FANOUT = [sys.executable, "-m", "fanout"]


def run(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*FANOUT, *args], input=stdin, capture_output=True, timeout=120, cwd=cwd, check=False
    )


def records(output: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


@pytest.mark.usefixtures("transport")
def test_bad_lines_become_records_and_the_run_goes_on(server_thread: str, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_bytes(
        b"\xef\xbb\xbf"
        + f"{server_thread}/items/1\r\n".encode()
        + b"# a comment\n\n"
        + b"not a url\n"
        + b"python://x\n"
        + b"http://127.0.0.1:8/\xff\xfe\n"
        + b"h" * (16 * 1024 * 1024)
        + b"\n"
        + f"  {server_thread}/items/2  \n".encode()
    )
    done = run("fetch", "-i", str(urls), "--quiet")
    assert done.returncode == 1
    got = {int(str(r["line"])): r for r in records(done.stdout)}
    assert sorted(got) == [1, 4, 5, 6, 7, 8]
    assert got[1]["ok"] is True
    assert got[8]["ok"] is True
    error = got[4]["error"]
    assert error == {"kind": "invalid_url", "message": error["message"], "cause": None}  # type: ignore[index]
    assert got[5]["error"]["kind"] == "unsupported_scheme"  # type: ignore[index]
    assert "UTF-8" in got[6]["error"]["message"]  # type: ignore[index]
    assert "\\xff" in str(got[6]["url"])
    assert "longer than" in got[7]["error"]["message"]  # type: ignore[index]
    assert done.stderr == b""


def test_stdin_and_empty_input(server_thread: str, tmp_path: Path) -> None:
    done = run("fetch", "-i", "-", "-q", stdin=f"{server_thread}/items/3\n".encode())
    assert done.returncode == 0
    (record,) = records(done.stdout)
    assert record["status"] == 200
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    done = run("fetch", "-i", str(empty), "-q")
    assert (done.returncode, done.stdout) == (0, b"")


@pytest.mark.usefixtures("transport")
def test_out_dir_names_are_safe_and_files_complete(server_thread: str, tmp_path: Path) -> None:
    hostile = [
        "/pages/a/b/c/d/../../../../etc/passwd",  # the client resolves it to /pages/etc/passwd
        "/pages/a/b/%2e%2e/%2e%2e/secret",
        "/pages/" + "a" * 300 + "/" + "b" * 300,
        "/pages/ünïcödé/页面",
        "/pages/2?q=../../x&r=%00",
        "/pages/2?q=other",
        "/pages/3/",
    ]
    out = tmp_path / "out"
    urls = [f"{server_thread}{path}" for path in hostile] + [f"{server_thread}/short"]
    done = run(
        "fetch",
        *urls,
        "--out-dir",
        str(out),
        "-q",
        "--retries",
        "0",
        "-o",
        str(tmp_path / "r.jsonl"),
    )
    assert done.returncode == 1  # /short fails
    got = records((tmp_path / "r.jsonl").read_bytes())
    paths = [Path(str(r["path"])) for r in got if r["ok"]]
    assert len(paths) == len(hostile)
    assert len(set(paths)) == len(paths)
    root = out.resolve()
    for record in got:
        if not record["ok"]:
            assert record["path"] is None
            continue
        path = Path(str(record["path"])).resolve()
        assert root in path.parents
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    on_disk = sorted(p for p in out.rglob("*") if p.is_file())
    assert sorted(p.resolve() for p in on_disk) == sorted(
        p.resolve() for p in paths
    )  # no partial files


@pytest.mark.usefixtures("transport")
def test_exit_status_zero_and_one(server_thread: str) -> None:
    assert run("fetch", f"{server_thread}/items/1", "-q").returncode == 0
    assert run("fetch", f"{server_thread}/status/500", "-q", "--retries", "0").returncode == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fetch", "--bogus", "http://127.0.0.1:1/"], "--bogus"),
        (["fetch", "-c", "0", "http://127.0.0.1:1/"], "--concurrency"),
        (["fetch", "--rate", "nan", "http://127.0.0.1:1/"], "--rate"),
        (["fetch", "--timeout", "soon", "http://127.0.0.1:1/"], "--timeout"),
        (["fetch", "--max-bytes", "10XB", "http://127.0.0.1:1/"], "--max-bytes"),
        (["fetch", "-H", "no colon", "http://127.0.0.1:1/"], "--header"),
        (["fetch", "-i", "/nonexistent/urls.txt"], "/nonexistent/urls.txt"),
        (["fetch", "--jsonl-input", "/"], "'/'"),
        (["fetch"], "no input"),
        (["serve", "--host", "10.1.2.3"], "loopback"),
    ],
)
def test_usage_errors_are_one_line_and_status_two(args: list[str], expected: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert b"Traceback" not in done.stderr


def test_ordered_output_follows_input_order(server_thread: str) -> None:
    urls = [f"{server_thread}/slow?delay={0.05 if i % 3 == 0 else 0}&i={i}" for i in range(12)]
    urls.insert(5, "python://bad")
    urls.insert(8, urls[2])  # a duplicate
    done = run("fetch", *urls, "--ordered", "-q", "--per-host", "16")
    lines = [r["line"] for r in records(done.stdout)]
    assert lines == list(range(1, len(urls) + 1))
    dup = records(done.stdout)[8]
    assert dup["duplicate_of"] == 3
    assert dup["ok"] is None


@pytest.mark.usefixtures("transport")
def test_fail_fast_stops_at_the_first_failure(server_thread: str) -> None:
    urls = [f"{server_thread}/status/404"] + [
        f"{server_thread}/slow?delay=0.2&i={i}" for i in range(50)
    ]
    done = run("fetch", *urls, "--fail-fast", "-q", "-c", "2", "--per-host", "2")
    assert done.returncode == 1
    assert len(records(done.stdout)) < len(urls)


def test_stats_json_and_summary(server_thread: str, tmp_path: Path, transport: str) -> None:
    stats = tmp_path / "stats.json"
    urls = [f"{server_thread}/items/{i}" for i in range(1, 6)] + [f"{server_thread}/status/404"]
    done = run("fetch", *urls, urls[0], "--stats-json", str(stats), "-o", str(tmp_path / "o.jsonl"))
    assert done.returncode == 1
    summary = json.loads(stats.read_text())
    assert summary["ok"] == 5
    assert summary["failed"] == 1
    assert summary["duplicates"] == 1
    assert summary["by_status"] == {"200": 5, "404": 1}
    assert summary["by_error"] == {"http_status": 1}
    assert summary["latency_ms"]["p50"] is not None
    assert summary["transport"] == transport
    # one host, by host key: six requests sent (the duplicate is not), none in flight
    [host] = summary["hosts"]
    assert host["host"] == server_thread.removeprefix("http://")
    assert host["requests"] == 6
    assert host["in_flight"] == 0
    assert host["throttled"] == 0
    assert host["rate_limit"] is None
    assert host["rate_source"] is None
    assert host["p95_ms"] >= host["p50_ms"] > 0
    text = done.stderr.decode()
    assert "5 ok" in text
    assert "1 failed" in text
    assert "p99" in text


@pytest.mark.usefixtures("transport")
def test_credentials_never_appear_in_output(server_thread: str) -> None:
    secret = "hunter2secret"
    url = server_thread.replace("http://", f"http://alice:{secret}@") + "/status/404"
    done = run("fetch", url, "--retries", "0")
    assert secret.encode() not in done.stdout
    assert secret.encode() not in done.stderr
    assert b"alice" not in done.stdout


@pytest.mark.usefixtures("transport")
def test_jsonl_input_and_bodies(server_thread: str, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps(
            {"url": f"{server_thread}/echo", "method": "POST", "body": "hi", "key": "k1", "id": 1}
        )
        + "\n{not json\n"
        + json.dumps({"url": f"{server_thread}/items/4", "key": "k2", "meta": {"a": 1}})
        + "\n"
    )
    done = run("fetch", "--jsonl-input", str(requests), "--body", "json", "--ordered", "-q")
    first, bad, third = records(done.stdout)
    assert first["key"] == "k1"
    assert first["body"]["method"] == "POST"  # type: ignore[index]
    assert bad["error"]["kind"] == "bad_input"  # type: ignore[index]
    assert bad["line"] == 2
    assert third["body"]["id"] == 4  # type: ignore[index]
    assert (first["meta"], bad["meta"], third["meta"]) == ({"id": 1}, None, {"a": 1})


def test_ctrl_c_writes_what_was_fetched_and_exits_130(server_thread: str, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    quick = [f"{server_thread}/items/{i}" for i in range(1, 4)]
    urls = quick + [f"{server_thread}/hang?i={i}" for i in range(3)]
    process = subprocess.Popen(
        [*FANOUT, "fetch", *urls, "-o", str(output), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for the condition, not for a time
        if output.exists() and output.read_bytes().count(b"\n") >= 3:
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    got = records(output.read_bytes())
    assert {r["url"] for r in got} >= set(quick)
    assert b"Traceback" not in stderr


@pytest.mark.parametrize("journal", [False, True])
def test_a_pipe_that_pauses_holds_up_nothing_already_read(
    server_thread: str, tmp_path: Path, journal: bool
) -> None:
    """`producer | fanout fetch -i -`: a line already written is fetched and
    recorded while the producer is silent, not once it writes again."""
    output = tmp_path / "out.jsonl"
    args = ["fetch", "-i", "-", "-o", str(output), "-q"]
    if journal:
        args += ["--journal", str(tmp_path / "run.db")]
    process = subprocess.Popen(
        [*FANOUT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    try:
        process.stdin.write(f"{server_thread}/items/1\n".encode())
        process.stdin.flush()
        deadline = time.monotonic() + 30
        while not (output.exists() and output.read_bytes().count(b"\n") == 1):
            assert time.monotonic() < deadline, "line 1 was not fetched while stdin stayed open"
            assert process.poll() is None
            time.sleep(0.05)  # wait for the condition, not for a time
        _, stderr = process.communicate(f"{server_thread}/items/2\n".encode(), timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert [r["line"] for r in records(output.read_bytes())] == [1, 2]


def test_a_fifo_input_is_read_once_and_not_waited_on(server_thread: str, tmp_path: Path) -> None:
    """-i FIFO: the command does not open it early (which would swallow the
    writer's data), and reads it in a thread."""
    fifo = tmp_path / "urls"
    os.mkfifo(fifo)
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [*FANOUT, "fetch", "-i", str(fifo), "-o", str(output), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with fifo.open("w") as stream:  # waits until the command opens it
            stream.write(f"{server_thread}/items/1\n{server_thread}/items/2\n")
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert sorted(int(str(r["line"])) for r in records(output.read_bytes())) == [1, 2]


@pytest.mark.parametrize("closed", [0, 1])
def test_a_closed_standard_stream_is_no_crash(server_thread: str, closed: int) -> None:
    """Started with stdin or stdout closed (as some daemons start children), the
    first socket would take that number, and libuv aborts on closing it."""
    command = [*FANOUT, "fetch", f"{server_thread}/items/1", "-i", "-"]
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {closed}>&-', "sh", *command],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    if closed == 0:
        assert [r["ok"] for r in records(done.stdout)] == [True]


def test_every_command_has_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name, command in cli.commands.items():
        assert command.help, name
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.name}"


def test_module_entry_point_and_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert b"fanout" in done.stdout


def test_debug_progress_and_no_dedupe(server_thread: str) -> None:
    url = f"{server_thread}/items/9"
    done = run("--debug", "fetch", url, url, "--no-dedupe", "--progress")
    assert done.returncode == 0
    assert [r["duplicate_of"] for r in records(done.stdout)] == [None, None]  # fetched twice
    stderr = done.stderr.decode()
    assert "DEBUG fanout:" in stderr
    assert "attempt 1: 200" in stderr
    assert "2/2" in stderr  # the progress bar, forced although stderr is a pipe
