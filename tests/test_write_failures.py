"""Write failures at their scope (issue 17): a body that cannot be saved is that
record's ``write`` error and the run goes on; an output or a journal that
cannot be written stops the run with one line and exit 1, nothing marked done
that was not written, and the same command resumes with exact output."""

from __future__ import annotations

import errno
import io
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from fanout.demo import ServerThread
from fanout.errors import SinkError, WriteError
from fanout.output.files import STAGING
from fanout.output.jsonl_writer import JsonlWriter
from fanout.output.line_output import LineOutput
from fanout.output.writer import WriterThread
from tests.durability import (
    assert_one_line,
    check_saved_files,
    error_kind,
    fanout,
    records,
    resize,
    tmpfs,
)


def _host_dir(base: str) -> str:
    return base.split("://", 1)[1].replace(":", "_")


def _keys(rows: list[dict[str, object]]) -> list[str]:
    return [str(row["key"]) for row in rows]


def _status(journal: Path) -> dict[str, object]:
    done = fanout("status", "--journal", str(journal), "--json")
    assert done.returncode == 0, done.stderr
    return cast(dict[str, object], json.loads(done.stdout))


# --- a body that cannot be saved ------------------------------------------------------------


def _blocked_out_dir(tmp_path: Path, base: str) -> tuple[Path, Path]:
    """An --out-dir where /items/* would be saved through a symlink that leads
    out of it, and /bytes/* where a file stands in for a directory."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    host = out / _host_dir(base)
    host.mkdir(parents=True)
    outside.mkdir()
    (host / "items").symlink_to(outside, target_is_directory=True)
    (host / "bytes").write_bytes(b"a file where a directory should be")
    return out, outside


def _mixed_urls(base: str) -> list[str]:
    return [
        url
        for i in range(1, 31)
        for url in (f"{base}/pages/{i}", f"{base}/items/{i}", f"{base}/bytes/{i}")
    ]


def _check_write_errors(rows: list[dict[str, object]], out: Path, outside: Path) -> None:
    assert len(rows) == 90
    for row in rows:
        url = str(row["url"])
        if "/pages/" in url:
            assert row["ok"] is True
            assert error_kind(row) is None
            assert Path(str(row["path"])).is_relative_to(out.resolve())
            continue
        assert row["ok"] is False
        assert row["status"] == 200
        assert error_kind(row) == "write"
        assert row["path"] is None
        message = str(row["error"]["message"])  # type: ignore[index]
        if "/items/" in url:
            assert "refusing to write" in message, message
            assert row["error"]["cause"] is None  # type: ignore[index]
            assert "outside" in message
            assert "/items/" in message
        else:
            assert "cannot write" in message, message
            assert "File exists" in message  # mkdir finds the file
            assert row["error"]["cause"] == "FileExistsError"  # type: ignore[index]
            assert "/bytes/" in message
    check_saved_files(rows)
    assert list(outside.iterdir()) == []
    assert not (out / STAGING).exists(), "temporaries (or their directory) left behind"


def test_a_body_that_cannot_be_saved_is_that_records_write_error(
    server_thread: str, tmp_path: Path
) -> None:
    out, outside = _blocked_out_dir(tmp_path, server_thread)
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(_mixed_urls(server_thread)) + "\n")
    done = fanout("fetch", "-i", str(urls), "--out-dir", str(out), "-q", "-c", "8")
    assert done.returncode == 1, done.stderr
    assert done.stderr == b""
    _check_write_errors(records(done.stdout), out, outside)


def test_write_errors_are_journaled_failures_that_retry_kinds_write_fetches_again(
    server_thread: str, tmp_path: Path
) -> None:
    out, outside = _blocked_out_dir(tmp_path, server_thread)
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(_mixed_urls(server_thread)) + "\n")
    output, journal = tmp_path / "out.jsonl", tmp_path / "run.db"
    command = ["fetch", "-i", str(urls), "-o", str(output), "--journal", str(journal)]
    command += ["--out-dir", str(out), "-q", "-c", "8"]
    done = fanout(*command)
    assert done.returncode == 1, done.stderr
    _check_write_errors(records(output.read_bytes()), out, outside)
    status = _status(journal)
    assert (status["done"], status["failed_by_kind"], status["pending"]) == (30, {"write": 60}, 0)

    host = out / _host_dir(server_thread)
    (host / "items").unlink()
    (host / "bytes").unlink()
    done = fanout(*command, "--retry-kinds", "write")
    assert done.returncode == 0, done.stderr
    rows = records(output.read_bytes())
    assert sorted(_keys(rows)) == sorted(_mixed_urls(server_thread))  # one line per key
    assert all(row["ok"] for row in rows)
    check_saved_files(rows)


def test_no_space_for_a_body_is_that_records_write_error(
    server_thread: str, tmp_path: Path
) -> None:
    urls = [f"{server_thread}/bytes/40000?n={i}" for i in range(24)]
    with tmpfs(tmp_path / "disk", "256k") as disk:
        done = fanout("fetch", *urls, "--out-dir", str(disk), "-q", "-c", "4")
        assert done.returncode == 1, done.stderr
        assert done.stderr == b""
        rows = records(done.stdout)
        assert sorted(_keys(rows)) == sorted(urls)
        saved = [row for row in rows if row["ok"]]
        full = [row for row in rows if not row["ok"]]
        assert saved, "nothing fitted"
        assert full, "everything fitted: the disk was not filled"
        for row in full:
            assert error_kind(row) == "write"
            assert "No space left on device" in str(row["error"]["message"])  # type: ignore[index]
        check_saved_files(rows)
        on_disk = sorted(str(p) for p in disk.rglob("*") if p.is_file())
        assert on_disk == sorted(str(row["path"]) for row in saved)  # no partial file, no .tmp


# --- an output or a journal that cannot be written ------------------------------------------


@pytest.fixture
def many_urls(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """2,000 URLs in a file, and the server that answers them."""
    with ServerThread() as server:
        urls = [f"{server.url}/pages/{i}" for i in range(2000)]
        path = tmp_path / "urls.txt"
        path.write_text("\n".join(urls) + "\n")
        yield path, urls


def _journal_done_keys(journal: Path) -> set[str]:
    with sqlite3.connect(journal) as db:
        return {key for (key,) in db.execute("SELECT key FROM entries WHERE state != 0")}


def test_a_full_disk_under_the_output_stops_the_run_and_the_resume_is_exact(
    many_urls: tuple[Path, list[str]], tmp_path: Path
) -> None:
    urls_file, urls = many_urls
    journal = tmp_path / "run.db"
    with tmpfs(tmp_path / "disk", "64k") as disk:
        output = disk / "out.jsonl"
        command = ["fetch", "-i", str(urls_file), "-o", str(output), "--journal", str(journal)]
        done = fanout(*command)  # not quiet: still one line
        assert done.returncode == 1
        assert_one_line(done.stderr, "fanout: error: cannot write", str(output), "No space left")
        written = records(output.read_bytes())  # every line whole
        assert 0 < len(written) < len(urls)
        # nothing marked done that was not written, nothing written that is not marked done
        assert set(_keys(written)) == _journal_done_keys(journal)

        resize(disk, "4m")
        done = fanout(*command, "-q")
        assert done.returncode == 0, done.stderr
        assert sorted(_keys(records(output.read_bytes()))) == sorted(urls)


def test_a_full_disk_under_the_journal_stops_the_run_and_the_resume_is_exact(
    many_urls: tuple[Path, list[str]], tmp_path: Path
) -> None:
    urls_file, urls = many_urls
    output = tmp_path / "out.jsonl"
    with tmpfs(tmp_path / "disk", "200k") as disk:
        journal = disk / "run.db"
        command = ["fetch", "-i", str(urls_file), "-o", str(output), "--journal", str(journal)]
        done = fanout(*command)
        assert done.returncode == 1
        assert_one_line(done.stderr, "fanout: error: journal", str(journal), "disk")
        written = records(output.read_bytes())
        assert len(written) < len(urls)
        assert set(_keys(written)) == _journal_done_keys(journal)

        resize(disk, "32m")
        done = fanout(*command, "-q")
        assert done.returncode == 0, done.stderr
        assert sorted(_keys(records(output.read_bytes()))) == sorted(urls)


@pytest.mark.parametrize("journaled", [False, True])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(
    server_thread: str, tmp_path: Path, journaled: bool
) -> None:
    extra = ["--journal", str(tmp_path / "run.db")] if journaled else []
    url = f"{server_thread}/items/1"
    done = fanout("fetch", url, "-o", "/dev/full", *extra)
    assert done.returncode == 1
    assert_one_line(done.stderr, "fanout: error: cannot write '/dev/full': No space left")
    with open("/dev/full", "wb") as full:
        done = fanout("fetch", url, *extra, stdout=full.fileno())
    assert done.returncode == 1
    assert_one_line(done.stderr, "fanout: error: cannot write standard output: No space left")


# --- the writers ----------------------------------------------------------------------------


class _FailingOnce(io.BytesIO):
    """A stream whose first write fails (a disk full for a moment)."""

    failed = False

    def writelines(self, lines: Iterable[bytes], /) -> None:  # type: ignore[override]
        if not self.failed:
            self.failed = True
            raise OSError(errno.ENOSPC, "No space left on device")
        super().writelines(lines)


def test_jsonl_writer_keeps_its_lines_until_they_are_written() -> None:
    stream = _FailingOnce()
    writer = JsonlWriter(stream, flush_every=100)
    with writer:
        writer.write({"n": 1})
        writer.write({"n": 2})
        with pytest.raises(SinkError, match="No space left"):
            writer.flush()
        writer.write({"n": 3})
    assert stream.getvalue() == b'{"n":1}\n{"n":2}\n{"n":3}\n'


class _Gate(io.RawIOBase):
    """An output whose writes wait until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.gate.wait(30)
        self.data += data
        return len(data)


async def test_the_writer_backlog_is_bounded_and_nothing_is_written_after_a_failure() -> None:
    gate = _Gate()
    writer: WriterThread[bytes] = WriterThread(
        LineOutput(cast(BinaryIO, gate), "'gate'").write,
        name="test",
        group=4,
        backlog=8,
        backlog_bytes=1 << 20,
    )
    for n in range(7):
        writer.put(b"%d\n" % n, 2)
    assert not writer.full
    writer.put(b"7\n", 2)
    assert writer.full  # the thread is held at the gate: the consumer must wait
    gate.gate.set()
    await writer.room()
    await writer.drain()
    assert bytes(gate.data) == b"".join(b"%d\n" % n for n in range(8))
    writer.put(b"x" * (2 << 20), 2 << 20)  # one entry past backlog_bytes goes alone
    await writer.room()
    await writer.close()


async def test_a_writer_failure_is_raised_once_and_stops_every_later_write() -> None:
    with open("/dev/full", "wb") as full:  # noqa: ASYNC230 (a device: never blocks)
        writer: WriterThread[bytes] = WriterThread(
            LineOutput(full, "'/dev/full'").write, name="test", group=4, backlog=8
        )
        writer.put(b"one\n", 4)
        with pytest.raises(WriteError, match="cannot write '/dev/full': No space left"):
            await writer.drain()
        assert writer.full
        assert writer.failed
        with pytest.raises(WriteError):
            await writer.room()
        await writer.close()  # raised already: not again
    called: list[list[bytes]] = []

    def write(lines: list[bytes]) -> None:
        called.append(lines)
        raise WriteError("cannot write 'x': I/O error")

    writer = WriterThread(write, name="test", group=4, backlog=8)
    writer.put(b"a\n", 2)
    with pytest.raises(WriteError):
        await writer.drain()
    writer.put(b"b\n", 2)
    with pytest.raises(WriteError, match="I/O error"):
        await writer.close()  # not raised since the last put: raised here
    assert called == [[b"a\n"]]  # "b" was never written


def test_a_file_is_cut_back_to_whole_lines_when_a_write_fails(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "16k") as disk:
        path = disk / "out.jsonl"
        with path.open("ab") as stream:
            output = LineOutput(stream, "'out'")
            output.write([b"x" * 100 + b"\n"] * 10)
            before = path.stat().st_size
            with pytest.raises(WriteError, match="No space left"):
                output.write([b"y" * 1000 + b"\n"] * 40)
        assert path.stat().st_size == before
        assert path.read_bytes().count(b"\n") == 10
