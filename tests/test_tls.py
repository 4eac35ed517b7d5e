"""TLS options, with curl's names: ``--cacert``/``cacert=`` trusts a CA instead of
the system's, ``--insecure``/``verify=False`` checks no certificate (and says so,
once), ``--cert``/``--key``/``client_cert=`` present a client certificate. Against
an https server on loopback whose certificate a test CA made (trustme)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout import ErrorKind, Fetcher, FetcherConfig
from fanout.cli import main
from fanout.net.aiohttp_internals import IN_USE
from tests.background import in_thread
from tests.tls_server import TLSFiles, https_server

pytestmark = pytest.mark.usefixtures("transport")

# The pool's fallback (FANOUT_AIOHTTP_INTERNALS=off) closes every TLS connection
# gracefully after its request; uvloop refuses to close a loop while a close is
# under way ("Device or resource busy"), and these runs close it right after.
# A known limit of the fallback (docs/library.md), not of fanout's own pool.
patched_pool = pytest.mark.skipif(
    not IN_USE["pool"], reason="the fallback pool closes TLS gracefully (docs/library.md)"
)


async def _fetch_one(url: str, **options: Any) -> fanout.Result:
    async with Fetcher(retry=fanout.RetryPolicy(attempts=1), **options) as fetcher:
        [result] = await fetcher.gather([f"{url}/"])
    return result


async def test_an_unknown_ca_is_a_tls_failure_and_cacert_trusts_it(tls_files: TLSFiles) -> None:
    async with https_server(tls_files) as url:
        refused = await _fetch_one(url)
        trusted = await _fetch_one(url, cacert=tls_files.cacert)
        unchecked = await _fetch_one(url, verify=False)
    assert refused.error is not None
    assert refused.error.kind is ErrorKind.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error.message
    assert trusted.status == 200, trusted.error
    assert unchecked.status == 200, unchecked.error


async def test_cacert_replaces_the_system_cas(tls_files: TLSFiles, tmp_path: Path) -> None:
    """A CA file trusts its CAs only: another CA's certificate is refused."""
    from tests.tls_server import make_tls_files

    other = make_tls_files(tmp_path)
    async with https_server(tls_files) as url:
        result = await _fetch_one(url, cacert=other.cacert)
    assert result.error is not None
    assert result.error.kind is ErrorKind.TLS


async def test_a_server_that_requires_a_client_certificate(tls_files: TLSFiles) -> None:
    async with https_server(tls_files, client_cert=True) as url:
        without = await _fetch_one(url, cacert=tls_files.cacert)
        pair = await _fetch_one(
            url, cacert=tls_files.cacert, client_cert=(tls_files.cert, tls_files.key)
        )
        one_file = await _fetch_one(
            url, cacert=tls_files.cacert, client_cert=(tls_files.both, tls_files.both)
        )
    # TLS 1.3: the server refuses once the handshake is done, so the client
    # sees the connection closed before a response.
    assert without.error is not None
    assert without.status is None
    assert pair.status == 200, pair.error
    assert pair.json() == {"client": True}
    assert one_file.json() == {"client": True}


@patched_pool
def test_fetch_takes_the_tls_options(tls_files: TLSFiles) -> None:
    with in_thread(lambda: https_server(tls_files, client_cert=True)) as url:
        config = FetcherConfig(cacert=tls_files.cacert)
        [without] = fanout.fetch([f"{url}/"], config, retry=fanout.RetryPolicy(attempts=1))
        [result] = fanout.fetch([f"{url}/"], config, client_cert=(tls_files.cert, tls_files.key))
    assert without.error is not None
    assert result.json() == {"client": True}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run ``fanout ARGS`` in this process: its exit status and JSON output."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "-q", "--retries", "0"])
    out = capsys.readouterr().out
    code = exited.value.code
    assert isinstance(code, int)
    if args[0] == "aggregate":
        return code, [json.loads(out)]
    return code, [json.loads(line) for line in out.splitlines()]


@patched_pool
@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_the_commands_take_the_tls_options(
    command: str, tls_files: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["-f", "client=client", "--format", "json"] if command == "aggregate" else []

    def run(url: str, *options: str) -> tuple[int, list[dict[str, Any]]]:
        return _cli(capsys, command, f"{url}/", *extra, *options)

    cacert = ["--cacert", str(tls_files.cacert)]
    with in_thread(lambda: https_server(tls_files)) as url:
        refused, trusted, unchecked = run(url), run(url, *cacert), run(url, "--insecure")
    with in_thread(lambda: https_server(tls_files, client_cert=True)) as url:
        without = run(url, *cacert)
        pair = run(url, *cacert, "--cert", str(tls_files.cert), "--key", str(tls_files.key))
        one_file = run(url, *cacert, "--cert", str(tls_files.both))
    for code, _ in (trusted, unchecked, pair, one_file):
        assert code == 0
    if command == "fetch":
        assert refused[0] == without[0] == 1
        assert refused[1][0]["error"]["kind"] == "tls"
        assert without[1][0]["ok"] is False
        for _, records in (trusted, unchecked, pair, one_file):
            assert records[0]["status"] == 200
    else:
        assert refused[1][0]["requests"]["failed"] == {"tls": 1}
        assert without[1][0]["requests"]["ok"] == 0
        for _, report in (trusted, unchecked, pair, one_file):
            assert report[0]["requests"]["ok"] == 1


def test_insecure_says_so_once_on_stderr(tls_files: TLSFiles) -> None:
    with in_thread(lambda: https_server(tls_files)) as url:
        done = subprocess.run(
            [sys.executable, "-m", "fanout", "fetch", f"{url}/", f"{url}/?2", "--insecure", "-q"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "TLS certificates are not checked" in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cacert", "missing.pem"], "'missing.pem' does not exist"),
        (["--cert", "missing.pem"], "'missing.pem' does not exist"),
        (["--cert", "{cert}", "--key", "missing.key"], "'missing.key' does not exist"),
        (["--key", "{key}"], "--key needs --cert"),
        (["--cacert", "{notpem}"], "holds no usable CA certificates"),
        (["--cert", "{notpem}"], "holds no usable certificate and key"),
        (["--cert", "{cert}"], "holds no usable certificate and key"),  # no key in it
        (["--cacert", "{cacert}", "--insecure"], "give one or the other"),
    ],
)
@pytest.mark.parametrize("command", ["fetch", "aggregate"])
def test_bad_tls_files_are_usage_errors_naming_them(
    command: str,
    args: list[str],
    expected: str,
    tls_files: TLSFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notpem.pem").write_text("not a certificate\n")
    names = {
        "cert": str(tls_files.cert),
        "key": str(tls_files.key),
        "cacert": str(tls_files.cacert),
        "notpem": "notpem.pem",
    }
    with pytest.raises(SystemExit) as exited:
        main([command, "https://127.0.0.1:9/", *(a.format(**names) for a in args)])
    captured = capsys.readouterr()
    assert exited.value.code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"cacert": "missing.pem"}, "cacert: cannot read the CA file 'missing.pem'"),
        ({"client_cert": ("missing.pem", "{key}")}, "cannot read the certificate file"),
        ({"client_cert": ("{cert}", "missing.key")}, "cannot read the key file 'missing.key'"),
        ({"client_cert": "{cert}"}, "must be a (certificate file, key file) pair"),
        ({"cacert": "notpem.pem"}, "'notpem.pem' holds no usable CA certificates"),
        ({"client_cert": ("{cert}", "{cacert}")}, "holds no usable certificate and key"),
        ({"verify": "no"}, "verify must be True or False"),
        ({"verify": False, "cacert": "{cacert}"}, "give one or the other"),
    ],
)
def test_the_library_refuses_bad_tls_options_when_configured(
    options: dict[str, Any],
    expected: str,
    tls_files: TLSFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notpem.pem").write_text("not a certificate\n")
    names = {"cert": tls_files.cert, "key": tls_files.key, "cacert": tls_files.cacert}

    def filled(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(filled(v) for v in value)
        return value.format(**names) if isinstance(value, str) else value

    given = {name: filled(value) for name, value in options.items()}
    with pytest.raises(fanout.ConfigError) as refused:
        FetcherConfig(**given)
    assert expected in str(refused.value)
    with pytest.raises(fanout.ConfigError):
        Fetcher(**given)


def test_an_encrypted_key_is_refused_without_a_prompt(
    tls_files: TLSFiles, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """OpenSSL would ask for the passphrase on the terminal (a run waiting on
    a prompt, or a library asking its caller's user); none is asked."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(tls_files.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(fanout.ConfigError) as refused:
        FetcherConfig(client_cert=(tls_files.cert, encrypted))
    assert str(refused.value).startswith(f"client_cert: the key file '{encrypted}' is encrypted")
    assert "pass phrase" not in capfd.readouterr().err
