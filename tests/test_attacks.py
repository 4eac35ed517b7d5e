"""The attack suite: fanout against hostile servers on loopback (issue 16).

Three origins on one machine (127.0.0.1, 127.0.0.2 and ::1) serve traps and
record every request byte for byte (tests/hostile.py), so each test checks
what a server received as well as what fanout wrote. Sections:
credentials stay with their origin; no response ends a run; bodies are
bounded; a sent POST is never replayed; limits follow the request; the
guard; bad options.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout import Caps, ErrorKind, Fetcher, Limits, Request, RetryPolicy, Timeouts, aggregate_async
from fanout.models import Result
from tests.attack_checks import (
    check_message,
    check_record,
    check_result,
    invoke,
    read_records,
)
from tests.background import in_thread
from tests.hostile import (
    CAP,
    Reply,
    Seen,
    Traps,
    catalogue,
    chunked,
    dead_port,
    mapped_loopback_reachable,
    redirect,
    response,
)
from tests.stub_dns import StubDNS

TRAPS = catalogue()

# The kind each of these traps must give; the others may give any kind.
EXPECTED_KINDS = {
    "garbage-status-line": ErrorKind.PROTOCOL,
    "nothing": ErrorKind.PROTOCOL,
    "header-line-1mb": ErrorKind.PROTOCOL,
    "headers-10000": ErrorKind.PROTOCOL,
    "nul-in-header": ErrorKind.PROTOCOL,
    "content-length-negative": ErrorKind.PROTOCOL,
    "content-length-conflicting": ErrorKind.PROTOCOL,
    "content-length-over-cap": ErrorKind.TOO_LARGE,
    "content-length-short-body": ErrorKind.PROTOCOL,
    "chunked-bad-size": ErrorKind.PROTOCOL,
    "retry-after-400-digits": ErrorKind.HTTP_STATUS,
    "retry-after-year-9999": ErrorKind.HTTP_STATUS,
    "retry-after-year-1": ErrorKind.HTTP_STATUS,
    "retry-after-negative": ErrorKind.HTTP_STATUS,
    "retry-after-garbage": ErrorKind.HTTP_STATUS,
    "retry-after-float": ErrorKind.HTTP_STATUS,
    "gzip-bomb": ErrorKind.TOO_LARGE,
    "gzip-bomb-chunked": ErrorKind.TOO_LARGE,
    "deflate-bomb": ErrorKind.TOO_LARGE,
    "identity-over-cap": ErrorKind.TOO_LARGE,
    "gzip-garbage": ErrorKind.PROTOCOL,
    "br-bomb": ErrorKind.TOO_LARGE,
    "br-bomb-chunked": ErrorKind.TOO_LARGE,
    "br-garbage": ErrorKind.PROTOCOL,
    "zstd-bomb": ErrorKind.TOO_LARGE,
    "zstd-bomb-chunked": ErrorKind.TOO_LARGE,
    "zstd-garbage": ErrorKind.PROTOCOL,
    "close-mid-body": ErrorKind.PROTOCOL,
    "reset-after-head": ErrorKind.PROTOCOL,
    "reset-at-once": ErrorKind.PROTOCOL,
    "redirect-file-scheme": ErrorKind.UNSUPPORTED_SCHEME,
    "redirect-loop": ErrorKind.TOO_MANY_REDIRECTS,
}

# Quick retries, and a cool-down a server cannot stretch, so a trap costs no waiting.
QUICK_RETRY = RetryPolicy(attempts=2, backoff=0.001, backoff_max=0.01, retry_after_max=0.05)
NO_RETRY = RetryPolicy(attempts=1)
DEADLINES = Timeouts(connect=10, read=10, total=20)
CLI_LIMITS = ["-q", "--max-bytes", str(CAP), "--timeout", "20s", "--read-timeout", "10s"]
BODY_MODES = ("none", "text", "json", "base64")

pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture(autouse=True)
def _no_zstd_on_curl(request: pytest.FixtureRequest, transport: str) -> None:
    """The pycurl wheel's libcurl has no zstd decoder (and does not ask for zstd)."""
    callspec = getattr(request.node, "callspec", None)
    name = "" if callspec is None else str(callspec.params.get("name", ""))
    if transport == "curl" and name.startswith("zstd"):
        pytest.skip("libcurl without zstd")


@pytest.fixture(scope="module")
def shared() -> Iterator[Traps]:
    """The catalogue on three origins, in a thread (for the library and the command)."""
    with in_thread(Traps) as traps:
        for name, reply in TRAPS.items():
            traps.route(f"/trap/{name}", reply)
        yield traps


@pytest.fixture
async def traps() -> AsyncIterator[Traps]:
    """Fresh trap servers on the test's loop, for tests that count what arrives."""
    async with Traps() as running:
        yield running


def a_b_c(traps: Traps) -> tuple[str, str, str]:
    """The base URLs of the three origins."""
    return traps.base("127.0.0.1"), traps.base("127.0.0.2"), traps.base("::1")


async def gather(urls: list[Any], **options: Any) -> list[Result]:
    options.setdefault("retry", NO_RETRY)
    options.setdefault("timeouts", DEADLINES)
    async with Fetcher(**options) as fetcher:
        return await fetcher.gather(urls)


# ------------------------------------------------------------- the traps themselves


async def test_traps_record_raw_requests_connections_and_peaks(traps: Traps) -> None:
    a, b, _ = a_b_c(traps)
    release = asyncio.Event()

    async def held(seen: Seen) -> Reply:
        await release.wait()
        return Reply(response(200, body=b"held"))

    traps.route("/held", held)

    async def raw(base: str, request: bytes) -> bytes:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(request)
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data

    first = asyncio.create_task(raw(a, b"GET /held HTTP/1.1\r\nX-Raw: \x01\xff\r\n\r\n"))
    second = asyncio.create_task(raw(a, b"POST /held HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
    assert await traps.wait_until(lambda: traps.in_flight(a) == 2, within=30)
    release.set()
    assert (await first).endswith(b"held")
    assert (await second).endswith(b"held")
    assert (traps.connections(a), traps.connections(b), traps.peak(a)) == (2, 0, 2)
    get, post = sorted(traps.seen(a, "/held"), key=lambda s: s.method)
    assert get.headers("x-raw") == ["\x01\xff"]
    assert (post.method, post.body) == ("POST", b"abc")
    assert get.connection != post.connection
    assert await raw(b, b"GET /nowhere HTTP/1.1\r\n\r\n") != b""  # 404, recorded at b
    assert [s.path for s in traps.seen(b)] == ["/nowhere"]


# ------------------------------------------------------------- no response ends a run


@pytest.mark.parametrize("name", sorted(TRAPS))
async def test_library_gives_one_result_per_request_whatever_the_response(
    shared: Traps, name: str
) -> None:
    a, b, _ = a_b_c(shared)
    results = await gather(
        [f"{a}/trap/{name}", f"{b}/ok"], caps=Caps(max_bytes=CAP), retry=QUICK_RETRY
    )
    assert len(results) == 2
    trapped, control = results
    assert control.ok, control.error
    if name in EXPECTED_KINDS:
        assert trapped.error is not None
        assert trapped.error.kind is EXPECTED_KINDS[name], trapped.error
    check_result(trapped, CAP)


BODY_TRAPS = sorted(
    n
    for n in TRAPS
    if n.startswith(("charset-", "json-", "gzip-", "deflate-", "br-", "zstd-", "identity-"))
)
# Every trap under --body json (it parses, then writes, the body); those about
# bodies under --body text too. The other modes are left to the Hypothesis tests.
CLI_CASES = [(name, "json") for name in sorted(TRAPS)] + [(name, "text") for name in BODY_TRAPS]


@pytest.mark.parametrize(("name", "mode"), CLI_CASES)
def test_command_writes_one_record_per_input_whatever_the_response(
    shared: Traps, tmp_path: Path, name: str, mode: str
) -> None:
    a, b, _ = a_b_c(shared)
    out = tmp_path / "out.jsonl"
    urls = [f"{a}/trap/{name}", f"{b}/ok"]
    args = ["fetch", *urls, "-o", str(out), "--body", mode, "--retries", "0", "--ordered"]
    invoke([*args, *CLI_LIMITS])
    records = read_records(out)
    assert [r["line"] for r in records] == [1, 2]
    assert records[1]["ok"] is True
    if name in EXPECTED_KINDS:
        assert records[0]["error"]["kind"] == EXPECTED_KINDS[name].value
    for record in records:
        check_record(record, mode, CAP)


def test_a_journaled_run_that_met_a_trap_resumes(shared: Traps, tmp_path: Path) -> None:
    """With a journal, a run that died on a response died again at every resume."""
    a, b, _ = a_b_c(shared)
    out, journal = tmp_path / "out.jsonl", tmp_path / "run.db"
    urls = [f"{a}/trap/json-deep-300", f"{b}/ok"]
    args = ["fetch", *urls, "-o", str(out), "--body", "json", "--journal", str(journal)]
    invoke([*args, "--retries", "0", *CLI_LIMITS])
    invoke([*args, "--retries", "0", *CLI_LIMITS])  # the resume: nothing left to fetch
    assert sorted(r["line"] for r in read_records(out)) == [1, 2]


@pytest.mark.parametrize("name", sorted(TRAPS))
async def test_aggregate_library_counts_the_trap_and_goes_on(shared: Traps, name: str) -> None:
    a, b, _ = a_b_c(shared)
    report = await aggregate_async(
        [f"{a}/trap/{name}", f"{b}/ok"],
        fields={"v": "a"},
        caps=Caps(max_bytes=CAP),
        retry=QUICK_RETRY,
        timeouts=DEADLINES,
    )
    assert report.requests == 2
    assert report.ok >= 1
    for problem in report.problems:
        check_message(problem.message)


@pytest.mark.parametrize("fmt", ["json", "table", "csv"])
def test_aggregate_command_counts_every_trap_and_goes_on(shared: Traps, fmt: str) -> None:
    """Every trap in one run. A Retry-After holds its whole host back (for up
    to two minutes), so those traps have an origin of their own."""
    a, b, c = a_b_c(shared)
    urls = [f"{b if n.startswith('retry-after') else a}/trap/{n}" for n in sorted(TRAPS)]
    urls.append(f"{c}/ok")
    args = ["aggregate", *urls, "-f", "v=a", "--format", fmt, "--retries", "0", *CLI_LIMITS]
    args += ["-c", "100", "--per-host", "100"]  # every request starts at once
    printed = invoke(args).stdout
    if fmt == "json":
        report = json.loads(printed)
        assert report["requests"]["total"] == len(urls)
        for problem in report["problems"]:
            check_message(problem["message"])
    raw = sorted({c for c in printed if not c.isprintable() and c not in "\n\r\t"})
    assert raw == [], f"raw control characters on stdout: {raw!r}"


# ------------------------------------------------------- credentials stay with their origin

SECRETS = {
    "Authorization": "Bearer s3cr3t-auth-1a2b",
    "Proxy-Authorization": "Basic s3cr3t-proxy-3c4d",
    "Cookie": "session=s3cr3t-cookie-5e6f",
}
FOLLOWS = {"X-Custom": "follows-every-hop"}
HEADER_SOURCES = ["fetcher", "request", "fetch", "command", "aggregate"]


@pytest.fixture
def fresh() -> Iterator[Traps]:
    """Fresh trap servers in a thread: for the library, fanout.fetch and the command."""
    with in_thread(Traps) as traps:
        traps.route("/landing", Reply(response(200, [("Content-Type", "application/json")], b"{}")))
        yield traps


def send_with_headers(source: str, url: str, headers: dict[str, str], tmp_path: Path) -> None:
    """Fetch ``url`` with ``headers`` given the way ``source`` names."""
    if source == "fetcher":
        results = asyncio.run(gather([url], headers=headers))
    elif source == "request":
        results = asyncio.run(gather([Request(url, headers=headers)]))
    elif source == "fetch":
        results = fanout.fetch([url], headers=headers, retry=NO_RETRY, timeouts=DEADLINES)
    else:
        flags = [f for name, value in headers.items() for f in ("-H", f"{name}: {value}")]
        if source == "command":
            out = tmp_path / "out.jsonl"
            invoke(["fetch", url, *flags, "-o", str(out), "--retries", "0", *CLI_LIMITS])
            assert [r["ok"] for r in read_records(out)] == [True]
        else:
            report = json.loads(invoke(["aggregate", url, *flags, "--format", "json"]).stdout)
            assert report["requests"]["ok"] == 1
        return
    assert [r.ok for r in results] == [True], results[0].error


def assert_no_secret(seen: list[Seen]) -> None:
    assert seen, "the hop was not made"
    for request in seen:
        for name, value in SECRETS.items():
            assert value.encode() not in request.raw, f"{name} sent to {request.base}"
        assert request.header("X-Custom") == FOLLOWS["X-Custom"]


def assert_every_secret(seen: list[Seen]) -> None:
    assert seen, "the hop was not made"
    for request in seen:
        for name, value in SECRETS.items():
            assert request.header(name) == value, f"{name} not sent to {request.target}"
        assert request.header("X-Custom") == FOLLOWS["X-Custom"]


@pytest.mark.parametrize("source", HEADER_SOURCES)
@pytest.mark.parametrize("status", [302, 307])
def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(
    fresh: Traps, tmp_path: Path, source: str, status: int
) -> None:
    a, b, _ = a_b_c(fresh)
    fresh.route("/to-b", redirect(status, f"{b}/landing"))
    send_with_headers(source, f"{a}/to-b", {**SECRETS, **FOLLOWS}, tmp_path)
    assert_every_secret(fresh.seen(a))
    assert_no_secret(fresh.seen(b))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_drops_credentials_across_origins(
    fresh: Traps, tmp_path: Path, status: int
) -> None:
    a, _, c = a_b_c(fresh)
    fresh.route("/to-c", redirect(status, f"{c}/landing"))
    send_with_headers("fetcher", f"{a}/to-c", {**SECRETS, **FOLLOWS}, tmp_path)
    assert_every_secret(fresh.seen(a))
    assert_no_secret(fresh.seen(c))


@pytest.mark.parametrize("source", HEADER_SOURCES)
def test_credentials_are_kept_on_a_same_origin_redirect(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, _, _ = a_b_c(fresh)
    fresh.route("/to-a", redirect(302, "/landing"))
    send_with_headers(source, f"{a}/to-a", {**SECRETS, **FOLLOWS}, tmp_path)
    assert [s.path for s in fresh.seen(a)] == ["/to-a", "/landing"]
    assert_every_secret(fresh.seen(a))


@pytest.mark.parametrize("source", ["fetcher", "command"])
def test_no_hop_of_a_chain_across_hosts_gets_credentials(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, b, c = a_b_c(fresh)
    fresh.route("/to-b", redirect(307, f"{b}/to-c"))
    fresh.route("/to-c", redirect(308, f"{c}/landing"))
    send_with_headers(source, f"{a}/to-b", {**SECRETS, **FOLLOWS}, tmp_path)
    assert_every_secret(fresh.seen(a))
    assert_no_secret(fresh.seen(b))
    assert_no_secret(fresh.seen(c))


@pytest.mark.parametrize("source", ["fetcher", "command"])
def test_url_credentials_are_basic_auth_on_their_own_origin_only(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, b, _ = a_b_c(fresh)
    fresh.route("/to-b", redirect(302, f"{b}/landing"))
    password = "pw-9f8e7d"
    url = a.replace("http://", f"http://alice:{password}@") + "/to-b"
    send_with_headers(source, url, {}, tmp_path)
    (first,) = fresh.seen(a)
    assert first.header("Authorization") == "Basic " + base64.b64encode(
        f"alice:{password}".encode()
    ).decode("ascii")
    (landing,) = fresh.seen(b)
    assert landing.header("Authorization") is None
    encoded = base64.b64encode(f"alice:{password}".encode())
    assert password.encode() not in landing.raw
    assert encoded not in landing.raw


@pytest.mark.parametrize("source", ["fetcher", "command"])
def test_a_set_cookie_is_never_sent_with_another_request(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    """fanout keeps no cookie jar. The host is a name ("localhost", from
    /etc/hosts): a jar keeps no cookie set by an IP address."""
    a, _, _ = a_b_c(fresh)
    fresh.route(
        "/set-cookie",
        Reply(response(200, [("Set-Cookie", "jar=s3cr3t-jar-7a8b; Path=/")], b"{}")),
    )
    local = a.replace("127.0.0.1", "localhost")
    urls = [f"{local}/set-cookie", f"{local}/landing"]
    if source == "fetcher":
        results = asyncio.run(gather(urls, limits=Limits(concurrency=1)))
        assert [r.ok for r in results] == [True, True]
    else:
        out = tmp_path / "out.jsonl"
        invoke(["fetch", *urls, "-c", "1", "-o", str(out), "--ordered", *CLI_LIMITS])
        assert [r["ok"] for r in read_records(out)] == [True, True]
    (landing,) = fresh.seen(a, "/landing")
    assert landing.header("Cookie") is None
    assert b"s3cr3t-jar" not in landing.raw


def test_url_credentials_reach_no_output(
    fresh: Traps, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Grep every file fanout writes (JSONL, the journal and its WAL, exports),
    every aggregate format, stdout, stderr and the debug log for the password."""
    password = "pw-grep-4d5e6f"
    a, b, _ = a_b_c(fresh)
    fresh.route("/to-b", redirect(302, f"{b}/landing"))
    base = a.replace("http://", f"http://bob:{password}@")
    urls = [f"{base}/to-b", f"{base}/landing", f"{base}/nowhere", f"{base}/to-b#again"]
    journal, out, csv = tmp_path / "run.db", tmp_path / "out.jsonl", tmp_path / "export.csv"
    caplog.set_level(logging.DEBUG, logger="fanout")
    commands = {
        "fetch": ["fetch", *urls, "-o", str(out), "--journal", str(journal), "--retries", "0"],
        "status": ["status", "--journal", str(journal)],
        "status --json": ["status", "--journal", str(journal), "--json"],
        "export": ["export", "--journal", str(journal), "-o", str(tmp_path / "export.jsonl")],
        "export csv": ["export", "--journal", str(journal), "--format", "csv", "-o", str(csv)],
        **{
            f"aggregate {fmt}": ["aggregate", *urls, "--format", fmt, "--retries", "0"]
            for fmt in ("table", "json", "csv")
        },
    }
    leaks: list[str] = []
    for name, args in commands.items():
        result = invoke(args)
        leaks += [f"{name}: stdout"] if password in result.stdout else []
        leaks += [f"{name}: stderr"] if password in result.stderr else []
    assert len(read_records(out)) == len(urls)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    leaks += [path.name for path in files if password.encode() in path.read_bytes()]
    leaks += ["the debug log"] if password in caplog.text else []
    assert not leaks, f"the password is in: {', '.join(leaks)}"


# ------------------------------------------------------------------- bodies are bounded


@pytest.mark.parametrize("mode", BODY_MODES)
def test_no_record_holds_more_than_max_bytes(
    fresh: Traps, server_thread: str, tmp_path: Path, mode: str
) -> None:
    a, _, _ = a_b_c(fresh)
    cap = 4096
    fresh.route("/exact", Reply(response(200, [], b"e" * cap)))
    fresh.route("/over", Reply(response(200, [], b"o" * (cap + 1))))
    fresh.route(
        "/over-chunked",
        Reply(response(200, [("Transfer-Encoding", "chunked")], chunked(b"c" * (cap + 1)))),
    )
    fresh.route("/bomb", TRAPS["gzip-bomb"])
    fresh.route("/deflate-bomb", TRAPS["deflate-bomb"])
    urls = [f"{a}/{p}" for p in ("exact", "over", "over-chunked", "bomb", "deflate-bomb")]
    urls.append(f"{server_thread}/gzip-bomb")  # the demo server's own bomb
    out = tmp_path / "out.jsonl"
    args = ["fetch", *urls, "-o", str(out), "--body", mode, "--max-bytes", str(cap), "--ordered"]
    invoke([*args, "-q", "--retries", "0"])
    exact, *over = read_records(out)
    assert (exact["ok"], exact["bytes"]) == (True, cap)
    assert [r["error"]["kind"] for r in over] == ["too_large"] * len(over)
    for record in (exact, *over):
        check_record(record, mode, cap)


async def test_library_bodies_are_bounded_and_bombs_are_too_large(traps: Traps) -> None:
    a, _, _ = a_b_c(traps)
    cap = 4096
    traps.route("/bomb", TRAPS["gzip-bomb"])
    traps.route("/bomb-chunked", TRAPS["gzip-bomb-chunked"])
    traps.route("/over", Reply(response(200, [], bytes(cap + 1))))
    results = await gather(
        [f"{a}/bomb", f"{a}/bomb-chunked", f"{a}/over"], caps=Caps(max_bytes=cap)
    )
    assert [r.error.kind if r.error else None for r in results] == [ErrorKind.TOO_LARGE] * 3
    for result in results:
        check_result(result, cap)
    report = await aggregate_async(
        [f"{a}/bomb", f"{a}/over"], caps=Caps(max_bytes=cap), retry=NO_RETRY
    )
    assert (report.requests, dict(report.failed)) == (2, {"too_large": 2})


# -------------------------------------------------------- a sent POST is never replayed


def post(source: str, url: str, tmp_path: Path, *, retries: int = 3) -> dict[str, Any]:
    """POST b"payload" to ``url`` with ``retries``; the record (or result) as a dict."""
    if source == "library":
        request = Request(url, method="POST", body=b"payload")
        retry = RetryPolicy(attempts=retries + 1, backoff=0.001, backoff_max=0.01)
        (result,) = asyncio.run(gather([request], retry=retry))
        kind = None if result.error is None else result.error.kind.value
        return {"ok": result.ok, "error": None if kind is None else {"kind": kind}}
    out = tmp_path / "out.jsonl"
    args = ["fetch", url, "-X", "POST", "--data", "payload", "--retries", str(retries)]
    invoke([*args, "-o", str(out), *CLI_LIMITS])
    (record,) = read_records(out)
    return record


@pytest.mark.slow
@pytest.mark.parametrize("source", ["library", "command"])
@pytest.mark.parametrize("status", [307, 308])
def test_a_post_redirected_to_a_dead_port_is_sent_once(
    fresh: Traps, tmp_path: Path, source: str, status: int
) -> None:
    a, _, _ = a_b_c(fresh)
    fresh.route("/post", redirect(status, f"http://127.0.0.1:{dead_port()}/gone"))
    record = post(source, f"{a}/post", tmp_path)
    assert record["ok"] is False
    sent = fresh.seen(a, "/post")
    assert [(s.method, s.body) for s in sent] == [("POST", b"payload")]


def test_a_post_is_sent_once_at_every_hop_of_a_chain(fresh: Traps, tmp_path: Path) -> None:
    a, b, _ = a_b_c(fresh)
    fresh.route("/first", redirect(307, f"{b}/second"))
    fresh.route("/second", redirect(307, f"http://127.0.0.1:{dead_port()}/gone"))
    post("library", f"{a}/first", tmp_path)
    assert len(fresh.seen(a, "/first")) == 1
    assert [(s.method, s.body) for s in fresh.seen(b, "/second")] == [("POST", b"payload")]


@pytest.mark.parametrize("source", ["library", "command"])
def test_a_post_redirected_with_303_is_a_get_without_body(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, b, _ = a_b_c(fresh)
    fresh.route("/see-other", redirect(303, f"{b}/landing"))
    assert post(source, f"{a}/see-other", tmp_path)["ok"] is True
    (first,) = fresh.seen(a)
    (landing,) = fresh.seen(b)
    assert (first.method, first.body) == ("POST", b"payload")
    assert (landing.method, landing.body) == ("GET", b"")
    assert landing.header("Content-Length") in (None, "0")
    assert landing.header("Transfer-Encoding") is None


@pytest.mark.parametrize("source", ["library", "command"])
def test_a_post_whose_connection_is_reset_after_sending_is_not_retried(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, _, _ = a_b_c(fresh)
    fresh.route("/reset", Reply(b"", end="reset"))
    record = post(source, f"{a}/reset", tmp_path)
    assert record["error"]["kind"] == "protocol"
    assert [(s.method, s.body) for s in fresh.seen(a, "/reset")] == [("POST", b"payload")]


def test_a_get_whose_connection_is_reset_is_retried(fresh: Traps) -> None:
    a, _, _ = a_b_c(fresh)
    fresh.route("/reset", Reply(b"", end="reset"))
    retry = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.01)
    (result,) = asyncio.run(gather([f"{a}/reset"], retry=retry))
    assert result.error is not None
    assert (result.error.kind, result.attempts) == (ErrorKind.PROTOCOL, 3)
    sent = [s.method for s in fresh.seen(a, "/reset")]
    assert set(sent) == {"GET"}
    assert len(sent) == 3  # fanout's attempts only: aiohttp's own resend is off


@pytest.mark.parametrize(("method", "body"), [("PUT", b"payload"), ("GET", None)])
def test_a_request_marked_not_idempotent_is_sent_once(
    fresh: Traps, method: str, body: bytes | None
) -> None:
    """Request(idempotent=False) overrides the method: a PUT or GET so marked,
    reset after it was sent, is not sent again, by fanout or by the library
    below it (aiohttp resends a GET without a body by itself: see
    fanout.net.aiohttp_internals.no_hidden_retry, and its fallback)."""
    a, _, _ = a_b_c(fresh)
    fresh.route("/reset", Reply(b"", end="reset"))
    request = Request(f"{a}/reset", method=method, body=body, idempotent=False)
    retry = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.01)
    (result,) = asyncio.run(gather([request], retry=retry))
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROTOCOL
    assert [(s.method, s.body or None) for s in fresh.seen(a, "/reset")] == [(method, body)]


# ----------------------------------------------------------- limits follow the request

HOLD = 0.25  # how long a held response waits for a second request to overlap it


def hold_route(traps: Traps, base: str) -> Callable[[Seen], Awaitable[Reply]]:
    """Answer once a second request is in flight at ``base``, or after HOLD
    seconds: requests that may overlap do, those that may not cost HOLD each."""

    async def held(seen: Seen) -> Reply:
        await traps.wait_until(lambda: traps.in_flight(base) >= 2, within=HOLD)
        return Reply(response(200, body=b"{}"))

    return held


@pytest.mark.slow
@pytest.mark.parametrize("source", ["library", "command"])
def test_per_host_limits_the_host_a_redirect_leads_to(tmp_path: Path, source: str) -> None:
    """Four origins (ports of 127.0.0.1), one request in flight each, all
    redirected to 127.0.0.2: it must never see two at once with per_host 1."""
    with in_thread(lambda: Traps(["127.0.0.1"] * 4 + ["127.0.0.2"])) as traps:
        *sources, target = traps.bases
        traps.route("/go", redirect(307, f"{target}/held"))
        traps.route("/held", hold_route(traps, target))
        urls = [f"{s}/go?i={i}" for i in range(2) for s in sources]
        if source == "library":
            results = asyncio.run(gather(urls, limits=Limits(concurrency=16, per_host=1)))
            assert all(r.ok for r in results)
        else:
            out = tmp_path / "out.jsonl"
            invoke(["fetch", *urls, "--per-host", "1", "-o", str(out), *CLI_LIMITS])
            assert len(read_records(out)) == len(urls)
        assert len(traps.seen(target, "/held")) == len(urls)
        assert traps.peak(target) == 1


SPELLINGS = [
    "http://127.0.0.1:{port}",
    "HTTP://127.0.0.1:{port}",
    "http://[::ffff:127.0.0.1]:{port}",
]


def test_host_keys_are_canonical_for_per_host(fresh: Traps) -> None:
    a, _, _ = a_b_c(fresh)
    fresh.route("/held", hold_route(fresh, a))
    port = a.rsplit(":", 1)[1]
    spellings = SPELLINGS if mapped_loopback_reachable() else SPELLINGS[:2]
    urls = [f"{s.format(port=port)}/held?i={i}" for i in range(2) for s in spellings]
    results = asyncio.run(gather(urls, limits=Limits(concurrency=16, per_host=1)))
    assert all(r.ok for r in results), [r.error for r in results]
    assert fresh.peak(a) == 1


# ------------------------------------------------------------------------- the guard


@pytest.mark.parametrize("source", ["library", "command"])
def test_deny_private_refuses_loopback_without_connecting(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, _, c = a_b_c(fresh)
    urls = [f"{a}/landing", f"{c}/landing"]
    if source == "library":
        assert [r.ok for r in asyncio.run(gather(urls))] == [True, True]  # off: fetched
        connected = fresh.connections()
        results = asyncio.run(gather(urls, deny_private=True))
        kinds = [r.error.kind if r.error else None for r in results]
        assert kinds == [ErrorKind.DENIED] * 2
        for result in results:
            check_result(result)
    else:
        out = tmp_path / "out.jsonl"
        invoke(["fetch", *urls, "-o", str(out), *CLI_LIMITS])
        assert [r["ok"] for r in read_records(out)] == [True, True]
        connected = fresh.connections()
        invoke(["fetch", *urls, "-o", str(out), "--deny-private", *CLI_LIMITS])
        assert [r["error"]["kind"] for r in read_records(out)] == ["denied"] * 2
    assert fresh.connections() == connected  # no connection at all when denied


@pytest.mark.parametrize("source", ["library", "command"])
def test_a_redirect_to_a_denied_host_is_refused_at_that_hop(
    fresh: Traps, tmp_path: Path, source: str
) -> None:
    a, b, _ = a_b_c(fresh)
    fresh.route("/to-b", redirect(302, f"{b}/landing"))
    if source == "library":
        (result,) = asyncio.run(gather([f"{a}/to-b"], deny_hosts=["127.0.0.2"]))
        assert result.error is not None
        assert result.error.kind is ErrorKind.DENIED
    else:
        out = tmp_path / "out.jsonl"
        invoke(["fetch", f"{a}/to-b", "--deny-host", "127.0.0.2", "-o", str(out), *CLI_LIMITS])
        assert read_records(out)[0]["error"]["kind"] == "denied"
    assert len(fresh.seen(a)) == 1
    assert fresh.connections(b) == 0


@pytest.mark.parametrize("source", ["library", "command"])
def test_allow_host_refuses_every_other_host(fresh: Traps, tmp_path: Path, source: str) -> None:
    a, b, _ = a_b_c(fresh)
    urls = [f"{a}/landing", f"{b}/landing"]
    if source == "library":
        results = asyncio.run(gather(urls, allow_hosts=["127.0.0.1"]))
        kinds = [r.error.kind.value if r.error else None for r in results]
    else:
        out = tmp_path / "out.jsonl"
        args = ["fetch", *urls, "--allow-host", "127.0.0.1", "--ordered", "-o", str(out)]
        invoke([*args, *CLI_LIMITS])
        kinds = [r["error"]["kind"] if r["error"] else None for r in read_records(out)]
    assert kinds == [None, "denied"]
    assert fresh.connections(b) == 0


async def test_deny_private_checks_the_address_a_name_resolves_to(traps: Traps) -> None:
    """The name is not private, its address is: the check is on the resolved
    address (the stub DNS answers a.test with 127.0.0.1)."""
    a, _, _ = a_b_c(traps)
    url = a.replace("127.0.0.1", "a.test") + "/ok"
    async with StubDNS() as dns:
        (fetched,) = await gather([url], nameservers=[dns.nameserver])
        assert fetched.ok, fetched.error
        (seen,) = traps.seen(a)
        assert seen.header("Host") == url.split("/")[2]
        connected = traps.connections()
        (denied,) = await gather([url], nameservers=[dns.nameserver], deny_private=True)
    assert denied.error is not None
    assert denied.error.kind is ErrorKind.DENIED
    assert ("a.test", "A") in dns.queries
    assert traps.connections() == connected


# ---------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    "bad",
    [
        ["-X", "GE T", "{url}", "-o", "{out}"],
        ["-H", "X-A: a\x01b", "{url}", "-o", "{out}"],
        ["-i", "{urls}", "-o", "{urls}"],
    ],
    ids=["method-not-a-token", "control-byte-in-header", "input-is-output"],
)
def test_bad_options_are_one_line_exit_two_and_fetch_nothing(
    fresh: Traps, tmp_path: Path, bad: list[str]
) -> None:
    """The real command in a subprocess: the one line on stderr is main()'s."""
    a, _, _ = a_b_c(fresh)
    urls, out = tmp_path / "urls.txt", tmp_path / "out.jsonl"
    urls.write_text(f"{a}/landing\n")
    args = [arg.format(url=f"{a}/landing", out=out, urls=urls) for arg in bad]
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "fetch", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    assert done.returncode == 2, lines[-3:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fanout: error: ")
    assert not out.exists()
    assert urls.read_text() == f"{a}/landing\n"
    assert fresh.connections() == 0


def test_backoff_is_bounded_at_any_attempt_count() -> None:
    """A server that fails forever drives the attempt count; the delay stays a number."""
    policy = RetryPolicy(attempts=10_000, backoff=0.5, backoff_max=30.0, jitter=False)
    assert policy.delay(5_000, retry_after=None) == 30.0
    assert 0.0 <= RetryPolicy(attempts=10_000).delay(5_000, retry_after=None) <= 30.0
