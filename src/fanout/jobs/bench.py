"""``fanout bench``: the notes' sync-versus-async timing, made honest.

The same ``n`` URLs of the demo server (answering after ``latency``) are
fetched four ways, each bounded in time:

- ``sequential``: one blocking request after another (``requests`` when
  installed, else the stdlib's urllib), as a plain script does;
- ``threads``: the same blocking calls on a thread pool ``c`` wide;
- ``naive gather``: the pattern from the notes, one aiohttp session and
  ``asyncio.gather`` of every task under a ``Semaphore(c)``;
- ``fanout``: ``Fetcher.stream`` with ``Limits(concurrency=c, per_host=c)``.

The lower bound is ``ceil(n / c) x latency``: no client can beat it.
The server runs in a subprocess (``fanout serve``) so that it does not share
the client's interpreter, and binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import aiohttp

from fanout.engine import Fetcher
from fanout.policy import Limits, RetryPolicy
from fanout.runtime import loop_factory

__all__ = ["BenchResult", "demo_server_process", "run_bench"]


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One mode's timing. ``extrapolated`` when the mode hit its time cap and
    its wall time was estimated from the requests it finished."""

    mode: str
    requests: int
    completed: int
    wall: float
    extrapolated: bool
    lower_bound: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.completed / self.wall if self.wall > 0 else 0.0

    def as_dict(self, sequential_wall: float | None) -> dict[str, object]:
        """Plain data, with the speed-up over sequential when given."""
        data: dict[str, object] = asdict(self)
        data["rate"] = round(self.rate, 1)
        data["over_bound"] = round(self.wall / self.lower_bound, 3) if self.lower_bound else None
        data["speedup"] = round(sequential_wall / self.wall, 2) if sequential_wall else None
        return data


@contextlib.contextmanager
def demo_server_process(latency: float) -> Iterator[str]:
    """Run ``fanout serve`` on 127.0.0.1 in a subprocess; yield its base URL."""
    command = [
        sys.executable,
        "-m",
        "fanout",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--latency",
        f"{latency}s",
    ]
    # stderr piped: the line the server writes when terminated is not the bench's
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = next((word for word in line.split() if word.startswith("http://")), None)
        if url is None:
            _, why = process.communicate(timeout=10)
            raise RuntimeError(f"the demo server did not start: {line!r} {why.strip()!r}")
        yield url.rstrip("/")
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _get_blocking() -> Callable[[str], None]:
    try:
        import requests
    except ImportError:

        def get(url: str) -> None:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()

        return get
    session = requests.Session()

    def get_with_requests(url: str) -> None:
        session.get(url, timeout=30).content  # noqa: B018 (read the body)

    return get_with_requests


def _sequential(urls: list[str], cap: float) -> tuple[int, float]:
    get = _get_blocking()
    start = time.perf_counter()
    done = 0
    for url in urls:
        get(url)
        done += 1
        if time.perf_counter() - start > cap:
            break
    return done, time.perf_counter() - start


def _threads(urls: list[str], width: int) -> tuple[int, float]:
    get = _get_blocking()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        done = sum(1 for _ in pool.map(get, urls))
    return done, time.perf_counter() - start


async def _naive_gather(urls: list[str], width: int) -> tuple[int, float]:
    """The notes' pattern: every task at once, a Semaphore to bound them."""
    semaphore = asyncio.Semaphore(width)
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def get(url: str) -> None:
            async with semaphore, session.get(url) as response:
                await response.read()

        await asyncio.gather(*(get(url) for url in urls))
    return len(urls), time.perf_counter() - start


async def _fanout(urls: list[str], width: int) -> tuple[int, float]:
    limits = Limits(concurrency=width, per_host=width)
    start = time.perf_counter()
    done = 0
    # its server is on loopback: direct, whatever proxies the environment names
    async with Fetcher(limits=limits, retry=RetryPolicy(attempts=1), env_proxy=False) as fetcher:
        async for result in fetcher.stream(urls):
            done += result.ok
    return done, time.perf_counter() - start


def run_bench(
    base: str, *, n: int, latency: float, concurrency: int, sequential_cap: float = 20.0
) -> list[BenchResult]:
    """Time the four modes against ``base`` (a demo server answering after ``latency``)."""
    urls = [f"{base}/pages/{i}" for i in range(n)]
    bound = math.ceil(n / concurrency) * latency
    results = []

    def result(mode: str, done: int, wall: float, cap_hit: bool = False) -> BenchResult:
        if cap_hit and done:
            wall = wall * n / done  # the rest would take as long per request
        return BenchResult(mode, n, n if cap_hit else done, wall, cap_hit, bound)

    done, wall = _sequential(urls, sequential_cap)
    results.append(result("sequential", done, wall, cap_hit=done < n))
    done, wall = _threads(urls, concurrency)
    results.append(result(f"threads ({concurrency})", done, wall))
    factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        done, wall = runner.run(_naive_gather(urls, concurrency))
        results.append(result("naive gather", done, wall))
        done, wall = runner.run(_fanout(urls, concurrency))
        results.append(result("fanout", done, wall))
    return results


def require_plotting() -> None:
    """Raise ConfigError now, before any timing, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        from fanout.errors import ConfigError

        raise ConfigError("--plot needs matplotlib: pip install 'fanout[plot]'") from exc


def plot(results: list[BenchResult], path: str) -> None:
    """Draw the wall times as a bar chart (needs the ``fanout[plot]`` extra)."""
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.5))
    names = [r.mode + (" *" if r.extrapolated else "") for r in results]
    axes.barh(names, [r.wall for r in results], color="#4477aa")
    axes.axvline(results[0].lower_bound, color="#cc3311", linestyle="--", label="lower bound")
    axes.set_xscale("log")  # sequential is ~100x the others
    axes.set_xlabel("wall time (s, log scale), lower is better")
    axes.invert_yaxis()
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def cpu_note() -> str:
    """A line saying what machine the numbers come from."""
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}"
