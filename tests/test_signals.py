"""SIGTERM and SIGHUP end a run as Ctrl-C does: what was fetched is written, the
summary says which signal it was, the status is 128 + its number, and a resumed
journaled run gives exact output. Real processes, real signals, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.cli.exit_status import for_signal
from fanout.demo import ServerThread
from fanout.runtime import Interrupted, interrupting_signal, run

FANOUT = [sys.executable, "-m", "fanout"]
N_URLS = 3000
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ServerThread]:
    """The demo server with some latency: at -c 16 a run of N_URLS lasts seconds."""
    with ServerThread(latency=0.02) as running:
        yield running


_started: list[subprocess.Popen[bytes]] = []


def _popen(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, and the process is killed after the test if still running."""
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


def _wait_for(
    condition: Callable[[], bool], process: subprocess.Popen[bytes], limit: float = 60.0
) -> None:
    """Wait until ``condition()`` holds (a condition, not a time); fail if the
    process ended first or the limit passed."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, "the run ended before it could be signalled"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _records(path: Path) -> list[dict[str, object]]:
    """Every line of a JSONL file, each a complete record (the file ends with one)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is cut"
    return [json.loads(line) for line in data.splitlines()]


def _write_urls(workdir: Path, base: str, run_id: str) -> list[str]:
    # a query unique to the test, so that counts on the shared server are its own
    urls = [f"{base}/pages/{i}?run={run_id}" for i in range(N_URLS)]
    (workdir / "urls.txt").write_text("\n".join(urls) + "\n")
    return urls


FETCH = ["fetch", "-i", "urls.txt", "-o", "out.jsonl", "-c", "16", "--per-host", "16"]


def _fetch(workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _popen(
        [*FANOUT, *FETCH, *extra], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _summary_count(stderr: bytes) -> int:
    """The number of inputs the summary reports."""
    found = re.search(rb"^([\d,]+) inputs in ", stderr, re.MULTILINE)
    assert found is not None, stderr
    return int(found.group(1).replace(b",", b""))


def _path_of(url: str, base: str) -> str:
    return url.removeprefix(base)


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_run_writes_what_was_fetched_and_resume_is_exact(
    tmp_path: Path, slow_server: ServerThread, signum: int
) -> None:
    urls = _write_urls(tmp_path, slow_server.url, f"journal-{signum}")
    output = tmp_path / "out.jsonl"
    process = _fetch(tmp_path, "--journal", "run.db")
    _wait_for(lambda: _lines(output) >= 300, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    name = signal.Signals(signum).name.encode()

    assert process.returncode == for_signal(signum), stderr
    assert b"Traceback" not in stderr
    assert b"interrupted by " + name + b": every result fetched so far was written" in stderr
    first = _records(output)
    assert len(first) == _summary_count(stderr)  # every result counted was written
    assert len(first) < N_URLS  # the run was cut short

    again = _fetch(tmp_path, "--journal", "run.db")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    keys = [str(record["url"]) for record in _records(output)]
    assert sorted(keys) == sorted(urls)  # exactly one line per key
    counts = [slow_server.stats.count(_path_of(url, slow_server.url)) for url in urls]
    assert min(counts) == 1
    assert max(counts) <= 2  # only what was in flight at the signal is fetched again


@pytest.mark.slow
def test_a_second_signal_while_stopping_changes_nothing(
    tmp_path: Path, slow_server: ServerThread
) -> None:
    """SIGTERM right after Ctrl-C neither kills the run nor changes its status:
    the writes finish and the next run is exact. Which of the two is handled
    first is the kernel's choice (each may land in another of the process's
    threads), so the status names one of them and the message the same one."""
    urls = _write_urls(tmp_path, slow_server.url, "twice")
    output = tmp_path / "out.jsonl"
    process = _fetch(tmp_path, "--journal", "run.db")
    _wait_for(lambda: _lines(output) >= 300, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    first = {for_signal(signum): signum for signum in (signal.SIGINT, signal.SIGTERM)}
    assert process.returncode in first, stderr
    name = signal.Signals(first[process.returncode]).name.encode()
    assert stderr.count(b"interrupted by ") == 1, stderr
    assert b"interrupted by " + name in stderr
    assert len(_records(output)) == _summary_count(stderr)

    again = _fetch(tmp_path, "--journal", "run.db")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert sorted(str(record["url"]) for record in _records(output)) == sorted(urls)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_without_a_journal_writes_complete_records_and_the_summary(
    tmp_path: Path, slow_server: ServerThread, signum: int
) -> None:
    _write_urls(tmp_path, slow_server.url, f"plain-{signum}")
    output = tmp_path / "out.jsonl"
    process = _fetch(tmp_path)
    _wait_for(lambda: _lines(output) >= 200, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == for_signal(signum), stderr
    assert b"Traceback" not in stderr
    assert b"interrupted by " + signal.Signals(signum).name.encode() in stderr
    records = _records(output)
    assert len(records) == _summary_count(stderr)
    assert len(records) < N_URLS
    assert all(record["ok"] for record in records)


def _fanout_on_a_terminal(workdir: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """``fanout ARGS`` in a session of its own whose controlling terminal is a new
    pseudo-terminal (its stdin and stderr); returns the process and the
    terminal's master end, non-blocking. Closing the master hangs the terminal up."""
    master, slave = os.openpty()
    launcher = textwrap.dedent("""
        import fcntl, os, sys, termios
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.execv(sys.executable, [sys.executable, "-m", "fanout", *sys.argv[1:]])
    """)
    try:
        process = _popen(
            [sys.executable, "-c", launcher, *args],
            cwd=workdir,
            stdin=slave,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
    finally:
        os.close(slave)
    flags = fcntl.fcntl(master, fcntl.F_GETFL)
    fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return process, master


def _drain(master: int) -> bool:
    """Read what the terminal shows, so its buffer never fills; always False."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(master, 65536):
            pass
    return False


@pytest.mark.slow
def test_a_terminal_that_closes_ends_the_run_as_sighup(
    tmp_path: Path, slow_server: ServerThread
) -> None:
    """A closed SSH session: the kernel sends SIGHUP and the terminal is gone, so
    the progress bar and the summary cannot be shown. The run still writes what
    was fetched, closes the journal and exits 129; the next run is exact."""
    urls = _write_urls(tmp_path, slow_server.url, "terminal")
    output = tmp_path / "out.jsonl"
    process, master = _fanout_on_a_terminal(tmp_path, [*FETCH, "--journal", "run.db"])
    try:
        _wait_for(lambda: _drain(master) or _lines(output) >= 300, process)
    finally:
        os.close(master)  # the hang-up
    process.communicate(timeout=60)
    assert process.returncode == for_signal(signal.SIGHUP)
    first = _records(output)
    assert len(first) < N_URLS

    again = _fetch(tmp_path, "--journal", "run.db")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert sorted(str(record["url"]) for record in _records(output)) == sorted(urls)


def test_aggregate_stops_on_sigterm_with_143(slow_server: ServerThread) -> None:
    base = slow_server.url
    process = _popen(
        [*FANOUT, "aggregate", f"{base}/hang?agg={{1..20}}", "-f", "x", "-c", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: slow_server.stats.count("/hang?agg=1") == 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert b"Traceback" not in stderr
    assert b"interrupted by SIGTERM" in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_on_a_signal_with_its_status(signum: int) -> None:
    process = _popen(
        [*FANOUT, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert b"listening on http://127.0.0.1:" in process.stdout.readline()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == for_signal(signum), stderr
    assert b"Traceback" not in stderr
    assert b"interrupted by " + signal.Signals(signum).name.encode() in stderr


def test_demo_stops_on_sigterm_with_the_summary(tmp_path: Path) -> None:
    process = _popen(
        [*FANOUT, "demo", "-n", "100000", "-q", "--out-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    output = tmp_path / "results.jsonl"
    _wait_for(lambda: _lines(output) >= 100, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert b"Traceback" not in stderr
    assert b"interrupted by SIGTERM" in stderr
    assert len(_records(output)) == _summary_count(stderr)


# A script calling fanout.fetch() inside a running event loop (as in an async
# framework, or a notebook: "notebook" gives SIGINT Python's own handler while
# the call runs, as Jupyter's kernel does): it blocks that loop while a worker
# thread fetches URLs that never answer, with no deadline.
_IN_A_LOOP = """
import asyncio, signal, sys, threading
import fanout
from fanout.policy import RetryPolicy, Timeouts

async def main():
    base, case = sys.argv[1], sys.argv[2]
    if case.startswith("notebook"):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    urls = [f"{base}/hang?case={case}&i={i}" for i in range(4)]
    timeouts = Timeouts(read=None, total=None)
    try:
        fanout.fetch(urls, retry=RetryPolicy(attempts=1), timeouts=timeouts)
        print("returned", flush=True)
    except KeyboardInterrupt as exc:
        threads = sorted(t.name for t in threading.enumerate())
        print("interrupted", type(exc).__name__, *threads, flush=True)
        raise

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("mode", "signum"),
    [("asyncio", signal.SIGINT), ("asyncio", signal.SIGTERM), ("notebook", signal.SIGINT)],
    ids=["asyncio-SIGINT", "asyncio-SIGTERM", "notebook-SIGINT"],
)
def test_fetch_inside_a_running_loop_is_interrupted_at_once(
    slow_server: ServerThread, mode: str, signum: int
) -> None:
    """The KeyboardInterrupt comes although the requests would hang for ever (it
    used to wait for them), and leaves no thread of fanout's behind."""
    case = f"{mode}-{signal.Signals(signum).name}"
    process = _popen(
        [sys.executable, "-c", _IN_A_LOOP, slow_server.url, case],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    paths = [f"/hang?case={case}&i={i}" for i in range(4)]
    _wait_for(lambda: all(slow_server.stats.count(p) == 1 for p in paths), process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)  # it used to hang here
    expected = "KeyboardInterrupt" if signum == signal.SIGINT else "Interrupted"
    assert stdout.split() == [b"interrupted", expected.encode(), b"MainThread"], stderr


# ---------------------------------------------------------------- in process


def test_the_first_signal_cancels_and_a_second_does_not_cut_the_clean_up() -> None:
    steps: list[str] = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()  # until cancelled
        finally:
            os.kill(os.getpid(), signal.SIGHUP)  # while cleaning up: ignored
            await asyncio.sleep(0)
            steps.append("cleaned up")

    with pytest.raises(Interrupted) as raised:
        run(main())
    assert raised.value.signum == signal.SIGTERM
    assert raised.value.signame == "SIGTERM"
    assert interrupting_signal(raised.value) == signal.SIGTERM
    assert steps == ["cleaned up"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_sigint_raises_a_plain_keyboard_interrupt() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's own in this process (started ignoring it)")

    async def main() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(30)  # a bound: cancelled at once

    with pytest.raises(KeyboardInterrupt) as raised:
        run(main())
    assert type(raised.value) is KeyboardInterrupt  # uncaught, Python ends as on Ctrl-C
    assert interrupting_signal(raised.value) == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_after_main_finished_is_not_lost() -> None:
    async def main() -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before main can be cancelled
        return 1

    with pytest.raises(Interrupted):
        run(main())


@pytest.fixture
def sighup_handler() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, saved)


@pytest.mark.usefixtures("sighup_handler")
def test_an_ignored_signal_stays_ignored() -> None:
    """As under ``nohup``: SIGHUP does not stop the run."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    async def main() -> str:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0)
        return "finished"

    assert run(main()) == "finished"
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


@pytest.mark.usefixtures("sighup_handler")
def test_a_programs_own_handler_is_left_alone() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))

    async def main() -> str:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0)
        return "finished"

    assert run(main()) == "finished"
    assert seen == [signal.SIGHUP]
