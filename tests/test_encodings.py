"""Content encodings: gzip, deflate, br and zstd bodies from a loopback aiohttp
server are decoded, hashed and counted against max_bytes as decoded; a bomb in
any of them ends as too_large without inflating whole; a corrupt one is a
protocol record and the run goes on."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import sys
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import brotli
import pytest
from aiohttp import web

from fanout import Caps, ErrorKind, Fetcher, RetryPolicy, Timeouts
from fanout.demo import DemoServer
from fanout.demo.data import page_html
from tests.attack_checks import invoke, read_records
from tests.background import in_thread

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = pytest.mark.usefixtures("transport")

NO_RETRY = RetryPolicy(attempts=1)
DEADLINES = Timeouts(connect=10, read=10, total=30)
MIB = 1024 * 1024

# About 200 KB of varied HTML: more than one piece of each decoder's output.
PAYLOAD = b"".join(page_html(n) for n in range(700))

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}
CORRUPT = {
    # the stream's magic number, then nothing that decodes
    "br": b"\x8b\x7f\x00not brotli at all",
    "zstd": b"\x28\xb5\x2f\xfdnot zstd at all",
}


async def _encoded(request: web.Request) -> web.StreamResponse:
    """PAYLOAD in the encoding the path names; with ``?chunked=1`` in chunks of
    unknown total length, else with a Content-Length."""
    encoding = request.match_info["encoding"]
    body = ENCODERS[encoding](PAYLOAD)
    if request.query.get("chunked"):
        response = web.StreamResponse(headers={"Content-Encoding": encoding})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 4096):
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response
    return web.Response(body=body, headers={"Content-Encoding": encoding})


async def _corrupt(request: web.Request) -> web.Response:
    encoding = request.match_info["encoding"]
    return web.Response(body=CORRUPT[encoding], headers={"Content-Encoding": encoding})


async def _accept_encoding(request: web.Request) -> web.Response:
    return web.Response(text=request.headers.get("Accept-Encoding", ""))


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 serving encoded and corrupt bodies: its base URL."""
    app = web.Application()
    app.router.add_get("/encoded/{encoding}", _encoded)
    app.router.add_get("/corrupt/{encoding}", _corrupt)
    app.router.add_get("/accept-encoding", _accept_encoding)
    app.router.add_get("/ok", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def _no_zstd_on_curl(request: pytest.FixtureRequest, transport: str) -> None:
    """The pycurl wheel's libcurl has no zstd decoder (and does not ask for zstd)."""
    callspec = getattr(request.node, "callspec", None)
    if transport == "curl" and callspec is not None and callspec.params.get("encoding") == "zstd":
        pytest.skip("libcurl without zstd")


@pytest.fixture
async def base() -> AsyncIterator[str]:
    """:func:`serving` on the test's loop."""
    async with serving() as url:
        yield url


async def test_accept_encoding_names_every_encoding_fanout_decodes(
    base: str, transport: str
) -> None:
    async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES) as fetcher:
        (result,) = await fetcher.gather([f"{base}/accept-encoding"])
    assert result.ok, result.error
    assert result.body is not None
    advertised = {token.strip() for token in result.body.decode().split(",")}
    zstd = {"zstd"} if transport == "aiohttp" else set()
    assert advertised == {"gzip", "deflate", "br", *zstd}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("encoding", sorted(ENCODERS))
async def test_a_body_is_decoded_and_hashed_as_decoded(
    base: str, encoding: str, chunked: bool
) -> None:
    url = f"{base}/encoded/{encoding}" + ("?chunked=1" if chunked else "")
    async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES) as fetcher:
        (kept,) = await fetcher.gather([url])
    async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES, keep_body=False) as fetcher:
        (hashed,) = await fetcher.gather([url])
    assert kept.ok, kept.error
    assert kept.body == PAYLOAD
    assert hashed.ok, hashed.error
    assert hashed.body is None
    assert (hashed.size, hashed.sha256) == (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_max_bytes_counts_decoded_bytes(server: DemoServer, encoding: str) -> None:
    cap = MIB
    urls = [f"{server.url}/{encoding}-bomb?size={size}" for size in (cap, cap + 1)]
    caps = Caps(max_bytes=cap)
    async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES, caps=caps, keep_body=False) as fetcher:
        at_cap, over = await fetcher.gather(urls)
    assert at_cap.ok, at_cap.error
    assert (at_cap.size, at_cap.sha256) == (cap, hashlib.sha256(bytes(cap)).hexdigest())
    assert over.error is not None
    assert over.error.kind is ErrorKind.TOO_LARGE, over.error
    assert "decoded" in over.error.message


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_a_bomb_stops_at_max_bytes_without_inflating_whole(
    server: DemoServer, encoding: str
) -> None:
    # 256 MiB of zeros, cut at 1 MiB: the allocations of the whole fetch, server
    # included, stay a small multiple of the cap.
    cap = MIB
    caps = Caps(max_bytes=cap)
    url = f"{server.url}/{encoding}-bomb?size={256 * MIB}"
    tracemalloc.start()
    try:
        async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES, caps=caps) as fetcher:
            (bomb,) = await fetcher.gather([url])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bomb.error is not None
    assert bomb.error.kind is ErrorKind.TOO_LARGE, bomb.error
    assert bomb.body is None
    assert peak < 16 * cap, f"{peak / cap:.1f} x max_bytes allocated"


@pytest.mark.parametrize("encoding", sorted(CORRUPT))
async def test_a_corrupt_body_is_a_protocol_error_and_the_run_goes_on(
    base: str, encoding: str
) -> None:
    urls = [f"{base}/corrupt/{encoding}", f"{base}/ok"]
    async with Fetcher(retry=NO_RETRY, timeouts=DEADLINES) as fetcher:
        corrupt, fine = await fetcher.gather(urls)
    assert corrupt.error is not None
    assert corrupt.error.kind is ErrorKind.PROTOCOL
    expected = f"corrupt body: not valid {encoding} data (Content-Encoding: {encoding})"
    assert corrupt.error.message == expected
    assert fine.ok, fine.error


@pytest.mark.parametrize("encoding", sorted(CORRUPT))
def test_the_command_writes_a_record_for_each_body_and_goes_on(
    server_thread: str, tmp_path: Path, encoding: str
) -> None:
    # Both servers in threads: the command runs its own event loop.
    out = tmp_path / "out.jsonl"
    with in_thread(serving) as base:
        urls = [
            f"{base}/corrupt/{encoding}",
            f"{base}/encoded/{encoding}?chunked=1",
            f"{server_thread}/{encoding}-bomb?size={2 * MIB}",
            f"{base}/ok",
        ]
        args = ["fetch", *urls, "-o", str(out), "--ordered", "--retries", "0"]
        result = invoke([*args, "--max-bytes", str(MIB), "-q"])
    assert result.exit_code == 1
    corrupt, encoded, bomb, fine = read_records(out)
    assert corrupt["error"]["kind"] == "protocol"
    assert corrupt["error"]["message"].startswith(f"corrupt body: not valid {encoding} data")
    assert (encoded["ok"], encoded["bytes"]) == (True, len(PAYLOAD))
    assert encoded["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert bomb["error"]["kind"] == "too_large"
    assert fine["ok"] is True
