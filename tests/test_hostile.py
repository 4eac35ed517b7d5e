"""No response can end a run: the real ``fanout`` command against a raw server's traps.

A raw asyncio TCP server on 127.0.0.1 answers each path with bytes chosen to
break a record: JSON nested past what can be written, charsets that are
codecs but not text encodings, header bytes that are not UTF-8, numbers past
the float range, a 400-digit Retry-After. Every run must end with one valid
JSON record per input and no traceback, for every --body mode, with and
without a journal (and its resume), and under ``fanout aggregate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("transport")

FANOUT = [sys.executable, "-m", "fanout"]


def response(
    body: bytes, headers: Mapping[str, bytes] | None = None, status: bytes = b"200 OK"
) -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), b"Connection: close"]
    head += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


JSON = b"application/json"
TEXT_BODY = "café +AGEAYgBj- \\N{x}".encode()
TRAPS: dict[str, bytes] = {
    "/ok": response(b'{"a": [1, 2]}', {"Content-Type": JSON}),
    "/deep/254": response(deep(254), {"Content-Type": JSON}),
    "/deep/255": response(deep(255), {"Content-Type": JSON}),
    "/deep/300": response(deep(300), {"Content-Type": JSON}),
    "/deep/1024": response(deep(1024), {"Content-Type": JSON}),
    "/deep/100000": response(deep(100_000), {"Content-Type": JSON}),
    "/deep-object": response(b'{"a":' * 500 + b"1" + b"}" * 500, {"Content-Type": JSON}),
    "/huge-number": response(b"[1e400, " + b"9" * 400 + b"]", {"Content-Type": JSON}),
    "/ctype-bytes": response(TEXT_BODY, {"Content-Type": b"text/html; charset=\xff\xfe\x80"}),
    "/header-bytes": response(TEXT_BODY, {"X-Trap": b"\x80\x81\xff", "Content-Type": b"\xe9"}),
    "/huge-ctype": response(TEXT_BODY, {"Content-Type": b"text/plain; charset=" + b"u" * 8000}),
    "/nul-bytes": response(b"\x00" * 1000, {"Content-Type": b"text/plain"}),
    "/long-strings": response(b'["' + b"x" * 100_000 + b'"]', {"Content-Type": JSON}),
    **{
        f"/charset/{label}": response(
            TEXT_BODY, {"Content-Type": b"text/plain; charset=" + label.encode()}
        )
        for label in [
            "zlib",
            "base64",
            "rot13",
            "bz2",
            "hex",
            "idna",
            "punycode",
            "undefined",
            "unicode_escape",
            "raw_unicode_escape",
            "utf-7",
            "utf-16",
            "utf-32",
            "no-such-codec",
        ]
    },
}
NOT_FOUND = response(b"no trap here", status=b"404 Not Found")


class TrapServer:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each path with its trap's bytes."""

    def __init__(self, routes: Mapping[str, bytes]) -> None:
        self.routes = routes
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TrapServer:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode("ascii", "replace")
            writer.write(self.routes.get(path, NOT_FOUND))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def traps() -> AsyncIterator[TrapServer]:
    async with TrapServer(TRAPS) as server:
        yield server


async def run(*args: str) -> tuple[int, bytes, bytes]:
    """Run ``fanout`` in a subprocess: its exit status, stdout and stderr (120 s at most)."""
    process = await asyncio.create_subprocess_exec(
        *FANOUT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err


def records(data: bytes) -> dict[str, dict[str, object]]:
    """The records of a JSONL output by URL path, each line checked to be one JSON object."""
    found: dict[str, dict[str, object]] = {}
    for line in data.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict)
        found[str(record["url"]).split("/", 3)[3]] = record
    return found


def check_run(
    status: int, err: bytes, output: bytes, paths: list[str]
) -> dict[str, dict[str, object]]:
    assert status in (0, 1), err
    assert b"Traceback" not in err, err
    found = records(output)
    assert sorted(found) == sorted(path.lstrip("/") for path in paths)
    assert len(output.splitlines()) == len(paths)
    return found


@pytest.mark.parametrize("mode", ["none", "text", "json", "base64"])
async def test_every_trap_under_every_body_mode_makes_one_record(
    traps: TrapServer, mode: str
) -> None:
    paths = list(TRAPS)
    status, out, err = await run(
        "fetch", "-q", "--retries", "0", "--body", mode, *(traps.url + p for p in paths)
    )
    found = check_run(status, err, out, paths)
    assert all(record["ok"] for record in found.values())
    if mode == "json":
        assert found["ok"]["body"] == {"a": [1, 2]}
        assert found["deep/254"]["body"] == json.loads(deep(254))
        for path in ["deep/255", "deep/300", "deep/1024", "deep/100000", "deep-object"]:
            assert found[path]["body"] is None, path  # too deep to write: null
        assert found["huge-number"]["body"] is None  # 1e400 is not JSON to orjson
    if mode == "text":
        for path, record in found.items():
            if path.startswith("charset/") and not path.startswith("charset/utf-"):
                assert record["body"] == TEXT_BODY.decode(), path
        assert found["nul-bytes"]["body"] == "\x00" * 1000
        assert found["header-bytes"]["content_type"] == "\ufffd"


@pytest.mark.parametrize("mode", ["text", "json"])
async def test_journaled_runs_and_their_resume_survive_every_trap(
    traps: TrapServer, mode: str, tmp_path: Path
) -> None:
    paths = list(TRAPS)
    urls = [traps.url + p for p in paths]
    output, journal = tmp_path / "out.jsonl", tmp_path / "run.db"
    args = ["fetch", "-q", "--retries", "0", "--body", mode, "-o", str(output)]
    status, _, err = await run(*args, "--journal", str(journal), *urls)
    check_run(status, err, output.read_bytes(), paths)
    first = output.read_bytes()
    status, _, err = await run(*args, "--journal", str(journal), *urls)  # the resume
    check_run(status, err, output.read_bytes(), paths)
    assert output.read_bytes() == first
    status, out, err = await run("export", "--journal", str(journal))
    check_run(status, err, out, paths)


async def test_a_400_digit_retry_after_is_a_record_not_a_crash() -> None:
    trap = response(b"busy", {"Retry-After": b"9" * 400}, status=b"503 Service Unavailable")
    async with TrapServer({"/busy": trap}) as server:
        status, out, err = await run("fetch", "-q", "--retries", "0", server.url + "/busy")
    found = check_run(status, err, out, ["/busy"])
    assert found["busy"]["status"] == 503
    assert found["busy"]["error"] == {
        "kind": "http_status",
        "message": "HTTP 503 Service Unavailable",
        "cause": None,
    }


async def test_aggregate_counts_every_trap(traps: TrapServer) -> None:
    urls = [traps.url + p for p in TRAPS]
    args = ["aggregate", "-q", "--retries", "0", "--format", "json", "--field", "n=@", *urls]
    status, out, err = await run(*args, "--field", "s=to_string(@)", "--group-by", "@")
    assert status in (0, 1), err
    assert b"Traceback" not in err, err
    report = json.loads(out)
    assert report["requests"]["total"] == len(urls)
    assert "internal" not in report["requests"]["failed"]
    assert report["bodies"]["json"] + report["bodies"]["not_json"] == len(urls)


async def test_aggregate_bounds_a_failed_id_list_message(traps: TrapServer) -> None:
    # JMESPath quotes the data it fails on: here a 100,000-character string.
    args = ["aggregate", "-q", "--format", "json", "--from", traps.url + "/long-strings"]
    status, out, err = await run(*args, "--select", "sum(@)", "--template", traps.url + "/{}")
    assert status == 1, err
    assert b"Traceback" not in err, err
    source = json.loads(out)["source"]
    assert source["error"].startswith("select: ")
    assert len(source["error"]) < 520
