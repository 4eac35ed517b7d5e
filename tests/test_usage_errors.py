"""Bad options are usage errors: one line on stderr, exit status 2, nothing
fetched and nothing written.

Most cases run the ``fanout`` entry point in this process (the same code as
the console script, and no event loop starts on a usage error); the demo
server in its thread says whether anything was fetched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.cli import main
from fanout.demo import ServerThread
from fanout.journal import Journal

FANOUT = [sys.executable, "-m", "fanout"]


@pytest.fixture
def demo() -> Iterator[ServerThread]:
    """The demo server in a thread, with its statistics at hand."""
    with ServerThread() as running:
        yield running


def usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``fanout ARGS``; check it is a usage error and return its one line."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    assert exited.value.code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fanout: error: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*FANOUT, *args], capture_output=True, timeout=120, cwd=cwd, check=False)


def nothing_fetched(server: ServerThread) -> bool:
    return not server.stats.seen


def listing(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------ method, headers


@pytest.mark.parametrize("method", ["", "GE T", "GET\r\nX: y", "Ü", "a/b", "GET\x00"])
def test_a_method_that_is_no_token_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], demo: ServerThread, method: str
) -> None:
    line = usage_error(capsys, "fetch", "-X", method, f"{demo.url}/items/1")
    assert "--method" in line
    assert "method must be an HTTP token" in line
    assert "\r" not in line
    assert nothing_fetched(demo)


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("-H", "X-Token: a\x01b", "header 'X-Token' value holds a control character ('\\x01')"),
        ("-H", "X-Token: a\x1b[31mb", "control character ('\\x1b')"),
        ("-H", "X-Token: a\x7f", "control character ('\\x7f')"),
        ("-H", "X-Token: a\rInjected: 1", "control character ('\\r')"),
        ("-H", "X\x01Token: a", "header name 'X\\x01Token' is not an HTTP token"),
        ("-H", "X Token: a", "header name 'X Token' is not an HTTP token"),
        ("-H", "Tökén: a", "header name 'Tökén' is not an HTTP token"),
        ("-H", "X-Token", "expected 'Name: value'"),
        ("--user-agent", "bot\r\nX-Injected: 1", "User-Agent header value holds"),
        ("--user-agent", "bot\x01", "User-Agent header value holds"),
    ],
)
def test_a_header_http_cannot_carry_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    demo: ServerThread,
    command: str,
    option: str,
    value: str,
    expected: str,
) -> None:
    line = usage_error(capsys, command, option, value, f"{demo.url}/items/1", "-q")
    assert expected in line
    assert ("--header" if option == "-H" else option) in line
    assert nothing_fetched(demo)


@pytest.mark.usefixtures("transport")
def test_tabs_and_text_beyond_ascii_in_header_values_are_sent(server_thread: str) -> None:
    done = run(
        "fetch",
        f"{server_thread}/echo",
        "-H",
        "X-Tab:\ta\tb",
        "-H",
        "X-Name: Zoë",
        "--user-agent",
        "bot\t1.0",
        "--body",
        "json",
        "-q",
    )
    assert done.returncode == 0, done.stderr
    headers = json.loads(done.stdout)["body"]["headers"]
    assert headers["X-Tab"] == "a\tb"
    assert headers["User-Agent"] == "bot\t1.0"
    assert headers["X-Name"] == "Zoë"


# -------------------------------------------------------------------- files


def _files(tmp_path: Path) -> dict[str, Path]:
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:1/\n")
    jsonl = tmp_path / "requests.jsonl"
    jsonl.write_text('{"url": "http://127.0.0.1:1/"}\n')
    (tmp_path / "link.txt").symlink_to("urls.txt")
    os.link(urls, tmp_path / "hard.txt")
    return {"urls": urls, "jsonl": jsonl}


@pytest.mark.parametrize(
    "args",
    [
        ["-i", "urls.txt", "-o", "urls.txt"],
        ["-i", "urls.txt", "-o", "./urls.txt"],
        ["-i", "urls.txt", "-o", "link.txt"],  # a symbolic link to it
        ["-i", "urls.txt", "-o", "hard.txt"],  # a hard link to it
        ["-i", "urls.txt", "--journal", "urls.txt"],
        ["-i", "urls.txt", "--stats-json", "sub/../urls.txt"],
        ["--jsonl-input", "requests.jsonl", "-o", "requests.jsonl"],
        ["-i", "urls.txt", "--jsonl-input", "urls.txt"],
        ["-i", "urls.txt", "-o", "out.jsonl", "--stats-json", "out.jsonl"],
        ["-i", "urls.txt", "--journal", "run.db", "--stats-json", "./run.db"],
        ["-i", "urls.txt", "-o", "out.jsonl", "--out-dir", "out.jsonl"],
    ],
)
def test_one_file_named_twice_is_a_usage_error_and_nothing_is_touched(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
) -> None:
    _files(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    line = usage_error(capsys, "fetch", *args)
    assert "are the same file" in line
    assert listing(tmp_path) == before  # the input is whole, and nothing was created


def test_both_inputs_on_stdin_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, "fetch", "-i", "-", "--jsonl-input", "-")
    assert "only one input can read stdin" in line


def test_devices_may_be_named_twice(tmp_path: Path) -> None:
    """The check is for files: /dev/null (or one terminal as /dev/stdin and
    /dev/stdout) is no file to overwrite."""
    done = run("fetch", "-i", os.devnull, "-o", os.devnull, "--stats-json", os.devnull)
    assert done.returncode == 0, done.stderr


def test_export_over_its_own_journal_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "run.db"
    with Journal.open(journal, key_scheme="url"):
        pass
    before = journal.read_bytes()
    monkeypatch.chdir(tmp_path)
    line = usage_error(capsys, "export", "--journal", "run.db", "-o", "./run.db")
    assert "are the same file" in line
    assert journal.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--stats-json", "missing/stats.json"], "directory 'missing' does not exist"),
        (["--stats-json", "afile/stats.json"], "'afile' is not a directory"),
        (["-o", "missing/out.jsonl", "--journal", "run.db"], "directory 'missing' does not"),
        (["-o", "afile/out.jsonl", "--journal", "run.db"], "'afile' is not a directory"),
        (["--journal", "missing/run.db"], "directory 'missing' does not exist"),
        (["--out-dir", "afile/pages"], "'afile' is not a directory"),
        (["-o", ""], "the path is empty"),
        (["--stats-json", ""], "the path is empty"),
        (["--journal", ""], "the path is empty"),
        (["--out-dir", ""], "the path is empty"),
    ],
)
def test_an_output_that_cannot_be_written_is_found_before_the_run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    demo: ServerThread,
    args: list[str],
    expected: str,
) -> None:
    (tmp_path / "afile").write_text("a file, not a directory\n")
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    line = usage_error(capsys, "fetch", f"{demo.url}/items/1", "-q", *args)
    assert expected in line
    assert nothing_fetched(demo)
    assert listing(tmp_path) == before  # no journal, no output, no stats file


def test_demo_into_a_directory_that_cannot_be_made_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("a file, not a directory\n")
    monkeypatch.chdir(tmp_path)
    line = usage_error(capsys, "demo", "--out-dir", "afile/demo", "-n", "1", "-q")
    assert "'afile' is not a directory" in line
    assert listing(tmp_path) == {"afile": b"a file, not a directory\n"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_a_read_only_stats_file_is_found_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo: ServerThread
) -> None:
    stats = tmp_path / "stats.json"
    stats.write_text("{}")
    stats.chmod(0o444)
    line = usage_error(capsys, "fetch", f"{demo.url}/items/1", "--stats-json", str(stats))
    assert "not writable" in line
    assert nothing_fetched(demo)


# ------------------------------------------------------------------- serve


def test_serve_on_a_port_in_use_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run("serve", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"fanout: error: port {port} on 127.0.0.1 is in use"
    ]


# ------------------------------------------------------------------- --debug


def test_debug_after_the_command_works_like_before_it(server_thread: str) -> None:
    done = run("fetch", "--debug", f"{server_thread}/items/1", "-q")
    assert done.returncode == 0, done.stderr
    assert b"DEBUG fanout:" in done.stderr
    assert b"attempt 1: 200" in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fetch", "--debug"], "no input"),
        (["aggregate", "--debug"], "no input"),
        (["serve", "--debug", "--host", "10.1.2.3"], "loopback"),
        (["demo", "--debug", "-n", "0"], "'-n'"),
        (["status", "--debug", "--journal", "missing.db"], "does not exist"),
        (["export", "--debug", "--journal", "missing.db"], "does not exist"),
        (["bench", "--debug", "--latency", "0"], "--latency"),
    ],
)
def test_every_command_takes_debug_after_its_name(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    """The line is the command's own error, not "No such option: --debug"."""
    monkeypatch.chdir(tmp_path)
    line = usage_error(capsys, *args)
    assert expected in line
    assert "--debug" not in line


# ------------------------------------------------------------ --retry-failed


def test_retry_failed_is_a_flag_and_takes_no_url(tmp_path: Path, demo: ServerThread) -> None:
    """`--retry-failed URL` fetches the URL; the flag retries every failed kind."""
    base = demo.url
    urls = [f"{base}/status/404", f"{base}/flaky/1?key=r", f"{base}/items/1"]
    first = run("fetch", *urls, "--journal", "run.db", "--retries", "0", "-q", cwd=tmp_path)
    assert first.returncode == 1
    again = run("fetch", "--journal", "run.db", "--retry-failed", *urls, "-q", cwd=tmp_path)
    assert again.returncode == 1, again.stderr  # the 404 is still a 404
    stats = demo.stats
    assert stats.count("/status/404") == 2  # http_status, retried
    assert stats.count("/flaky/1?key=r") == 2  # http_status (a 503), retried
    assert stats.count("/items/1") == 1  # done, not fetched again
    status = run("status", "--journal", "run.db", "--json", cwd=tmp_path)
    counts = json.loads(status.stdout)
    assert (counts["done"], counts["failed"]) == (2, 1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--journal", "run.db", "--retry-failed", "timeout"], "--retry-kinds"),
        (["--journal", "run.db", "--retry-failed", "all", "-i", "urls.txt"], "--retry-kinds"),
        (["--journal", "run.db", "--retry-kinds", "timeout,bogus", "-i", "urls.txt"], "'bogus'"),
        (["--journal", "run.db", "--retry-kinds", "all", "-i", "urls.txt"], "'all'"),
        (["--journal", "run.db", "--retry-kinds", "", "-i", "urls.txt"], "unknown error kind"),
        (["--retry-kinds", "timeout", "-i", "urls.txt"], "--retry-kinds needs --journal"),
        (["--retry-failed", "-i", "urls.txt"], "--retry-failed needs --journal"),
    ],
)
def test_retry_options_that_make_no_sense_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:1/\n")
    monkeypatch.chdir(tmp_path)
    line = usage_error(capsys, "fetch", *args)
    assert expected in line
    assert not (tmp_path / "run.db").exists()


# ------------------------------------------------------ more careless input


def test_data_that_is_not_utf8_is_sent_as_given(server_thread: str) -> None:
    """Bytes of the command line that are not UTF-8 (Python hands them over
    as surrogates) are sent as they were given, not a traceback."""
    data = os.fsdecode(b"a\xffb")
    done = run("fetch", "-X", "POST", "--data", data, "--body", "json", f"{server_thread}/echo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["body"]["body"] == "a\ufffdb"  # the server got b"a\xffb"


@pytest.mark.parametrize(
    "args",
    [
        ["aggregate", "http://127.0.0.1:1/" + os.fsdecode(b"\xff"), "--format", "json"],
        ["aggregate", "--from", "http://127.0.0.1:1/" + os.fsdecode(b"\xff"), "--template", "{}"],
    ],
)
def test_aggregate_refuses_urls_that_are_not_utf8(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert "not valid UTF-8" in usage_error(capsys, *args)


def test_aggregate_refuses_an_empty_cursor_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(
        capsys, "aggregate", "http://127.0.0.1:1/", "--next", "next", "--cursor-param", ""
    )
    assert "--cursor-param" in line
    assert "the name is empty" in line


def test_bench_needs_a_latency(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--latency" in usage_error(capsys, "bench", "--latency", "0", "-n", "1")
