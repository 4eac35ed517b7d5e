"""A second look at issue 16's promises, as a hostile server, a hostile URL
author and a careless user would try them: the paths the attack suite
(tests/test_attacks.py) does not take. Real servers on loopback only: the
trap servers of tests/hostile.py and the stub DNS of tests/stub_dns.py, whose
every answer is a loopback address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fanout import ConfigError, ErrorKind, Fetcher, Request, RetryPolicy, Timeouts, aggregate_async
from fanout.models import Failure, Result
from fanout.net.guard import HostGuard
from fanout.urls import parse_url, redact_url
from tests.attack_checks import invoke, read_records
from tests.background import in_thread
from tests.hostile import Reply, Traps, mapped_loopback_reachable, redirect, response
from tests.stub_dns import Name, StubDNS

NO_RETRY = RetryPolicy(attempts=1)
DEADLINES = Timeouts(connect=10, read=10, total=20)


@pytest.fixture
async def traps() -> AsyncIterator[Traps]:
    """Trap servers on 127.0.0.1, 127.0.0.2 and ::1, on the test's loop."""
    async with Traps() as running:
        yield running


async def gather(urls: Sequence[str | Request], **options: Any) -> list[Result]:
    options.setdefault("retry", NO_RETRY)
    options.setdefault("timeouts", DEADLINES)
    async with Fetcher(**options) as fetcher:
        return await fetcher.gather(urls)


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


# ------------------------------------------------------------- hosts that look like addresses

LEGACY_IPV4 = [
    "0x7f.0.0.1",
    "0x7f000001",
    "127.1",
    "2130706433",
    "0177.0.0.1",
    "127.0.0.1.",
    "1.2.3.4.5",
    "999.1.1.1",
    "a.0x7f",
]


@pytest.mark.parametrize("host", LEGACY_IPV4)
def test_a_host_ending_in_a_number_must_be_a_dotted_quad(host: str) -> None:
    """WHATWG URL §3.5: a host whose last label is a number is an IPv4 address
    or nothing. aiohttp refuses the decimal forms at connect time, and sends the
    hex ones to DNS as names: neither matches the 127.0.0.1 fanout took them for."""
    failure = parse_url(f"http://{host}:8080/x")
    assert isinstance(failure, Failure), host
    assert failure.kind is ErrorKind.INVALID_URL
    assert host in failure.message


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.255", "1a.test", "x.1a", "0xg.test"])
def test_names_and_dotted_quads_are_still_hosts(host: str) -> None:
    assert not isinstance(parse_url(f"http://{host}/"), Failure)


async def test_a_hex_host_on_the_same_port_does_not_get_the_origins_credentials() -> None:
    """127.0.0.1:P redirects to 0x7f.0.0.1:P, which fanout keyed as 127.0.0.1:P
    (the same origin: credentials kept) while aiohttp asked DNS for the name,
    here answered 127.0.0.2. The bearer token went to 127.0.0.2:P."""
    other: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        other.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(response(200, body=b"{}"))
        writer.close()

    async with Traps(["127.0.0.1"]) as traps:
        a = traps.base("127.0.0.1")
        port = int(a.rsplit(":", 1)[1])
        traps.route("/hop", redirect(302, f"http://0x7f.0.0.1:{port}/landing"))
        zone = {"0x7f.0.0.1": Name.fixed("127.0.0.2")}
        server = await asyncio.start_server(record, "127.0.0.2", port)
        try:
            async with StubDNS(zone) as dns:
                headers = {"Authorization": "Bearer s3cr3t-hex-9a8b"}
                (result,) = await gather(
                    [f"{a}/hop"], headers=headers, nameservers=[dns.nameserver]
                )
        finally:
            server.close()
            await server.wait_closed()
    assert not [head for head in other if b"s3cr3t" in head], "the token reached 127.0.0.2"
    assert result.error is not None
    assert result.error.kind is ErrorKind.INVALID_URL, result.error
    assert dns.queries == []
    assert other == []


# ------------------------------------------------- credentials in the URL and in a header


async def test_a_same_origin_location_with_userinfo_is_not_an_internal_error(
    traps: Traps,
) -> None:
    """A request with its own Authorization header, redirected on its origin to
    a Location that carries a user:password@: aiohttp refused to send both and
    fanout made an ``internal`` result (a bug, says docs/security.md) of what a
    server chose to send. The URL's credentials win, as they do over -H."""
    a = traps.base("127.0.0.1")
    traps.route("/hop", redirect(302, a.replace("http://", "http://evil:x@") + "/ok"))
    request = Request(f"{a}/hop", headers={"Authorization": "Bearer s3cr3t-own"})
    (result,) = await gather([request])
    assert result.ok, result.error
    first, hop = traps.seen(a)
    assert first.headers("Authorization") == ["Bearer s3cr3t-own"]
    assert hop.headers("Authorization") == ["Basic " + base64.b64encode(b"evil:x").decode()]


async def test_a_url_with_credentials_and_an_authorization_header_is_fetched(
    traps: Traps,
) -> None:
    """A careless user gives both; the URL's credentials are sent, once."""
    a = traps.base("127.0.0.1")
    url = a.replace("http://", "http://alice:pw@") + "/ok"
    request = Request(url, method="POST", headers={"authorization": "Bearer tok"}, body=b"x")
    (result,) = await gather([request])
    assert result.ok, result.error
    (seen,) = traps.seen(a)
    assert seen.headers("Authorization") == ["Basic " + base64.b64encode(b"alice:pw").decode()]


# ------------------------------------------------------------------ aggregate's pages

PAGE_SECRETS = {"Authorization": "Bearer s3cr3t-page-1c2d", "Cookie": "s=s3cr3t-page-3e4f"}


@pytest.mark.parametrize("how", ["next_page", "next_link"])
async def test_a_next_page_on_another_origin_gets_no_credentials(traps: Traps, how: str) -> None:
    """A server names the next page; when it is on another origin, the
    credentials given for the first page's origin must not go there, as on a
    redirect (docs/security.md, "Credentials stay with their origin")."""
    a, b = traps.base("127.0.0.1"), traps.base("127.0.0.2")
    json_type = ("Content-Type", "application/json")
    page = json.dumps({"items": [1], "next": f"{b}/collect"}).encode()
    link = ("Link", f'<{b}/collect>; rel="next"')
    traps.route("/first", Reply(response(200, [json_type, link], page)))
    traps.route("/collect", Reply(response(200, [json_type], b"{}")))
    options: dict[str, Any] = {"next_page": "next"} if how == "next_page" else {"next_link": True}
    await aggregate_async(
        [f"{a}/first"], headers=PAGE_SECRETS, retry=NO_RETRY, timeouts=DEADLINES, **options
    )
    (first,) = traps.seen(a)
    assert first.header("Authorization") == PAGE_SECRETS["Authorization"]
    for seen in traps.seen(b):  # fetched or refused, never with the secrets
        assert b"s3cr3t" not in seen.raw, f"{seen.target} got the credentials"


# ----------------------------------------------------------- redaction of broken URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:Zq9/x@h.example/ok", "http://***@h.example/ok"),
        ("http://u:Zq9/x/y@h.example:81/ok", "http://***@h.example:81/ok"),
        ("http:/u:Zq9@h.example/ok", "http:/***@h.example/ok"),
        ("http:///u:Zq9@h.example/ok", "http:///***@h.example/ok"),
        ("http:\\\\u:Zq9@h.example/ok", "http:\\\\***@h.example/ok"),
        # Unchanged: an "@" in the path of a URL whose authority is a host and port.
        ("http://h.example:8080/x@y", "http://h.example:8080/x@y"),
        ("http://[::1]/x@y", "http://[::1]/x@y"),
        ("http://h.example:/x@y", "http://h.example:/x@y"),
    ],
)
def test_a_password_in_a_broken_url_is_hidden(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_broken_urls_with_credentials_reach_no_output(tmp_path: Path) -> None:
    """A careless user's input: a password holding an unencoded "/" (common
    in generated ones) and a slash missing after "http:". Both are invalid
    URLs, and were written as they are to the JSONL, the journal, export and
    aggregate."""
    secret = "Zq9-broken"
    lines = [f"http://u:{secret}/x@127.0.0.1:9/ok", f"http:/u:{secret}@127.0.0.1:9/ok"]
    urls, out, journal = tmp_path / "urls.txt", tmp_path / "out.jsonl", tmp_path / "run.db"
    urls.write_text("\n".join(lines) + "\n")
    run = ["fetch", "-i", str(urls), "-o", str(out), "--journal", str(journal)]
    outputs = [invoke([*run, "-q", "--retries", "0"])]
    records = read_records(out)
    assert [r["error"]["kind"] for r in records] == ["invalid_url"] * 2
    outputs.append(invoke(["status", "--journal", str(journal)]))
    outputs.append(invoke(["export", "--journal", str(journal), "-o", str(tmp_path / "e.jsonl")]))
    for fmt in ("table", "json", "csv"):
        outputs.append(invoke(["aggregate", "-i", str(urls), "--format", fmt, "-q"]))
    leaks = [f"output {n}" for n, o in enumerate(outputs) if secret in o.stdout + o.stderr]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != urls]
    leaks += [p.name for p in written if secret.encode() in p.read_bytes()]
    assert not leaks, f"the password is in {leaks}"


def _grep_outputs(tmp_path: Path, inputs: list[Path], runs: list[list[str]], secret: str) -> None:
    outputs = [invoke(args) for args in runs]
    leaks = [f"output of {args[0]}" for args, o in zip(runs, outputs, strict=True)
             if secret in o.stdout + o.stderr]  # fmt: skip
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p not in inputs]
    leaks += [p.name for p in written if secret.encode() in p.read_bytes()]
    assert not leaks, f"{secret!r} is in {leaks}"


def test_a_rejected_line_is_redacted_before_it_is_cut(tmp_path: Path) -> None:
    """A rejected input line is shown cut to about 200 characters; the cut came
    first, so a long user:token@ (a JWT, say) lost its "@" and was written
    as it was: its first 190 characters in the JSONL, the journal and aggregate."""
    token = "jwt" + "T" * 400
    lines = [
        f"ftp://u:{token}@127.0.0.1:9/x",  # unsupported scheme
        f"http://u:{token}@127.0.0.1:9/a b",  # a space
        f"http://u:{token}@127.0.0.1:9/" + "a" * 70_000,  # longer than a line may be
    ]
    urls, out, journal = tmp_path / "urls.txt", tmp_path / "out.jsonl", tmp_path / "run.db"
    urls.write_text("\n".join(lines) + "\n")
    runs = [
        ["fetch", "-i", str(urls), "-o", str(out), "--journal", str(journal), "-q"],
        ["export", "--journal", str(journal), "-o", str(tmp_path / "export.jsonl")],
        ["aggregate", "-i", str(urls), "--format", "json", "-q"],
        ["fetch", lines[0], "-o", str(tmp_path / "argument.jsonl"), "-q"],  # a URL argument
        ["aggregate", lines[1], "--format", "csv", "-q"],
    ]
    _grep_outputs(tmp_path, [urls], runs, "T" * 16)
    assert [r["line"] for r in read_records(out)] == [1, 2, 3]


def test_a_rejected_jsonl_line_does_not_show_its_credential_headers(tmp_path: Path) -> None:
    """A --jsonl-input line that is refused (a bad method, broken JSON, a
    control character in a header) was written whole, Authorization and
    Cookie values included, as the record's "url" and the journal's key."""
    requests = tmp_path / "requests.jsonl"
    bad = [
        {"headers": {"Authorization": "Bearer SEKRIT-a"}, "url": "http://h.test/", "method": "G T"},
        {"headers": {"cookie": "s=SEKRIT-b", "X": "a\u0001"}, "url": "http://127.0.0.1:9/"},
        {"headers": {"Proxy-Authorization": "Basic SEKRIT-c"}, "url": "ftp://127.0.0.1:9/"},
    ]  # fmt: skip
    lines = [json.dumps(line) for line in bad]
    broken = '{"headers": {"Authorization": "Bearer SEKRIT-d \\" x"}, "url": "http://127.0.0.1:9/"'
    requests.write_text("\n".join([*lines, broken]) + "\n")
    out, journal = tmp_path / "out.jsonl", tmp_path / "run.db"
    runs = [
        ["fetch", "--jsonl-input", str(requests), "-o", str(out), "--journal", str(journal), "-q"],
        ["export", "--journal", str(journal), "--format", "csv", "-o", str(tmp_path / "e.csv")],
    ]
    _grep_outputs(tmp_path, [requests], runs, "SEKRIT")
    records = read_records(out)
    kinds = sorted(r["error"]["kind"] for r in records)
    assert kinds == ["bad_input"] * 3 + ["unsupported_scheme"]


# --------------------------------------------------------- international name patterns


def test_an_international_name_pattern_matches_its_hosts() -> None:
    """URL hosts are matched in their xn-- form; a pattern written in Unicode
    (a careless user's --deny-host bücher.example) matched nothing at all."""
    guard = HostGuard(deny_hosts=["bücher.example", "*.BÜCHER.test"])
    assert guard.check_host("xn--bcher-kva.example") is not None
    assert guard.check_host("a.xn--bcher-kva.test") is not None
    assert guard.check_host("xn--bcher-kva.other") is None
    with pytest.raises(ConfigError):
        HostGuard(allow_hosts=["bü*.example"])


async def test_a_unicode_deny_pattern_refuses_its_host(traps: Traps) -> None:
    port = traps.base("127.0.0.1").rsplit(":", 1)[1]
    async with StubDNS({"xn--bcher-kva.test": Name.fixed("127.0.0.1")}) as dns:
        url = f"http://bücher.test:{port}/ok"
        (result,) = await gather([url], deny_hosts=["bücher.test"], nameservers=[dns.nameserver])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DENIED, result.error
    assert traps.connections() == 0
    assert dns.queries == []


# ------------------------------------------------------- headers that follow a hop


@pytest.mark.parametrize("credentials", [{}, {"Authorization": "Bearer s3cr3t-ua"}])
async def test_the_user_agent_follows_a_hop_to_another_origin(
    traps: Traps, credentials: dict[str, str]
) -> None:
    """Leaving the fetcher's credentials out of a hop (aiohttp's skip list)
    made aiohttp put its own User-Agent in place of the fetcher's: every hop
    to another origin said "Python/3.11 aiohttp/3.x"."""
    a, b = traps.base("127.0.0.1"), traps.base("127.0.0.2")
    traps.route("/hop", redirect(302, f"{b}/ok"))
    headers = {"X-Custom": "follows", **credentials}
    (result,) = await gather([f"{a}/hop"], headers=headers, user_agent="red-agent/1")
    assert result.ok, result.error
    (first,) = traps.seen(a)
    (hop,) = traps.seen(b)
    assert first.headers("User-Agent") == ["red-agent/1"]
    assert hop.headers("User-Agent") == ["red-agent/1"]
    assert hop.headers("X-Custom") == ["follows"]
    assert hop.header("Authorization") is None


async def test_a_user_agent_header_in_any_case_is_the_user_agent(traps: Traps) -> None:
    """Fetcher(headers={"user-agent": ...}) (or -H 'user-agent: ...') was
    silently ignored: the default User-Agent, spelled otherwise, came first."""
    a = traps.base("127.0.0.1")
    (result,) = await gather([f"{a}/ok"], headers={"user-agent": "lower/1"})
    assert result.ok, result.error
    (seen,) = traps.seen(a)
    assert seen.headers("User-Agent") == ["lower/1"]


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_get_hop_drops_the_body_headers_given_with_h(tmp_path: Path, status: int) -> None:
    """A POST redirected to a GET drops its body and the headers that describe
    it (docs/security.md), also those given with -H: they were sent with the GET."""
    with in_thread(Traps) as traps:
        a, b = traps.base("127.0.0.1"), traps.base("127.0.0.2")
        traps.route("/post", redirect(status, f"{b}/ok"))
        args = ["fetch", f"{a}/post", "-X", "POST", "--data", "{}", "-o", str(tmp_path / "o")]
        args += ["-H", "Content-Type: application/json", "-H", "X-Custom: follows", "-q"]
        invoke([*args, "-H", "content-encoding: identity", "--user-agent", "red-agent/2"])
        (first,) = traps.seen(a)
        (hop,) = traps.seen(b)
    assert (first.method, first.header("Content-Type")) == ("POST", "application/json")
    assert (hop.method, hop.body) == ("GET", b"")
    assert hop.header("Content-Type") is None
    assert hop.header("Content-Encoding") is None
    assert hop.headers("X-Custom") == ["follows"]
    assert hop.headers("User-Agent") == ["red-agent/2"]


def test_a_location_echoing_a_long_password_is_redacted_before_it_is_cut(
    tmp_path: Path,
) -> None:
    """A server knows the password it was sent and may write it into a
    Location that fanout cannot follow (port 0). The error message quotes the
    Location; it was cut to 500 characters before its credentials were hidden,
    so a long password (a token) lost its "@" and half of it was written."""
    password = "tok" + "P" * 700
    with in_thread(Traps) as traps:
        a = traps.base("127.0.0.1")
        traps.route("/echo", redirect(302, f"http://bob:{password}@127.0.0.1:0/"))
        url = a.replace("http://", f"http://bob:{password}@") + "/echo"
        out = tmp_path / "out.jsonl"
        done = invoke(["fetch", url, "-o", str(out), "-q", "--debug"])
    (record,) = read_records(out)
    assert record["error"]["kind"] == "invalid_url"
    assert "P" * 16 not in out.read_text()
    assert "P" * 16 not in done.stderr


async def test_a_next_page_seen_before_is_reported_without_its_long_password(
    traps: Traps,
) -> None:
    """The bad_next message quotes the next page's URL, which a relative next
    page takes, credentials and all, from the page's own URL; cut before its
    credentials were hidden, a long password's start was in the report."""
    a = traps.base("127.0.0.1")
    body = json.dumps({"next": "/page"}).encode()
    traps.route("/page", Reply(response(200, [("Content-Type", "application/json")], body)))
    password = "tok" + "P" * 700
    url = a.replace("http://", f"http://bob:{password}@") + "/page"
    report = await aggregate_async([url], next_page="next", retry=NO_RETRY, timeouts=DEADLINES)
    assert report.bad_next == 1
    (problem,) = report.problems
    assert "already fetched" in problem.message
    assert "P" * 16 not in problem.message


async def test_a_name_with_a_refused_and_an_allowed_address_connects_to_the_allowed_one() -> None:
    """docs/security.md: such a name "is connected to the allowed one only",
    also when the refused address comes first, and at a redirect hop."""
    refused: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refused.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(response(200, body=b"{}"))
        writer.close()

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(10):  # until the port of 127.0.0.2 is free on 127.0.0.1 too
            traps = await stack.enter_async_context(Traps(["127.0.0.2"]))
            port = int(traps.base("127.0.0.2").rsplit(":", 1)[1])
            with contextlib.suppress(OSError):
                server = await asyncio.start_server(record, "127.0.0.1", port)
                break
        else:
            pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
        traps.route("/hop", redirect(307, f"http://both.test:{port}/ok"))
        zone = {"both.test": Name.fixed("127.0.0.1", "127.0.0.2")}
        try:
            async with StubDNS(zone) as dns:
                urls = [f"http://both.test:{port}/ok", f"http://127.0.0.2:{port}/hop"]
                guard = {"deny_hosts": ["127.0.0.1"], "nameservers": [dns.nameserver]}
                results = await gather(urls, **guard)
        finally:
            server.close()
            await server.wait_closed()
        seen = sorted(s.path for s in traps.seen())
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert refused == []
    assert seen == ["/hop", "/ok", "/ok"]


async def test_a_hop_to_another_port_of_the_same_host_gets_no_credentials() -> None:
    """An origin is scheme, host and port: the same address on another port is
    another origin (another server, perhaps another user's)."""
    async with Traps(["127.0.0.1", "127.0.0.1"]) as traps:
        a, other = traps.bases
        traps.route("/hop", redirect(307, f"{other}/ok"))
        url = a.replace("http://", "http://bob:pw-port@") + "/hop"
        request = Request(url, headers={"Cookie": "s=s3cr3t-port", "X-Custom": "follows"})
        (result,) = await gather([request], headers={"Proxy-Authorization": "Basic s3cr3t"})
        assert result.ok, result.error
        (first,) = traps.seen(a)
        (hop,) = traps.seen(other)
    assert first.header("Cookie") == "s=s3cr3t-port"
    assert first.header("Authorization") is not None
    assert b"s3cr3t" not in hop.raw
    assert hop.header("Authorization") is None
    assert hop.header("X-Custom") == "follows"
