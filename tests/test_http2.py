"""HTTP/2 on the curl transport (``http2=True``, ``--http2``), against hypercorn
on loopback: h2c by prior knowledge and https by ALPN, a host's requests as
streams on one connection, ``per_host`` counting streams, and the engine's
rules kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fanout import (
    Caps,
    ConfigError,
    ErrorKind,
    Fetcher,
    FetcherConfig,
    Limits,
    Request,
    RetryPolicy,
    Timeouts,
)
from fanout.cli import main
from fanout.demo import DemoServer
from tests.tls_server import TLSFiles

pytest.importorskip("pycurl")
pytest.importorskip("hypercorn")

from tests.h2_server import H2App, h2_server

ONCE = RetryPolicy(attempts=1)
# generous: the machine may be busy, and nothing here waits for a deadline
TIMEOUTS = Timeouts(total=30.0)


@pytest.fixture(params=["h2c", "https"])
async def served(
    request: pytest.FixtureRequest, tls_files: TLSFiles, tmp_path: Path
) -> AsyncIterator[tuple[H2App, str, TLSFiles | None]]:
    """The app, its base URL and the TLS files (https) or None (h2c)."""
    app = H2App()
    tls = tls_files if request.param == "https" else None
    async with h2_server(app, tls=tls, directory=tmp_path) as base:
        yield app, base, tls


def _fetcher(
    tls: TLSFiles | None, limits: Limits | None = None, caps: Caps | None = None
) -> Fetcher:
    return Fetcher(
        transport="curl",
        http2=True,
        cacert=None if tls is None else tls.cacert,
        retry=ONCE,
        timeouts=TIMEOUTS,
        limits=limits,
        caps=caps,
    )


async def test_a_hosts_requests_are_streams_on_one_connection(
    served: tuple[H2App, str, TLSFiles | None],
) -> None:
    app, base, tls = served
    n = 8  # each answered only once all 8 are in flight: they are concurrent
    async with _fetcher(tls, limits=Limits(concurrency=n, per_host=n)) as fetcher:
        results = await fetcher.gather([f"{base}/hold?n={n}&i={i}" for i in range(n)])
    assert [(r.status, r.error) for r in results] == [(200, None)] * n
    assert app.peak == n
    assert len(app.connections) == 1
    assert app.versions == ["2"] * n


async def test_per_host_counts_streams(served: tuple[H2App, str, TLSFiles | None]) -> None:
    app, base, tls = served
    # answered in batches of 4: a fifth stream in flight would show in the peak
    async with _fetcher(tls, limits=Limits(concurrency=12, per_host=4)) as fetcher:
        results = await fetcher.gather([f"{base}/hold?n=4&i={i}" for i in range(12)])
    assert [(r.status, r.error) for r in results] == [(200, None)] * 12
    assert app.peak == 4
    assert len(app.connections) == 1


async def test_the_engines_rules_hold_over_http2(
    served: tuple[H2App, str, TLSFiles | None],
) -> None:
    app, base, tls = served
    async with _fetcher(tls, caps=Caps(max_bytes=1000)) as fetcher:
        big, missing, moved = await fetcher.gather(
            [f"{base}/bytes?n=5000", f"{base}/status/404", f"{base}/to?url={base}/bytes?n=10"]
        )
    assert big.error is not None
    assert big.error.kind is ErrorKind.TOO_LARGE
    assert missing.status == 404
    assert missing.error is not None
    assert missing.error.kind is ErrorKind.HTTP_STATUS
    assert missing.error.message == "HTTP 404"  # HTTP/2 has no reason phrase
    assert moved.status == 200, moved.error
    assert moved.body == b"x" * 10
    assert moved.final_url == f"{base}/bytes?n=10"  # followed by the engine
    assert set(app.versions) == {"2"}


async def test_a_post_never_rides_a_connection_already_in_use(
    served: tuple[H2App, str, TLSFiles | None],
) -> None:
    app, base, tls = served
    async with _fetcher(tls) as fetcher:
        [first] = await fetcher.gather([f"{base}/"])
        [posted] = await fetcher.gather([Request(f"{base}/", method="POST", body=b"once")])
        [after] = await fetcher.gather([f"{base}/"])
    assert (first.status, posted.status, after.status) == (200, 200, 200)
    [(_, get_client), (post, post_client), _] = app.methods
    assert post == "POST"
    # a fresh connection: libcurl never resends a request it sent on it
    assert post_client != get_client
    assert app.versions == ["2"] * 3


async def test_a_read_deadline_resets_the_stream_and_keeps_the_connection(
    served: tuple[H2App, str, TLSFiles | None],
) -> None:
    app, base, tls = served
    cacert = None if tls is None else tls.cacert
    timeouts = Timeouts(read=0.5, total=30.0)
    async with Fetcher(
        transport="curl", http2=True, cacert=cacert, retry=ONCE, timeouts=timeouts
    ) as fetcher:
        [held] = await fetcher.gather([f"{base}/hold?n=99"])  # never answered
        [after] = await fetcher.gather([f"{base}/"])
        transport: Any = fetcher._transport
        counts = transport.counts()
    assert held.error is not None
    assert held.error.kind is ErrorKind.TIMEOUT
    assert held.error.message == "read deadline: no data for 0.5s"
    assert after.status == 200, after.error
    # one stream reset, not the connection the host's other streams share
    assert len(app.connections) == 1
    assert (counts["handles"], counts["gap_timers"]) == (0, 0)


async def test_cleartext_http2_to_an_http1_server_is_a_protocol_failure(
    server: DemoServer,
) -> None:
    async with Fetcher(transport="curl", http2=True, retry=ONCE, timeouts=TIMEOUTS) as fetcher:
        [result] = await fetcher.gather([f"{server.url}/users"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROTOCOL
    assert result.error.message.startswith("HTTP/2: ")
    assert "prior knowledge" in result.error.message


def test_http2_needs_the_curl_transport(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FANOUT_TRANSPORT", raising=False)
    with pytest.raises(ConfigError, match="--http2 needs --transport curl"):
        FetcherConfig(http2=True)
    with pytest.raises(ConfigError, match="--http2 needs --transport curl"):
        Fetcher(transport="aiohttp", http2=True)
    with pytest.raises(SystemExit) as exited:
        main(["fetch", "http://127.0.0.1:9/", "--http2"])
    captured = capsys.readouterr()
    assert exited.value.code == 2
    [line] = captured.err.splitlines()
    assert line.startswith("fanout: error: ")
    assert "--http2 needs --transport curl" in line
    assert captured.out == ""
