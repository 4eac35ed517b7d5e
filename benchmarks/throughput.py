"""Throughput: fanout's ``stream`` against a minimal raw aiohttp worker pool.

With pycurl installed, fanout's ``stream`` on the curl transport runs in the
asyncio block too, against the same raw aiohttp, and beside it a bare pycurl
``CurlMulti`` driven from the loop (``bare_pycurl``): the floor, what a Python
asyncio loop driving libcurl does without an engine; and the same multi
driven by ``perform`` and ``select`` with no event loop at all
(``bare_pycurl_select``): what the loop integration costs.

All fetch the same N small responses from the benchmark server (``--server``:
the system's nginx, the default, or benchmarks/fastserver.py; pinned to CPU
1, the client to CPU 0) at concurrency C, in the same run, on the same
event loop type. The contenders compared are run together in a block, and
each round runs every block as a palindrome: a shuffled order, then the same
order reversed, so each pair is measured symmetrically about one moment and
a drift of the shared machine's speed cancels out of their ratio. Ratios are
taken within a round, and their median over ``--repeat`` rounds is reported
with the middle half of the rounds' ratios. Prints one line per figure, and
the server's CPU share (it must not be the bottleneck).

    python benchmarks/throughput.py [-n 20000] [-c 64] [--repeat 11] [--server nginx|fast]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any

import aiohttp

import fanout
import fanout.runtime
from common import (  # type: ignore[import-not-found]
    add_server_option,
    benchmark_server,
    check_server,
    compile_fanout,
    median_and_middle_half,
    pin_to,
    server_cpu_seconds,
)
from fanout.runtime import loop_factory


def urls(base: str, n: int) -> Iterator[str]:
    return (f"{base}/item/{i}" for i in range(n))


async def raw_aiohttp(
    base: str, n: int, concurrency: int, deadlines: aiohttp.ClientTimeout | None = None
) -> int:
    """The baseline: one session, C coroutines pulling URLs from a queue."""
    return await raw_aiohttp_on(urls(base, n), concurrency, deadlines)


async def raw_aiohttp_on(
    url_list: Iterable[str], concurrency: int, deadlines: aiohttp.ClientTimeout | None = None
) -> int:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in url_list:
        queue.put_nowait(url)
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty():
            url = queue.get_nowait()
            async with session.get(url) as response:
                await response.read()
            done += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    options = {} if deadlines is None else {"timeout": deadlines}
    async with aiohttp.ClientSession(connector=connector, **options) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


async def raw_with_deadlines(base: str, n: int, concurrency: int) -> int:
    """The baseline with fanout's default deadlines (connect, read, total), which
    cost aiohttp a timer per read: what part of the gap is the deadlines."""
    t = fanout.Timeouts()
    timeout = aiohttp.ClientTimeout(
        total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
    )
    return await raw_aiohttp(base, n, concurrency, timeout)


async def fanout_stream(base: str, n: int, concurrency: int, tune_collector: bool = False) -> int:
    limits = fanout.Limits(concurrency=concurrency, per_host=None)
    done = 0
    async with fanout.Fetcher(limits=limits, tune_collector=tune_collector) as fetcher:
        async for result in fetcher.stream(urls(base, n)):
            done += result.ok
    return done


async def fanout_curl_stream(base: str, n: int, concurrency: int) -> int:
    """fanout's ``stream`` on the libcurl transport (``transport="curl"``)."""
    limits = fanout.Limits(concurrency=concurrency, per_host=None)
    done = 0
    async with fanout.Fetcher(limits=limits, transport="curl") as fetcher:
        async for result in fetcher.stream(urls(base, n)):
            done += result.ok
    return done


def quiet_handles(count: int) -> list[Any]:
    """``count`` pycurl easy handles whose header and body callbacks do nothing."""
    import pycurl

    def nothing(_data: bytes) -> None:
        return None

    handles = []
    for _ in range(count):
        curl = pycurl.Curl()
        curl.setopt(pycurl.WRITEFUNCTION, nothing)
        curl.setopt(pycurl.HEADERFUNCTION, nothing)
        curl.setopt(pycurl.NOSIGNAL, 1)
        handles.append(curl)
    return handles


async def bare_pycurl(base: str, n: int, concurrency: int) -> int:
    """The floor for a Python asyncio loop driving libcurl: one pycurl
    ``CurlMulti`` driven by ``socket_action`` from this loop (libcurl's sockets
    watched with ``add_reader``/``add_writer``, its timer one lazy loop timer),
    ``concurrency`` pooled easy handles whose header and body callbacks do
    nothing; no engine, no results, no deadlines."""
    import pycurl

    loop = asyncio.get_running_loop()
    multi = pycurl.CurlMulti()
    pending = urls(base, n)
    finished = loop.create_future()
    done = failed = 0
    watched: dict[int, int] = {}  # fd -> the pycurl.POLL_* it is watched for
    wanted: float | None = None  # when libcurl last asked to be woken
    timer: asyncio.TimerHandle | None = None

    def start(curl: pycurl.Curl) -> bool:
        url = next(pending, None)
        if url is None:
            return False
        curl.setopt(pycurl.URL, url)
        multi.add_handle(curl)
        return True

    def on_socket(what: int, fd: int, _multi: object, _data: object) -> None:
        had = watched.pop(fd, 0)
        if had & pycurl.POLL_IN and not what & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if had & pycurl.POLL_OUT and not what & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if what == pycurl.POLL_REMOVE:
            return
        if what & pycurl.POLL_IN and not had & pycurl.POLL_IN:
            loop.add_reader(fd, act, fd, pycurl.CSELECT_IN)
        if what & pycurl.POLL_OUT and not had & pycurl.POLL_OUT:
            loop.add_writer(fd, act, fd, pycurl.CSELECT_OUT)
        watched[fd] = what

    def on_timer(ms: int) -> None:
        # Lazy: a timer due no later than libcurl's new time is kept (and moves
        # on when it fires early), not cancelled and made again.
        nonlocal wanted, timer
        wanted = None if ms < 0 else loop.time() + ms / 1000
        if wanted is not None and (timer is None or timer.when() > wanted):
            if timer is not None:
                timer.cancel()
            timer = loop.call_at(wanted, on_timeout)

    def on_timeout() -> None:
        nonlocal timer
        timer = None
        if wanted is None:
            return
        if loop.time() < wanted:
            timer = loop.call_at(wanted, on_timeout)
            return
        act(pycurl.SOCKET_TIMEOUT, 0)

    def act(fd: int, events: int) -> None:
        nonlocal done, failed
        multi.socket_action(fd, events)
        while True:
            queued, ok, errors = multi.info_read()
            for curl in ok:
                multi.remove_handle(curl)
                done += 1
                start(curl)
            for curl, _code, _message in errors:
                multi.remove_handle(curl)
                failed += 1
                start(curl)
            if not queued:
                break
        if done + failed == n and not finished.done():
            finished.set_result(None)

    multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
    multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)
    handles = quiet_handles(min(concurrency, n))
    for curl in handles:
        start(curl)
    try:
        if n:
            await finished
    finally:
        if timer is not None:
            timer.cancel()
        for fd in watched:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        for curl in handles:
            with contextlib.suppress(pycurl.error):
                multi.remove_handle(curl)
            curl.close()
        multi.close()
    return done


def has_curl() -> bool:
    """Whether pycurl (the fanout[curl] extra) is installed."""
    try:
        import pycurl  # noqa: F401
    except ImportError:
        return False
    return True


# The loops a contender runs on: plain asyncio, uvloop when installed, and
# "fanout.runtime.run": the run fanout starts itself (as the sync
# API and the CLI do), on its default loop and with the collector's first
# threshold raised while it runs.
OWN_LOOP = "fanout.runtime.run"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}


def timed(
    loop_name: str,
    job: Callable[[str, int, int], Awaitable[int]],
    base: str,
    n: int,
    concurrency: int,
) -> float:
    async def main() -> int:
        return await job(base, n, concurrency)

    with contextlib.ExitStack() as stack:
        run: Callable[[Coroutine[Any, Any, int]], int] = fanout.runtime.run
        if loop_name != OWN_LOOP:
            run = stack.enter_context(asyncio.Runner(loop_factory=LOOPS[loop_name])).run
        server_start = server_cpu_seconds(base)
        start = time.perf_counter()
        done = run(main())
        elapsed = time.perf_counter() - start
        SERVER_SHARE[job.__name__] = max(
            SERVER_SHARE.get(job.__name__, 0.0), (server_cpu_seconds(base) - server_start) / elapsed
        )
    if done != n:
        raise SystemExit(f"{job.__name__}: only {done} of {n} succeeded")
    return n / elapsed


SERVER_SHARE: dict[str, float] = {}  # contender -> the server's highest CPU share in its runs


def cli_and_raw(base: str, n: int, concurrency: int, cli_first: bool) -> tuple[float, float]:
    """``fanout fetch -i FILE -o FILE`` and benchmarks/raw_fetch.py on the same
    URL file, each a fresh process timed from start to exit, twice each in a
    palindrome (CLI, raw, raw, CLI or the reverse): the seconds of each."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "urls.txt"
        inputs.write_text("".join(f"{url}\n" for url in urls(base, n)))
        output = Path(tmp) / "out.jsonl"
        cli = [sys.executable, "-m", "fanout", "fetch", "-i", str(inputs), "-o", str(output)]
        cli += ["-c", str(concurrency), "--per-host", str(concurrency), "-q"]
        raw = [sys.executable, str(Path(__file__).with_name("raw_fetch.py")), str(inputs)]
        raw += ["-c", str(concurrency)]
        seconds = {"cli": 0.0, "raw": 0.0}
        order = ["cli", "raw"] if cli_first else ["raw", "cli"]
        for name in order + order[::-1]:
            start = time.perf_counter()
            subprocess.run(cli if name == "cli" else raw, check=True)
            seconds[name] += time.perf_counter() - start
            if name == "cli" and (lines := output.read_bytes().count(b"\n")) != n:
                raise SystemExit(f"cli: {lines} records for {n} URLs")
    return seconds["cli"], seconds["raw"]


Contender = tuple[str, Callable[[str, int, int], Awaitable[int]]]  # (loop, job)


async def bare_pycurl_select(base: str, n: int, concurrency: int) -> int:
    """pycurl's multi interface as its own examples drive it, with no event
    loop: ``perform`` and ``select`` until every transfer is done (blocking
    this loop, which has nothing else to do), ``concurrency`` pooled easy
    handles whose callbacks do nothing. Not a way a library inside asyncio
    can run (and ``select`` sees no descriptor past 1023); the measure of
    what the loop integration costs."""
    import pycurl

    multi = pycurl.CurlMulti()
    pending = urls(base, n)
    done = 0

    def start(curl: pycurl.Curl) -> None:
        url = next(pending, None)
        if url is not None:
            curl.setopt(pycurl.URL, url)
            multi.add_handle(curl)

    handles = quiet_handles(min(concurrency, n))
    for curl in handles:
        start(curl)
    try:
        deadline = time.monotonic() + 600  # bounded, like every load loop here
        while done < n and time.monotonic() < deadline:
            multi.select(1.0)
            while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            while True:
                queued, ok, errors = multi.info_read()
                for curl in ok:
                    multi.remove_handle(curl)
                    done += 1
                    start(curl)
                for curl, _code, _message in errors:
                    multi.remove_handle(curl)
                    start(curl)
                if not queued:
                    break
    finally:
        for curl in handles:
            with contextlib.suppress(pycurl.error):
                multi.remove_handle(curl)
            curl.close()
        multi.close()
    return done


def blocks() -> dict[str, list[Contender]]:
    """The contenders compared with each other, by block: each round runs a
    block as a palindrome (a shuffled order, then the reverse), so that every
    pair in it is measured symmetrically about the same moment and a drift of
    the machine's speed during the block cancels out of their ratio."""
    on_asyncio: list[Contender] = [
        ("asyncio", raw_aiohttp),
        ("asyncio", fanout_stream),
        ("asyncio", raw_with_deadlines),
        (OWN_LOOP, fanout_stream),  # the cross-loop goal is against raw on asyncio
    ]
    if has_curl():  # its goal is against raw aiohttp on plain asyncio
        on_asyncio.append(("asyncio", fanout_curl_stream))
        on_asyncio.append(("asyncio", bare_pycurl))
        on_asyncio.append(("asyncio", bare_pycurl_select))
    if "uvloop" not in LOOPS:
        return {"asyncio": on_asyncio}
    on_asyncio.append(("uvloop", fanout_stream))
    on_uvloop: list[Contender] = [
        ("uvloop", raw_aiohttp),
        ("uvloop", fanout_stream),
        ("uvloop", raw_with_deadlines),
    ]
    return {"asyncio": on_asyncio, "uvloop": on_uvloop}


def name_of(contender: Contender) -> str:
    loop_name, job = contender
    return f"{job.__name__} on {loop_name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=11, help="rounds")
    parser.add_argument("--seed", type=int, default=1, help="of the contenders' order")
    add_server_option(parser)
    args = parser.parse_args()
    check_server(args.server)
    pinning = pin_to(0)
    uvloop_factory = loop_factory()
    if uvloop_factory is not None:
        LOOPS["uvloop"] = uvloop_factory
    compiled = compile_fanout()  # the CLI runs as a fresh process
    print(
        f"# throughput: n={args.n} c={args.concurrency}, {args.repeat} rounds, "
        f"{args.server} server; {pinning}"
    )
    print(f"# {compiled}")
    # seconds[block][contender]: per round, the sum of the contender's two runs
    # in that block's palindrome. Ratios are taken within a round and block;
    # their median over rounds is reported with the middle half beside it.
    seconds: dict[str, dict[str, list[float]]] = {}
    rates: dict[str, list[float]] = {}
    shuffle = random.Random(args.seed).shuffle
    with benchmark_server(args.server, cpu=1) as base:
        for round_number in range(args.repeat):
            for block, contenders in blocks().items():
                shuffle(contenders)
                totals = dict.fromkeys(map(name_of, contenders), 0.0)
                for contender in contenders + contenders[::-1]:
                    rate = timed(*contender, base, args.n, args.concurrency)
                    rates.setdefault(name_of(contender), []).append(rate)
                    totals[name_of(contender)] += args.n / rate
                for name, total in totals.items():
                    seconds.setdefault(block, {}).setdefault(name, []).append(total)
            cli, raw = cli_and_raw(base, args.n, args.concurrency, round_number % 2 == 0)
            seconds.setdefault("processes", {}).setdefault("cli", []).append(cli)
            seconds["processes"].setdefault("raw", []).append(raw)
            rates.setdefault("fanout fetch CLI, a process", []).append(2 * args.n / cli)
            rates.setdefault("raw_fetch.py, a process", []).append(2 * args.n / raw)
    for name, values in rates.items():
        print(f"{name:36} {statistics.median(values):7.0f} req/s (median; best {max(values):.0f})")
    shares = ", ".join(f"{name} {share:.0%}" for name, share in sorted(SERVER_SHARE.items()))
    print(f"server CPU share of wall time (highest run; 100% = its core saturated): {shares}")

    def ratio(block: str, a: str, b: str) -> str:
        """Throughput of ``a`` over ``b`` in ``block``, round by round."""
        times = seconds[block]
        return median_and_middle_half([y / x for x, y in zip(times[a], times[b], strict=True)])

    default_loop = "uvloop" if "uvloop" in LOOPS else "asyncio"
    for loop_name in LOOPS:
        fan, raw = f"fanout_stream on {loop_name}", f"raw_aiohttp on {loop_name}"
        print(f"ratio fanout/raw on {loop_name}: {ratio(loop_name, fan, raw)} (goal >= 0.9)")
        deadlines = f"raw_with_deadlines on {loop_name}"
        print(f"ratio fanout/raw-with-deadlines on {loop_name}: {ratio(loop_name, fan, deadlines)}")
    if has_curl():
        curl = ratio("asyncio", "fanout_curl_stream on asyncio", "raw_aiohttp on asyncio")
        print(f"ratio fanout on curl/raw on asyncio: {curl} (goal >= 4)")
        bare = ratio("asyncio", "fanout_curl_stream on asyncio", "bare_pycurl on asyncio")
        print(f"ratio fanout on curl/bare pycurl on asyncio: {bare}")
        floor = ratio("asyncio", "bare_pycurl on asyncio", "raw_aiohttp on asyncio")
        print(f"ratio bare pycurl/raw on asyncio: {floor}")
        select = ratio("asyncio", "bare_pycurl_select on asyncio", "raw_aiohttp on asyncio")
        print(f"ratio bare pycurl without a loop (perform, select)/raw on asyncio: {select}")
    else:
        print("fanout on curl: skipped (pip install 'fanout[curl]')")
    own = f"fanout_stream on {OWN_LOOP}"
    print(
        f"ratio fanout.runtime.run ({default_loop}, collector raised for the run)/raw(asyncio): "
        f"{ratio('asyncio', own, 'raw_aiohttp on asyncio')} (goal >= 1.0)"
    )
    if "uvloop" in LOOPS:
        cross = ratio("asyncio", "fanout_stream on uvloop", "raw_aiohttp on asyncio")
        print(f"ratio fanout in the caller's uvloop/raw(asyncio): {cross}")
    cli = ratio("processes", "cli", "raw")
    print(f"ratio CLI writing JSONL/raw, both fresh processes: {cli} (goal >= 0.8)")


if __name__ == "__main__":
    main()
