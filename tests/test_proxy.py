"""HTTP proxies: ``proxy=``/``--proxy``, and ``http_proxy``/``https_proxy``/
``no_proxy`` from the environment unless ``env_proxy=False``/``--no-env-proxy``.
Through a real forward proxy on loopback (tests/forward_proxy.py), to an http
target and to an https one (trustme's CA, ``cacert``) through CONNECT."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import fanout
from fanout import ConfigError, ErrorKind, Fetcher, FetcherConfig, Request
from fanout.cli import main
from fanout.output.records import result_record
from tests.background import in_thread
from tests.forward_proxy import ForwardProxy, forward_proxy
from tests.loopback import serving
from tests.tls_server import TLSFiles

SECRET = "pr0xy-s3cret"
# what the forward proxy requires for user "bob" and SECRET
BOB = aiohttp.encode_basic_auth("bob", SECRET)
ONCE = fanout.RetryPolicy(attempts=1)
pytestmark = pytest.mark.usefixtures("transport")


class Target:
    """A loopback server that answers ``/`` with the headers it was sent, and
    keeps them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.url = ""

    async def hello(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.seen.append(headers)
        if "to" in request.query:
            raise web.HTTPSeeOther(request.query["to"])
        return web.json_response({"path": request.path})


@contextlib.asynccontextmanager
async def target_server(tls: TLSFiles | None = None) -> AsyncIterator[Target]:
    """An http target, or an https one with a certificate of the test CA."""
    import ssl

    target = Target()
    app = web.Application()
    app.router.add_get("/{tail:.*}", target.hello)
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.server.configure_cert(context)
    async with serving(app, tls=context) as target.url:
        yield target


def _with_credentials(url: str, user: str = "bob", password: str = SECRET) -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _get(url: str, **options: Any) -> fanout.Result:
    options.setdefault("retry", ONCE)
    async with Fetcher(**options) as fetcher:
        [result] = await fetcher.gather([url])
    return result


def _no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text)
        assert "Ym9iOnByMHh5LXMzY3JldA" not in str(text)  # base64 of bob:SECRET


# ----------------------------------------------------------------- library


@pytest.mark.parametrize("https", [False, True])
async def test_requests_go_through_the_proxy(https: bool, tls_files: TLSFiles) -> None:
    """http: the request in absolute form; https: a CONNECT tunnel, TLS inside it."""
    tls = tls_files if https else None
    async with target_server(tls) as target, forward_proxy() as proxy:
        result = await _get(f"{target.url}/a", proxy=proxy.url, cacert=tls_files.cacert)
    assert result.status == 200, result.error
    assert result.json() == {"path": "/a"}
    [seen] = proxy.seen
    authority = target.url.split("://", 1)[1]
    if https:
        assert (seen.method, seen.target) == ("CONNECT", authority)
    else:
        assert (seen.method, seen.target) == ("GET", f"{target.url}/a")
    assert len(target.seen) == 1


@pytest.mark.parametrize("https", [False, True])
async def test_an_https_proxy_is_verified_with_the_cacert_given(
    https: bool, tls_files: TLSFiles
) -> None:
    """TLS to the proxy itself: its certificate is checked against ``cacert``
    (a proxy the CA did not sign is a ``proxy`` error), as the target's is."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_files.server.configure_cert(context)
    tls = tls_files if https else None
    async with target_server(tls) as target, forward_proxy(tls=context) as proxy:
        assert proxy.url.startswith("https://")
        result = await _get(f"{target.url}/a", proxy=proxy.url, cacert=tls_files.cacert)
        unknown = await _get(f"{target.url}/b", proxy=proxy.url)  # the system's CAs
    assert result.status == 200, result.error
    assert result.json() == {"path": "/a"}
    assert len(proxy.seen) == 1
    assert unknown.error is not None
    assert unknown.error.kind is ErrorKind.PROXY, unknown.error
    assert unknown.error.message.startswith(f"cannot connect to the proxy {proxy.url}: ")
    assert len(target.seen) == 1


@pytest.mark.parametrize("https", [False, True])
async def test_proxy_credentials_go_to_the_proxy_only(https: bool, tls_files: TLSFiles) -> None:
    tls = tls_files if https else None
    async with target_server(tls) as target, forward_proxy(authorization=BOB) as proxy:
        given = _with_credentials(proxy.url)
        result = await _get(f"{target.url}/", proxy=given, cacert=tls_files.cacert)
    assert result.status == 200, result.error
    assert proxy.seen[0].headers["proxy-authorization"] == BOB
    [headers] = target.seen
    assert "proxy-authorization" not in headers
    _no_secret(headers, result_record(result), repr(FetcherConfig(proxy=given)))


@pytest.mark.parametrize("name", ["Proxy-Authorization", "proxy-authorization"])
async def test_the_proxy_urls_credentials_replace_a_given_proxy_authorization(name: str) -> None:
    """One Proxy-Authorization reaches the proxy, its own URL's, whatever the
    case of one among the headers given (two would be ambiguous to a proxy)."""
    async with target_server() as target, forward_proxy(authorization=BOB) as proxy:
        given = _with_credentials(proxy.url)
        other = {name: "Basic b3RoZXI6eA=="}
        async with Fetcher(proxy=given, headers=other, retry=ONCE) as fetcher:
            results = await fetcher.gather(
                [f"{target.url}/a", Request(f"{target.url}/b", headers=other)]
            )
    assert [r.status for r in results] == [200, 200], [r.error for r in results]
    for seen in proxy.seen:
        assert seen.names.count("proxy-authorization") == 1
        assert seen.headers["proxy-authorization"] == BOB


async def test_redirect_hops_go_through_the_proxy_with_its_credentials() -> None:
    """Each hop is its own request to the proxy, with the proxy's credentials,
    also the hop to another origin (where the request's own credentials are
    dropped); no target sees them."""
    async with (
        target_server() as first,
        target_server() as second,
        forward_proxy(authorization=BOB) as proxy,
    ):
        url = f"{first.url}/go?to={second.url}/landed"
        request = fanout.Request(url, headers={"Authorization": "Bearer t0ken"})
        async with Fetcher(proxy=_with_credentials(proxy.url), retry=ONCE) as fetcher:
            [result] = await fetcher.gather([request])
    assert result.status == 200, result.error
    assert result.json() == {"path": "/landed"}
    assert [seen.target for seen in proxy.seen] == [url, f"{second.url}/landed"]
    assert all(seen.headers["proxy-authorization"] == BOB for seen in proxy.seen)
    assert first.seen[0]["authorization"] == "Bearer t0ken"
    assert "authorization" not in second.seen[0]
    for headers in (*first.seen, *second.seen):
        assert "proxy-authorization" not in headers


async def test_a_cookie_in_the_proxys_answer_to_connect_is_not_the_targets(
    tls_files: TLSFiles,
) -> None:
    """A Set-Cookie in the proxy's answer to CONNECT (a refusal here) is the
    proxy's, not the https origin's: it never reaches the jar, nor the target."""
    async with target_server(tls_files) as target, forward_proxy(connect_status=403) as proxy:
        proxy.connect_headers = "Set-Cookie: planted=by-the-proxy\r\n"
        options: dict[str, Any] = {"cacert": tls_files.cacert, "cookies": True, "retry": ONCE}
        async with Fetcher(proxy=proxy.url, **options) as fetcher:
            [refused] = await fetcher.gather([f"{target.url}/"])
            proxy.connect_status = None
            [result] = await fetcher.gather([f"{target.url}/"])
    assert refused.error is not None
    assert refused.error.kind is ErrorKind.PROXY
    assert result.status == 200, result.error
    [headers] = target.seen
    assert "planted" not in headers.get("cookie", "")


async def test_robots_txt_goes_through_the_proxy_too() -> None:
    async with target_server() as target, forward_proxy() as proxy:
        result = await _get(f"{target.url}/a", proxy=proxy.url, robots=True)
    assert result.status == 200, result.error
    assert [seen.target for seen in proxy.seen] == [f"{target.url}/robots.txt", f"{target.url}/a"]
    assert len(target.seen) == 2


@pytest.mark.parametrize("https", [False, True])
async def test_a_proxy_refusal_is_a_proxy_error_not_retried(
    https: bool, tls_files: TLSFiles
) -> None:
    """A 407 (to the request in absolute form, or to CONNECT) names the proxy,
    without the credentials that were refused, and is final."""
    tls = tls_files if https else None
    async with target_server(tls) as target, forward_proxy(authorization=BOB) as proxy:
        wrong = _with_credentials(proxy.url, password=f"not-{SECRET}")
        retries = fanout.RetryPolicy(attempts=3, backoff=0.001)
        result = await _get(f"{target.url}/", proxy=wrong, cacert=tls_files.cacert, retry=retries)
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROXY
    assert f"the proxy {proxy.url} refused" in result.error.message
    assert "407" in result.error.message
    assert result.attempts == 1
    assert target.seen == []
    _no_secret(result_record(result))


async def test_a_connect_refused_by_the_proxy_is_a_proxy_error(tls_files: TLSFiles) -> None:
    async with target_server(tls_files) as target, forward_proxy(connect_status=502) as proxy:
        result = await _get(f"{target.url}/", proxy=proxy.url, cacert=tls_files.cacert)
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROXY
    assert result.error.message == f"the proxy {proxy.url} refused the tunnel: HTTP 502 Refused"


@contextlib.asynccontextmanager
async def _answering(answer: bytes) -> AsyncIterator[str]:
    """A loopback "proxy" that answers every request with ``answer`` and closes."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("answer", [b"NOT HTTP\r\n\r\n", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 9000])
async def test_a_malformed_answer_to_connect_is_a_proxy_error(answer: bytes) -> None:
    """A proxy that answers CONNECT with no HTTP response: a ``proxy`` error
    naming it (not the target's ``protocol`` one), not tried again, as any
    answer of the proxy's."""
    retries = fanout.RetryPolicy(attempts=2, backoff=0.001)
    async with _answering(answer) as proxy:
        post = fanout.Request("https://target.test/", method="POST", body=b"x")
        async with Fetcher(proxy=_with_credentials(proxy), retry=retries) as fetcher:
            [result] = await fetcher.gather([post])
    assert result.error is not None
    assert result.error.kind is ErrorKind.PROXY
    assert result.error.message.startswith(f"the proxy {proxy} sent a malformed answer to CONNECT")
    assert result.attempts == 1
    _no_secret(result_record(result))


async def test_a_proxy_down_fails_each_request_and_the_run_goes_on() -> None:
    """A proxy that cannot be reached: each request a ``proxy`` error naming it
    (tried again, as a connection failure is), and no host marked down."""
    down = f"http://127.0.0.1:{_closed_port()}"
    retries = fanout.RetryPolicy(attempts=2, backoff=0.001)
    async with target_server() as target:
        urls = [f"{target.url}/{n}" for n in range(3)]
        async with Fetcher(proxy=_with_credentials(down), retry=retries, host_errors=1) as fetcher:
            results = await fetcher.gather(urls)
    for result in results:
        assert result.error is not None
        assert result.error.kind is ErrorKind.PROXY
        assert result.error.message.startswith(f"cannot connect to the proxy {down}: ")
        assert result.attempts == 2
        _no_secret(result_record(result))
    assert target.seen == []


async def test_the_environment_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with target_server() as target, forward_proxy() as proxy:
        url = f"{target.url}/"
        monkeypatch.setenv("http_proxy", proxy.url)
        through = await _get(url)
        assert len(proxy.seen) == 1
        ignored = await _get(url, env_proxy=False)
        for no_proxy in ("127.0.0.1", "localhost,127.0.0.0/8", "*"):
            monkeypatch.setenv("NO_PROXY", no_proxy)
            await _get(url)
        assert len(proxy.seen) == 1  # none of them went through it
        monkeypatch.setenv("NO_PROXY", "example.com,10.0.0.0/8")
        await _get(url)
        assert len(proxy.seen) == 2
        # an https proxy only is not used for an http target
        monkeypatch.delenv("http_proxy")
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
        direct = await _get(url)
    assert len(proxy.seen) == 2
    for result in (through, ignored, direct):
        assert result.status == 200, result.error
    assert len(target.seen) == 7


async def test_no_proxy_names_an_address_with_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """``no_proxy=127.0.0.1:PORT`` sends that port direct, as ``name:PORT`` does
    for a name; another port still goes through the proxy."""
    async with target_server() as target, forward_proxy() as proxy:
        url = f"{target.url}/"
        port = URL(url).port
        assert port is not None
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", f"example.com,127.0.0.1:{port}")
        direct = await _get(url)
        assert proxy.seen == []
        monkeypatch.setenv("no_proxy", f"127.0.0.1:{port + 1},[::1]:{port}")
        through = await _get(url)
    assert [seen.target for seen in proxy.seen] == [url]
    assert (direct.status, through.status) == (200, 200)


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("example.com.", "http://example.com/", True),  # a trailing dot, as curl
        ("example.com.", "http://www.example.com./", True),
        (".example.com.", "http://www.example.com/", True),
        ("example.com", "http://EXAMPLE.COM./", True),
        ("example.com.", "http://badexample.com/", False),
        (".", "http://example.com/", False),
    ],
)
def test_no_proxy_names_with_a_trailing_dot(no_proxy: str, url: str, direct: bool) -> None:
    from fanout.net.proxy import Proxies, parse_proxy
    from fanout.urls import host_key

    proxy = parse_proxy("http://127.0.0.1:3128", "proxy")
    proxies = Proxies(None, {"http": proxy}, {"no": no_proxy})
    assert (proxies.for_target(host_key(URL(url))) is None) is direct


async def test_a_given_proxy_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("no_proxy", "*")
    async with target_server() as target, forward_proxy() as proxy:
        result = await _get(f"{target.url}/", proxy=proxy.url)
    assert result.status == 200, result.error
    assert len(proxy.seen) == 1


@pytest.mark.parametrize(
    ("given", "shown", "authorization"),
    [
        ("http://[::1]:3128", "http://[::1]:3128", None),
        ("proxy.example:3128", "http://proxy.example:3128", None),  # http://, as curl
        ("https://bob:p%40ss@proxy.example/", "https://proxy.example", "Ym9iOnBAc3M="),
    ],
)
def test_proxy_urls(given: str, shown: str, authorization: str | None) -> None:
    from fanout.net.proxy import parse_proxy

    proxy = parse_proxy(given, "proxy")
    assert proxy.shown == shown
    assert str(proxy.options["proxy"]).rstrip("/") == shown  # no credentials for aiohttp
    headers = proxy.options["proxy_headers"]
    assert (headers and headers["Proxy-Authorization"]) == (
        authorization and f"Basic {authorization}"
    )


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        ("socks5://bob:pw-x@127.0.0.1:1080", "only http:// and https:// proxies"),
        ("http://", "not a valid proxy URL|no host"),
        ("http://127.0.0.1:3128/path", "a scheme, a host and a port only"),
        ("http://127.0.0.1:99999", "not a valid proxy URL"),
        ("http://bo%3Ab:pw-x@127.0.0.1:3128", "user name with ':'"),  # no Basic auth for it
    ],
)
def test_a_bad_proxy_url_is_a_config_error(proxy: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as raised:
        FetcherConfig(proxy=proxy)
    assert "pw-x" not in str(raised.value)
    assert str(raised.value).startswith("proxy: ")


def test_a_bad_proxy_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match=r"^HTTPS_PROXY: only .*; --no-env-proxy \(env_proxy"):
        Fetcher()
    Fetcher(env_proxy=False)


def test_a_proxy_with_the_address_guard_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^deny_private cannot be combined with proxy"):
        FetcherConfig(proxy="http://127.0.0.1:3128", deny_private=True)
    with pytest.raises(ConfigError, match=r"^networks in allow_hosts cannot"):
        Fetcher(proxy="http://127.0.0.1:3128", allow_hosts=["10.0.0.0/8"])
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
    config = FetcherConfig(deny_hosts=["127.0.0.0/8"])  # the environment is read by Fetcher
    with pytest.raises(ConfigError, match=r"environment \(https_proxy\): .*; --no-env-proxy"):
        Fetcher(config)
    Fetcher(config, env_proxy=False)


async def test_name_patterns_still_hold_through_a_proxy() -> None:
    """Host name patterns are checked on names, before the proxy is asked; the
    proxy's own address is not checked against them."""
    async with target_server() as target, forward_proxy() as proxy:
        options = FetcherConfig(proxy=proxy.url, deny_hosts=["*.blocked.test"], retry=ONCE)
        async with Fetcher(options) as fetcher:
            allowed, denied = await fetcher.gather([f"{target.url}/", "http://www.blocked.test/"])
    assert allowed.status == 200, allowed.error
    assert denied.error is not None
    assert denied.error.kind is ErrorKind.DENIED
    assert len(proxy.seen) == 1


async def test_the_proxy_resolves_the_names_and_is_not_checked_against_the_patterns() -> None:
    """Only ``app.test`` is allowed, a name fanout cannot resolve: the proxy
    does, and the proxy's own name (localhost) is not held to the pattern."""
    async with target_server() as target, forward_proxy(hosts={"app.test": "127.0.0.1"}) as proxy:
        port = target.url.rsplit(":", 1)[1]
        via = proxy.url.replace("127.0.0.1", "localhost")
        result = await _get(f"http://app.test:{port}/", proxy=via, allow_hosts=["app.test"])
    assert result.status == 200, result.error
    assert proxy.seen[0].target == f"http://app.test:{port}/"


@pytest.mark.aiohttp_only("a session is aiohttp's")
async def test_a_session_given_keeps_its_own_proxies() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="session= cannot be combined with proxy"):
            Fetcher(session=session, proxy="http://127.0.0.1:3128")


def test_fetch_takes_the_proxy() -> None:
    with in_thread(target_server) as target, in_thread(forward_proxy) as proxy:
        [result] = fanout.fetch([f"{target.url}/"], proxy=proxy.url)
    assert result.status == 200, result.error
    assert len(proxy.seen) == 1


# --------------------------------------------------------------------- CLI


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([*args])
    code = exited.value.code
    assert isinstance(code, int)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def _servers(**proxy_options: Any) -> Iterator[tuple[Target, ForwardProxy]]:
    with (
        in_thread(target_server) as target,
        in_thread(lambda: forward_proxy(**proxy_options)) as proxy,
    ):
        yield target, proxy


@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_the_commands_take_proxy_and_keep_its_credentials_out(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stats = tmp_path / "stats.json"
    extra = ["-f", "path=path", "--format", "json"] if command == "aggregate" else []
    if command == "fetch":
        extra = ["--stats-json", str(stats), "--body", "json"]
    with _servers(authorization=BOB) as (target, proxy):
        given = _with_credentials(proxy.url)
        code, out, err = _cli(
            capsys, "--debug", command, f"{target.url}/x", "--proxy", given, "-q", *extra
        )
    assert code == 0, err
    assert proxy.seen[0].headers["proxy-authorization"] == BOB
    assert "proxy-authorization" not in target.seen[0]
    if command == "fetch":
        assert json.loads(out)["status"] == 200
        _no_secret(stats.read_text())
    else:
        assert json.loads(out)["requests"]["ok"] == 1
    _no_secret(out, err)


def test_a_proxy_down_is_a_record_per_request_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down = _with_credentials(f"http://127.0.0.1:{_closed_port()}")
    with in_thread(target_server) as target:
        code, out, err = _cli(
            capsys,
            "--debug",
            "fetch",
            f"{target.url}/1",
            f"{target.url}/2",
            "--proxy",
            down,
            "--retries",
            "0",
            "-q",
        )
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["error"]["kind"] for r in records] == ["proxy", "proxy"]
    assert "cannot connect to the proxy http://127.0.0.1:" in records[0]["error"]["message"]
    _no_secret(out, err)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--proxy", "socks5://bob:pw-x@127.0.0.1:1"], {}, "proxy: only http:// and https://"),
        (["--deny-private"], {"HTTP_PROXY": "http://127.0.0.1:1"}, "--no-env-proxy"),
        (["--proxy", "http://127.0.0.1:1", "--allow-host", "10.0.0.0/8"], {}, "--proxy"),
        ([], {"https_proxy": "ftp://127.0.0.1:1"}, "https_proxy: only http:// and https://"),
        ([], {"http_proxy": "http://b%3A:pw-x@127.0.0.1:1"}, "http_proxy: a user name with ':'"),
    ],
)
@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_bad_proxy_settings_are_usage_errors(
    command: str,
    args: list[str],
    env: dict[str, str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = ["-f", "a=a"] if command == "aggregate" else []
    code, out, err = _cli(capsys, command, "http://127.0.0.1:1/", *extra, *args)
    assert code == 2
    assert expected in err
    assert f"see 'fanout {command} --help'" in err  # refused before the run
    assert "pw-x" not in err
    assert "Traceback" not in err
    assert out == ""


def test_no_env_proxy_lets_the_guard_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    code, out, _ = _cli(
        capsys, "fetch", "http://127.0.0.1:1/", "--deny-private", "--no-env-proxy", "-q"
    )
    assert code == 1
    assert json.loads(out)["error"]["kind"] == "denied"


def test_the_commands_read_the_environment_unless_told_not_to(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with _servers() as (target, proxy):
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        url = f"{target.url}/x"
        through = _cli(capsys, "fetch", url, "-q")
        direct = _cli(capsys, "fetch", url, "-q", "--no-env-proxy")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        bypassed = _cli(capsys, "aggregate", url, "-f", "path=path", "--format", "json")
    assert [code for code, _, _ in (through, direct, bypassed)] == [0, 0, 0]
    assert [seen.target for seen in proxy.seen] == [url]
    assert len(target.seen) == 3
