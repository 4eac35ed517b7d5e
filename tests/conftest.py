"""Real servers on loopback for every behaviour test: fanout's own demo server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from fanout.demo import DemoServer, ServerThread

if TYPE_CHECKING:
    from tests.redis_server import RedisServer
    from tests.tls_server import TLSFiles

# fanout goes through the proxies the environment names: the tests fetch from
# loopback, directly (tests/test_proxy.py sets them where it means to).
for _name in [n for n in os.environ if n.lower() in {"http_proxy", "https_proxy", "no_proxy"}]:
    del os.environ[_name]

# No per-example deadline: on a loaded 2-core CI machine a slow example is not a bug.
settings.register_profile("fanout", deadline=None)
settings.load_profile("fanout")


@pytest.fixture(params=["aiohttp", "curl"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each transport in turn, through FANOUT_TRANSPORT: every Fetcher made in
    the test (the CLI's in a subprocess too) runs on it unless told otherwise.
    A test marked ``aiohttp_only`` (an option the curl transport refuses) is
    skipped on curl."""
    name: str = request.param
    marker = request.node.get_closest_marker("aiohttp_only")
    if name == "curl" and marker is not None:
        pytest.skip(f"aiohttp only: {marker.args[0] if marker.args else 'refused on curl'}")
    monkeypatch.setenv("FANOUT_TRANSPORT", name)
    return name


@pytest.fixture
async def server() -> AsyncIterator[DemoServer]:
    """The demo server on 127.0.0.1, in the test's event loop."""
    async with DemoServer() as running:
        yield running


@pytest.fixture
async def servers() -> AsyncIterator[DemoServer]:
    """The demo server on three distinct hosts: 127.0.0.1, 127.0.0.2 and ::1."""
    async with DemoServer(hosts=["127.0.0.1", "127.0.0.2", "::1"]) as running:
        yield running


@pytest.fixture
def server_thread() -> Iterator[str]:
    """The demo server in a thread of its own, for sync code and subprocesses."""
    with ServerThread() as running:
        yield running.url


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A test CA (trustme), a server certificate for 127.0.0.1 and a client
    certificate, with their PEM files."""
    from tests.tls_server import make_tls_files  # trustme only for the tests that use it

    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free loopback port, no persistence
    (skipped without redis-server, failed under CI=true; see tests/redis_server.py)."""
    from tests.redis_server import running_redis

    with running_redis(tmp_path / "redis-data") as running:
        yield running


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Like :func:`redis_server`, with AOF fsynced on every write: it keeps its
    data through :meth:`RedisServer.restart` (a kill -9 and a start)."""
    from tests.redis_server import running_redis

    with running_redis(tmp_path / "redis-data", persist=True) as running:
        yield running


def _host_of(base: str) -> str:
    return base.split("://", 1)[1]


def peak_in_flight(server: DemoServer, base: str) -> int:
    """The most requests the server had in flight at once from ``base``'s host."""
    return server.stats.peak_in_flight(_host_of(base))


def arrivals(server: DemoServer, base: str, prefix: str) -> list[float]:
    """Monotonic arrival times of requests to ``base`` whose path starts with ``prefix``."""
    return server.stats.arrivals(_host_of(base), prefix)
