"""The endpoints that misbehave on purpose: errors, stalls, resets, redirects,
large bodies and compression bombs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from functools import lru_cache

from aiohttp import web

from fanout.demo.endpoint import _FLAKY, _STOP, _header_value, _int, _json, _pause, _seconds

MAX_BYTES = 100 * 1024 * 1024
MAX_BOMB = 16 * 1024**3
ZERO_BLOCK = 1024 * 1024


# A gzip member by hand (RFC 1952): header, raw deflate, CRC-32 and size. A full
# flush makes the deflate of each zero block byte-aligned and independent, so one
# compressed block repeats for the whole body: no N bytes in memory, no N bytes
# compressed, and the first bytes go out at once.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


@lru_cache(maxsize=16)
def _deflated_zeros(n: int, *, final: bool) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(n)) + compressor.flush(
        zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH
    )


@lru_cache(maxsize=16)
def _crc32_zeros(size: int) -> int:
    whole, rest = divmod(size, ZERO_BLOCK)
    block, crc = bytes(ZERO_BLOCK), 0
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:rest], crc)


async def _status(request: web.Request) -> web.Response:
    code = _int(request, "code", 200, 200, 599)
    return _json({"status": code}, status=code)


async def _retry_after(request: web.Request) -> web.Response:
    value = _header_value(request.match_info["value"])
    return web.Response(status=429, text="slow down\n", headers={"Retry-After": value})


async def _flaky(request: web.Request) -> web.Response:
    failures = _int(request, "n", 1, 0, 10**6)
    key = request.query.get("key", "")
    counter = request.app[_FLAKY]
    counter[key] += 1
    if counter[key] <= failures:
        return _json({"error": "try again", "attempt": counter[key]}, status=503)
    return _json({"ok": True, "attempt": counter[key]})


async def _slow(request: web.Request) -> web.Response:
    if await _pause(request, _seconds(request, "delay", 1.0)):
        return _json({"error": "shutting down"}, status=503)
    return web.Response(text="slow\n")


async def _hang(request: web.Request) -> web.Response:
    await request.app[_STOP].wait()
    return _json({"error": "shutting down"}, status=503)


async def _stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    response.force_close()
    await response.prepare(request)
    await response.write(b"0123456789")
    await request.app[_STOP].wait()
    return response


async def _drip(request: web.Request) -> web.StreamResponse:
    interval = _seconds(request, "interval", 1.0)
    count = _int(request, "count", 10, 0, 100_000)
    response = web.StreamResponse(headers={"Content-Length": str(count)})
    response.force_close()  # a drip cut short by shutdown must not be reused
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the client hung up: its choice, no error
        for _ in range(count):
            if await _pause(request, interval):
                break
            await response.write(b".")
    return response


def _transport(request: web.Request) -> asyncio.Transport:
    transport = request.transport
    if transport is None:
        raise web.HTTPInternalServerError(text="the connection is already gone\n")
    return transport


async def _short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    response.force_close()
    await response.prepare(request)
    await response.write(b"0123456789")
    _transport(request).close()  # after the buffered bytes are flushed
    return response


async def _reset(request: web.Request) -> web.StreamResponse:
    transport = _transport(request)
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST, not FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return web.Response()


async def _redirect(request: web.Request) -> web.Response:
    n = _int(request, "n", 1, 0, 1000)
    if n == 0:
        return web.Response(text="arrived\n")
    target = request.rel_url.with_path(f"/redirect/{n - 1}").with_query(request.query)
    if request.query.get("absolute"):
        target = request.url.join(target)
    raise web.HTTPFound(target)


async def _redirect_to(request: web.Request) -> web.Response:
    location = _header_value(request.query.get("url", "/"))
    status = _int(request, "status", 302, 300, 399)
    await _pause(request, _seconds(request, "delay", 0.0))
    return web.Response(status=status, headers={"Location": location})


async def _bytes(request: web.Request) -> web.StreamResponse:
    n = min(_int(request, "n", 0, 0, 2**63), MAX_BYTES)
    response = web.StreamResponse(headers={"Content-Length": str(n)})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    pattern = bytes(range(256)) * 256  # 64 KiB, so every chunk starts at byte 0
    with contextlib.suppress(ConnectionError):
        for start in range(0, n, len(pattern)):
            await response.write(pattern[: n - start])
    return response


async def _gzip_bomb(request: web.Request) -> web.StreamResponse:
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    whole, rest = divmod(size, ZERO_BLOCK)
    block = _deflated_zeros(ZERO_BLOCK, final=False)
    tail = _deflated_zeros(rest, final=True)
    length = len(_GZIP_HEADER) + whole * len(block) + len(tail) + 8
    response = web.StreamResponse(
        headers={"Content-Encoding": "gzip", "Content-Length": str(length)}
    )
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(_GZIP_HEADER)
        for _ in range(whole):
            await response.write(block)
        await response.write(tail)
        crc = await asyncio.to_thread(_crc32_zeros, size)
        await response.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return response


# A zstd frame by hand (RFC 8878): the magic number, a descriptor with no content
# size and no checksum, a 128 KiB window, then RLE blocks of 128 KiB of zeros, 4
# bytes each (a block header and the byte repeated): nothing is compressed.
_ZSTD_HEADER = b"\x28\xb5\x2f\xfd\x00\x38"
_ZSTD_BLOCK = 128 * 1024


def _zstd_zeros(size: int, *, last: bool) -> bytes:
    """An RLE block of ``size`` zero bytes (a raw empty block when ``size`` is 0)."""
    kind = 1 if size else 0
    header = ((size << 3) | (kind << 1) | int(last)).to_bytes(3, "little")
    return header + (b"\x00" if size else b"")


async def _zstd_bomb(request: web.Request) -> web.StreamResponse:
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    whole, rest = divmod(size, _ZSTD_BLOCK)
    response = web.StreamResponse(headers={"Content-Encoding": "zstd"})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    block = _zstd_zeros(_ZSTD_BLOCK, last=False)
    with contextlib.suppress(ConnectionError):
        await response.write(_ZSTD_HEADER)
        for start in range(0, whole, 1024):  # 4 KiB a write
            await response.write(block * min(1024, whole - start))
        await response.write(_zstd_zeros(rest, last=True))
    return response


async def _br_bomb(request: web.Request) -> web.StreamResponse:
    # brotli has no block to repeat by hand: a fast compressor streams the zeros
    # (about 0.2 s of CPU per GiB, 300 KiB of output).
    try:
        import brotlicffi as brotli  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        import brotli
    size = _int(request, "size", 1024**3, 0, MAX_BOMB)
    response = web.StreamResponse(headers={"Content-Encoding": "br"})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    compressor = brotli.Compressor(quality=1)
    process = getattr(compressor, "process", None) or compressor.compress
    block = bytes(ZERO_BLOCK)
    with contextlib.suppress(ConnectionError):
        for start in range(0, size, ZERO_BLOCK):
            await response.write(process(block[: size - start]) + compressor.flush())
        await response.write(compressor.finish())
    return response


async def _json_bad(request: web.Request) -> web.Response:
    return web.Response(text="{this is not json", content_type="application/json")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return _json(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {str(name): value for name, value in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )
