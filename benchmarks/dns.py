"""DNS: fanout's resolver over many distinct names, against aiohttp's AsyncResolver.

A stub DNS server (UDP on 127.0.0.1, in a subprocess on the other CPU)
answers every name ``nN.bench`` with 127.0.0.1, TTL 300. The client resolves:

1. ``--names`` distinct names with fanout.net.dns.Resolver, ``--concurrency`` at
   once: lookups per second, the names cached (bounded at 10,000) and RSS
   measured at 20 %, 50 % and 100 % of the names (flat once the cache is full);
2. ``--baseline-names`` fresh names, in ``--repeat`` alternated rounds, with
   fanout.net.dns.Resolver and with aiohttp.AsyncResolver (c-ares too, no cache
   of its own): the median lookups per second of each, and their ratio;
3. one name again and again: the cost of a cache hit, against a lookup that
   asks the server (aiohttp's resolver asks it every time; its connector's
   cache, which fanout turns off, kept any answer 300 s whatever its TTL).

    python benchmarks/dns.py [--names 100000] [--baseline-names 20000] [--repeat 5] [-c 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from common import pin_to  # type: ignore[import-not-found]

TTL = 300


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def serve(cpu: int | None) -> None:
    """The stub server: print its port, answer until stdin closes."""
    from dnslib import QTYPE, RCODE, RR, A, DNSRecord

    if cpu is not None:
        pin_to(cpu)

    class Stub(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            try:
                query = DNSRecord.parse(data)
            except Exception:
                return
            reply = query.reply()
            name = str(query.q.qname).rstrip(".")
            if not name.endswith(".bench"):
                reply.header.rcode = RCODE.NXDOMAIN
            elif query.q.qtype == QTYPE.A:
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=TTL))
            self.transport.sendto(bytes(reply.pack()), addr)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Stub, local_addr=("127.0.0.1", 0))
        print(transport.get_extra_info("sockname")[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
        transport.close()

    asyncio.run(main())


async def in_batches(
    lookup: Callable[[str], Awaitable[object]], names: list[str], concurrency: int
) -> float:
    """Resolve ``names``, ``concurrency`` at once; the seconds it took."""
    queue = iter(names)
    started = time.perf_counter()

    async def worker() -> None:
        for name in queue:
            await lookup(name)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(server: str, args: argparse.Namespace) -> None:
    import aiohttp

    from fanout.net.dns import Resolver

    names = [f"n{i}.bench" for i in range(args.names)]
    resolver = Resolver([server], timeout=5.0, max_in_flight=args.in_flight)
    marks = {int(args.names * share) for share in (0.2, 0.5, 1.0)}
    rss: list[tuple[int, float, int]] = []
    done = 0
    elapsed = 0.0

    async def ours(name: str) -> object:
        return await resolver.resolve(name, 80, socket.AF_INET)

    chunk_start = 0
    for mark in sorted(marks):
        elapsed += await in_batches(ours, names[chunk_start:mark], args.concurrency)
        done, chunk_start = mark, mark
        rss.append((done, rss_mb(), resolver.cached_names))
    stats = resolver.stats
    print(
        f"fanout.net.dns {args.names:>7,} distinct names: {args.names / elapsed:8,.0f} lookups/s"
        f" ({stats.queries:,} queries, {stats.failures:,} failed)"
    )
    for count, mb, cached in rss:
        print(f"  after {count:>7,} names: RSS {mb:6.1f} MB, {cached:,} names cached")
    first = next(mb for count, mb, _ in rss if count >= min(marks))
    print(f"  RSS growth from {min(marks):,} to {args.names:,} names: {rss[-1][1] / first:.3f}x")

    baseline = aiohttp.AsyncResolver(nameservers=[server])

    async def theirs(name: str) -> object:
        return await baseline.resolve(name, 80, socket.AF_INET)

    # Alternated rounds on fresh names, medians: the machine's noise hits both.
    size = args.baseline_names // args.repeat
    rates: dict[str, list[float]] = {"fanout.net.dns": [], "aiohttp": []}
    for round_ in range(args.repeat):
        for label, lookup in (("fanout.net.dns", ours), ("aiohttp", theirs)):
            fresh = [f"{label[0]}{round_}-{i}.bench" for i in range(size)]
            rates[label].append(size / await in_batches(lookup, fresh, args.concurrency))
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label, rate in medians.items():
        print(f"{label:14} {size:>7,} fresh names x{args.repeat}: {rate:8,.0f} lookups/s (median)")
    print(
        "ratio fanout.net.dns/aiohttp lookups per second (distinct names):"
        f" {medians['fanout.net.dns'] / medians['aiohttp']:.2f}"
    )

    repeat = args.hits
    await ours("hit.bench")
    started = time.perf_counter()
    for _ in range(repeat):
        await ours("hit.bench")
    hit = (time.perf_counter() - started) / repeat
    started = time.perf_counter()
    for _ in range(args.asked):
        await theirs("hit.bench")
    asked = (time.perf_counter() - started) / args.asked
    print(
        f"one name: a cache hit {hit * 1e6:.1f} us, a lookup asking the server"
        f" (aiohttp's resolver) {asked * 1e6:.1f} us; ratio {asked / hit:.0f}x"
    )
    await resolver.close()
    await baseline.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--baseline-names", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--hits", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=32, help="the Resolver's bound")
    parser.add_argument("--asked", type=int, default=2_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.cpu)
        return
    multi = (os.cpu_count() or 1) > 1
    command = [sys.executable, __file__, "--serve", *(["--cpu", "1"] if multi else [])]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(f"# dns: stub DNS server on 127.0.0.1:{port} (TTL {TTL} s); {pin_to(0)}")
        asyncio.run(measure(f"127.0.0.1:{port}", args))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
