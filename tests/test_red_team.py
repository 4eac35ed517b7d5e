"""A second look at issue 16's promises, as a hostile server, a hostile URL
author and a careless user would try them: the paths the attack suite
(tests/test_attacks.py) does not take. Real servers on loopback only: the
trap servers of tests/hostile.py and the stub DNS of tests/stub_dns.py, whose
every answer is a loopback address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fanout import ErrorKind, Fetcher, RetryPolicy, Timeouts
from fanout.guard import HostGuard
from fanout.models import Result
from tests.hostile import Traps, mapped_loopback_reachable
from tests.stub_dns import Name, StubDNS

NO_RETRY = RetryPolicy(attempts=1)
DEADLINES = Timeouts(connect=10, read=10, total=20)


@pytest.fixture
async def traps() -> AsyncIterator[Traps]:
    """Trap servers on 127.0.0.1, 127.0.0.2 and ::1, on the test's loop."""
    async with Traps() as running:
        yield running


async def gather(urls: list[object], **options: object) -> list[Result]:
    options.setdefault("retry", NO_RETRY)
    options.setdefault("timeouts", DEADLINES)
    async with Fetcher(**options) as fetcher:  # type: ignore[arg-type]
        return await fetcher.gather(urls)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the guard


def test_network_patterns_see_an_ipv4_mapped_address_as_its_ipv4_address() -> None:
    deny = HostGuard(deny_hosts=["10.0.0.0/8"])
    assert deny.check_address("n.test", "::ffff:10.1.2.3") is not None
    assert deny.check_address("n.test", "::ffff:11.1.2.3") is None
    allow = HostGuard(allow_hosts=["10.0.0.0/8"])
    assert allow.check_address("n.test", "::ffff:10.1.2.3") is None
    assert allow.check_address("n.test", "::ffff:11.1.2.3") is not None
    # A pattern written in the mapped form still matches it.
    assert HostGuard(deny_hosts=["::ffff:0:0/96"]).check_address("n", "::ffff:10.1.2.3")


async def test_a_denied_network_is_not_reached_through_an_ipv4_mapped_dns_answer(
    traps: Traps,
) -> None:
    """An AAAA answer ::ffff:127.0.0.1 connects to 127.0.0.1: --deny-host
    127.0.0.0/8 must refuse it (it was connected to), and --allow-host
    127.0.0.0/8 must let it through (it was refused)."""
    port = traps.base("127.0.0.1").rsplit(":", 1)[1]
    url = f"http://mapped.test:{port}/ok"
    zone = {"mapped.test": Name.fixed("::ffff:7f00:1")}  # dnslib's spelling of ::ffff:127.0.0.1
    async with StubDNS(zone) as dns:
        (denied,) = await gather([url], deny_hosts=["127.0.0.0/8"], nameservers=[dns.nameserver])
        assert denied.error is not None
        assert denied.error.kind is ErrorKind.DENIED, denied.error
        assert ("mapped.test", "AAAA") in dns.queries
        assert traps.connections() == 0
        if mapped_loopback_reachable():
            (allowed,) = await gather(
                [url], allow_hosts=["127.0.0.0/8"], nameservers=[dns.nameserver]
            )
            assert allowed.ok, allowed.error
            assert traps.connections() == 1
