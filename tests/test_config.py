"""One value holds the fetch options: FetcherConfig reaches the Fetcher, fetch(),
``fanout fetch`` and ``fanout aggregate`` alike, keyword options override it,
and an option added to it is known to every entry point."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

import fanout
import fanout.aggregation
from fanout import Caps, FetcherConfig, Limits, RetryPolicy, Timeouts
from fanout.cli import main
from fanout.config import FetcherOptions
from fanout.engine import Fetcher
from tests.tls_server import TLSFiles

# A value unlike the default for every field of FetcherConfig.
CHANGED: dict[str, Any] = {
    "limits": Limits(concurrency=7, per_host=3, rate=900.0, per_host_rate=800.0, parked=11),
    "retry": RetryPolicy(attempts=4),
    "timeouts": Timeouts(connect=9.0, read=29.0, total=119.0, dns=4.0),
    "caps": Caps(max_bytes=100_000, max_redirects=3),
    "headers": {"X-Test": "1"},
    "user_agent": "tester/1",
    "keep_body": False,
    "seed": 7,
    "tune_collector": True,
    "deny_private": True,
    "allow_hosts": ("127.0.0.1", "*.test"),
    "deny_hosts": ("10.0.0.0/8",),
    "nameservers": ("127.0.0.1:5353",),
    "host_errors": 2,
    "cacert": "{cacert}",  # the files of the tls_files fixture: see _filled
    "verify": False,
    "client_cert": ("{cert}", "{key}"),
    "proxy": "http://127.0.0.1:9",
    "env_proxy": False,
    "cookies": True,
    "robots": True,
    "server_hints": False,
    "adapt": False,
    "transport": "curl",
    "http2": True,
}

# The command-line options that give each field its CHANGED value.
CLI_ARGS: dict[str, list[str]] = {
    "limits": ["-c", "7", "--per-host", "3", "--rate", "900", "--per-host-rate", "800",
               "--parked", "11"],
    "retry": ["--retries", "3"],
    "timeouts": ["--connect-timeout", "9s", "--read-timeout", "29s", "--timeout", "119s",
                 "--dns-timeout", "4s"],
    "caps": ["--max-bytes", "100000", "--max-redirects", "3"],
    "headers": ["-H", "X-Test: 1"],
    "user_agent": ["--user-agent", "tester/1"],
    "deny_private": ["--deny-private"],
    "allow_hosts": ["--allow-host", "127.0.0.1", "--allow-host", "*.test"],
    "deny_hosts": ["--deny-host", "10.0.0.0/8"],
    "nameservers": ["--dns-server", "127.0.0.1:5353"],
    "host_errors": ["--host-errors", "2"],
    "cacert": ["--cacert", "{cacert}"],
    "verify": ["--insecure"],
    "client_cert": ["--cert", "{cert}", "--key", "{key}"],
    "proxy": ["--proxy", "http://127.0.0.1:9"],
    "env_proxy": ["--no-env-proxy"],
    "cookies": ["--cookies"],
    "robots": ["--robots"],
    "server_hints": ["--no-server-hints"],
    "adapt": ["--no-adapt"],
    "transport": ["--transport", "curl"],
    "http2": ["--http2"],
}  # fmt: skip
# cacert and verify=False exclude each other, as a proxy and the guard's address
# checks do, and the curl transport and the options it refuses: each run leaves
# one of each pair out.
LEFT_OUT = (
    ("verify", "proxy", "transport", "http2"),
    ("cacert", "deny_private", "allow_hosts", "deny_hosts", "transport", "http2"),
    ("verify", "deny_private", "allow_hosts", "deny_hosts", "nameservers", "proxy"),
)  # fmt: skip
# Fields the command line sets its own way: keep_body follows --body (fetch) or is
# always on (aggregate); a run tunes the collector for the whole process; retry
# jitter is not seeded.
NOT_OPTIONS = {"keep_body", "seed", "tune_collector"}

FIELDS = [f.name for f in dataclasses.fields(FetcherConfig)]


def test_every_field_has_a_changed_value_and_the_cli_decides_it() -> None:
    """A new field must be given a command-line option (or be named library-only)."""
    assert set(CHANGED) == set(FIELDS)
    assert set(CLI_ARGS) | NOT_OPTIONS == set(FIELDS)
    assert not set(CLI_ARGS) & NOT_OPTIONS
    for name, value in CHANGED.items():
        assert value != getattr(FetcherConfig(), name), name


def test_the_keyword_options_are_the_config_fields() -> None:
    """FetcherOptions, the type of the keyword options, agrees with the dataclass:
    the same names, the same types (the policies may also be None)."""
    options = typing.get_type_hints(FetcherOptions)
    fields = typing.get_type_hints(FetcherConfig)
    assert list(options) == FIELDS
    for name, hint in options.items():
        assert hint in (fields[name], fields[name] | None), name


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[FetcherConfig]:
    """The config of every Fetcher entered, whoever made it."""
    configs: list[FetcherConfig] = []
    enter = Fetcher.__aenter__

    async def spy(self: Fetcher) -> Fetcher:
        configs.append(self.config)
        return await enter(self)

    monkeypatch.setattr(Fetcher, "__aenter__", spy)
    return configs


def _filled(value: Any, files: TLSFiles) -> Any:
    """``value`` with the names of the TLS files in place of {cacert}, {cert}, {key}."""
    if isinstance(value, tuple | list):
        return type(value)(_filled(v, files) for v in value)
    if isinstance(value, str):
        return value.format(cacert=files.cacert, cert=files.cert, key=files.key)
    return value


def _through_fetcher(url: str, options: dict[str, Any], args: list[str]) -> FetcherConfig:
    return Fetcher(**options).config


def _through_fetch(url: str, options: dict[str, Any], args: list[str]) -> None:
    fanout.fetch([url], **options)


def _through_aggregate(url: str, options: dict[str, Any], args: list[str]) -> None:
    fanout.aggregation.aggregate([url], fields={"id": "id"}, **options)


def _through_cli(command: list[str]) -> Any:
    def run(url: str, options: dict[str, Any], args: list[str]) -> None:
        with pytest.raises(SystemExit):
            main([*command, url, *args, "--quiet"])

    return run


@pytest.mark.parametrize("left_out", LEFT_OUT)
@pytest.mark.parametrize(
    ("entry", "library"),
    [
        (_through_fetcher, True),
        (_through_fetch, True),
        (_through_aggregate, True),
        (_through_cli(["fetch"]), False),
        (_through_cli(["aggregate", "-f", "id=id"]), False),
    ],
    ids=["Fetcher", "fetch", "aggregate", "fanout-fetch", "fanout-aggregate"],
)
def test_every_option_reaches_every_entry_point(
    entry: Any,
    library: bool,
    left_out: tuple[str, ...],
    seen: list[FetcherConfig],
    server_thread: str,
    tls_files: TLSFiles,
) -> None:
    options = {n: _filled(v, tls_files) for n, v in CHANGED.items() if n not in left_out}
    args = [
        _filled(a, tls_files) for n, group in CLI_ARGS.items() if n not in left_out for a in group
    ]
    config = entry(f"{server_thread}/users", options, args)
    if config is None:
        [config] = seen
    names = [n for n in (FIELDS if library else CLI_ARGS) if n not in left_out]
    expected = FetcherConfig(**options)
    assert {n: getattr(config, n) for n in names} == {n: getattr(expected, n) for n in names}


def test_keyword_options_override_the_config() -> None:
    base = FetcherConfig(user_agent="base/1", host_errors=3)
    fetcher = Fetcher(base, host_errors=0)
    assert fetcher.config == dataclasses.replace(base, host_errors=0)
    assert Fetcher(base).config is base
    assert Fetcher().config == FetcherConfig()


def test_none_is_the_default_policy() -> None:
    config = FetcherConfig(limits=None, retry=None, timeouts=None, caps=None)  # type: ignore[arg-type]
    assert config == FetcherConfig()
    assert Fetcher(FetcherConfig(retry=RetryPolicy(attempts=1)), retry=None).retry == RetryPolicy()


def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    options: dict[str, Any] = {"limits": Limits(), "proxi": "http://127.0.0.1:1"}
    unknown = r"\(\) got an unexpected keyword argument 'proxi'$"
    with pytest.raises(TypeError, match=f"^Fetcher{unknown}"):
        Fetcher(**options)
    with pytest.raises(TypeError, match=f"^fetch{unknown}"):
        fanout.fetch(["http://127.0.0.1:9/"], **options)


def test_the_config_is_a_read_only_copy() -> None:
    headers = {"X-A": "1"}
    hosts = iter(["a.test"])
    config = FetcherConfig(headers=headers, allow_hosts=hosts, nameservers=["127.0.0.1"])
    headers["X-A"] = "2"
    assert config.headers == {"X-A": "1"}
    assert config.allow_hosts == ("a.test",)
    assert config.nameservers == ("127.0.0.1",)
    with pytest.raises(TypeError):
        config.headers["X-B"] = "3"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_the_repr_shows_no_credentials() -> None:
    """As the proxy URL is left out of the repr, credential headers' values are
    hidden: a config is logged or printed by its user."""
    secrets = {
        "Authorization": "Bearer t0k",
        "cookie": "sid=c00k",
        "Proxy-Authorization": "Basic p",
    }
    config = FetcherConfig(headers={**secrets, "X-Trace": "visible"}, proxy="http://u:pw@h:1")
    text = repr(config)
    for value in (*secrets.values(), "pw@"):
        assert value not in text
    assert "'X-Trace': 'visible'" in text
    assert "'Authorization': '***'" in text
    assert text.startswith("FetcherConfig(limits=Limits(")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"headers": {"Bad Name": "x"}}, "header name"),
        ({"user_agent": "a\nb"}, "user_agent"),
        ({"host_errors": -1}, "host_errors must be an integer >= 0"),
        ({"allow_hosts": ["bad host name!"]}, "bad host name!"),
        ({"nameservers": ["not-an-ip"]}, "nameservers:"),
        # one string is not a list of one pattern: each of its characters would be one
        ({"deny_hosts": "evil.test"}, "deny_hosts must be a list of patterns, got the string"),
        ({"allow_hosts": "good.test"}, "allow_hosts must be a list of patterns, got the string"),
        # a wrong type is refused here, not met deep in a run
        ({"limits": 5}, "limits must be a Limits, got int"),
        ({"retry": "x"}, "retry must be a RetryPolicy, got str"),
        ({"timeouts": 3.0}, "timeouts must be a Timeouts, got float"),
        ({"caps": {}}, "caps must be a Caps, got dict"),
        ({"keep_body": "no"}, "keep_body must be True or False, got 'no'"),
        ({"tune_collector": 1}, "tune_collector must be True or False"),
        ({"deny_private": "yes"}, "deny_private must be True or False"),
        ({"seed": [1]}, "seed must be an integer or None"),
        ({"allow_hosts": 5}, "allow_hosts must be a list of patterns, got int"),
        ({"deny_hosts": None}, "deny_hosts must be a list of patterns, got NoneType"),
        ({"cacert": 5}, "cacert must be a file path, got int"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_made(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(fanout.ConfigError, match=message):
        FetcherConfig(**options)
    base = FetcherConfig()
    with pytest.raises(fanout.ConfigError, match=message):
        dataclasses.replace(base, **options)
