"""The fetch options as one value: :class:`FetcherConfig`.

Every entry point takes it: ``Fetcher(config)``, ``fanout.fetch(urls, config)``,
and the ``fetch`` and ``aggregate`` commands build one from their options
(:func:`fanout.cli.options.fetcher_config`). An option is added here, once, and
reaches all four. Keyword options given beside a config override its fields.

>>> from dataclasses import replace
>>> config = FetcherConfig(limits=Limits(concurrency=8), user_agent="bot/1")
>>> replace(config, keep_body=False).keep_body
False
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypedDict

from fanout._version import __version__
from fanout.errors import ConfigError
from fanout.httpsyntax import headers_problem, value_problem
from fanout.net.tls import StrPath, tls_context
from fanout.net.transports import ENVIRONMENT, TRANSPORTS, TransportName
from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

__all__ = ["DEFAULT_USER_AGENT", "FetcherConfig", "FetcherOptions"]

DEFAULT_USER_AGENT: Final = f"fanout/{__version__}"
_CREDENTIALS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})

# A field given as None means its default: the policies take None as they always have.
_POLICY_DEFAULTS: Final = {
    "limits": Limits,
    "retry": RetryPolicy,
    "timeouts": Timeouts,
    "caps": Caps,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FetcherConfig:
    """Everything a :class:`~fanout.Fetcher` is told, checked once, here: a bad
    value raises :class:`~fanout.ConfigError` when the config is made.

    - ``limits``, ``retry``, ``timeouts``, ``caps``: the policies
      (:mod:`fanout.policy`); None is the default policy.
    - ``headers`` (None: none): sent with every request (Authorization, Proxy-Authorization
      and Cookie only to the request's own origin: see ``docs/security.md``); a
      User-Agent among them, in any case, is sent instead of ``user_agent``.
      Kept as a read-only copy.
    - ``keep_body=False`` drops bodies after hashing them (``Result.body`` is
      then None); ``seed`` fixes the retry jitter.
    - ``tune_collector=True`` raises the garbage collector's first threshold
      while the fetcher is open (see :func:`fanout.runtime.tune_collector`).
    - The guard (:mod:`fanout.net.guard`): ``deny_private``, ``allow_hosts``,
      ``deny_hosts`` (host name globs and networks; kept as tuples).
    - ``nameservers`` ("IP" or "IP:PORT") replace the system's DNS servers;
      kept in the form c-ares takes.
    - ``host_errors``: consecutive connection failures to a host before its
      other requests fail at once as ``host_down``; ``0`` never.
    - TLS (:mod:`fanout.net.tls`), with curl's meanings: ``cacert``, a PEM file of
      the CAs to trust instead of the system's (``--cacert``);
      ``verify=False`` checks no certificate (``--insecure``: a warning is
      logged once per Fetcher); ``client_cert``, a (certificate file, key
      file) pair to present (``--cert``/``--key``; one file holding both
      may be given twice). The files are read, and checked, here.
    - Proxies and cookies (:mod:`fanout.net.proxy`, :mod:`fanout.net.cookies`):
      ``proxy``, an ``http://`` or ``https://`` proxy URL (credentials in it
      go to the proxy only) that every request goes through (``--proxy``);
      ``env_proxy=False`` ignores ``http_proxy``/``https_proxy``/``no_proxy``
      in the environment, which are read when a Fetcher is made (a given
      ``proxy`` wins over them). A proxy cannot be combined with the guard's
      address checks (``deny_private``, networks in the host patterns): the
      proxy connects, not fanout. ``cookies=True`` keeps cookies, per origin
      (``--cookies``).
    - ``robots=True`` obeys each host's robots.txt (``--robots``; see
      :mod:`fanout.engine.robots`): a URL it disallows is a ``robots`` result,
      never sent, and its ``Crawl-delay``/``Request-rate`` paces the host.
      Off by default: fanout fetches the URLs it is given, as curl and wget do.
    - ``server_hints`` (on by default): a host whose server advertises its
      quota (``RateLimit``/``RateLimit-Policy``, ``X-RateLimit-*``) is paced
      by it: with none left, it waits for the reset (at most
      ``retry.retry_after_max``) before its next request
      (``--no-server-hints`` turns it off).
    - ``adapt`` (on by default): a host that answers 429 or 503 without
      Retry-After, or times out, has its rate and concurrency cut, then raised
      again as it answers, up to ``limits.per_host_rate`` and
      ``limits.per_host`` (see :mod:`fanout.engine.adapt`; ``--no-adapt``
      turns it off).
    - ``transport``: ``"aiohttp"`` (the default) or ``"curl"`` (libcurl through
      pycurl, the ``fanout[curl]`` extra; ``--transport``). When not given,
      the environment's ``FANOUT_TRANSPORT`` names it. The curl transport
      refuses ``session=`` in a Fetcher (the session's own connector and jar
      would be bypassed).
    - ``http2=True`` (``--http2``; curl transport only): HTTP/2, prior
      knowledge for http:// (the server must speak cleartext HTTP/2) and ALPN
      for https:// (HTTP/1.1 when the server does not offer h2). A host's
      requests share one connection, each a stream; ``limits.per_host``
      counts streams.

    Change one with :func:`dataclasses.replace`, which checks the result again.
    """

    limits: Limits = field(default_factory=Limits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    caps: Caps = field(default_factory=Caps)
    headers: Mapping[str, str] | None = field(default_factory=dict)
    user_agent: str = DEFAULT_USER_AGENT
    keep_body: bool = True
    seed: int | None = None
    tune_collector: bool = False
    deny_private: bool = False
    allow_hosts: Iterable[str] | None = None
    deny_hosts: Iterable[str] = ()
    nameservers: Iterable[str] | None = None
    host_errors: int = 5
    cacert: StrPath | None = None
    verify: bool = True
    client_cert: tuple[StrPath, StrPath] | None = None
    # repr=False: a proxy URL may hold credentials
    proxy: str | None = field(default=None, repr=False)
    env_proxy: bool = True
    cookies: bool = False
    robots: bool = False
    server_hints: bool = True
    adapt: bool = True
    transport: TransportName = field(default_factory=lambda: _environment_transport())
    http2: bool = False

    def __post_init__(self) -> None:
        from fanout.net.guard import HostGuard
        from fanout.net.nameservers import parse_nameservers

        for name, default in _POLICY_DEFAULTS.items():
            value = getattr(self, name)
            if value is None:
                self._set(name, default())
            elif not isinstance(value, default):
                raise ConfigError(
                    f"{name} must be a {default.__name__}, got {type(value).__name__}"
                )
        for name in (
            "keep_body",
            "tune_collector",
            "deny_private",
            "env_proxy",
            "cookies",
            "robots",
            "server_hints",
            "adapt",
            "http2",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer or None, got {self.seed!r}")
        for name in ("allow_hosts", "deny_hosts"):
            value = getattr(self, name)
            if not isinstance(value, Iterable) and (name == "deny_hosts" or value is not None):
                raise ConfigError(f"{name} must be a list of patterns, got {type(value).__name__}")
        if self.cacert is not None and not isinstance(self.cacert, str | os.PathLike):
            raise ConfigError(f"cacert must be a file path, got {type(self.cacert).__name__}")
        headers = self.headers
        problem = None if headers is None else headers_problem(headers)
        problem = problem or value_problem("user_agent", self.user_agent)
        if problem is not None:
            raise ConfigError(problem)
        self._set("headers", MappingProxyType(dict(headers or {})))
        host_errors = self.host_errors
        if isinstance(host_errors, bool) or not isinstance(host_errors, int) or host_errors < 0:
            raise ConfigError(f"host_errors must be an integer >= 0, got {host_errors!r}")
        # Tuples: a generator given is read once, and the value can be compared.
        # A string is left for HostGuard to refuse (as a tuple, each character
        # would be a pattern).
        if self.allow_hosts is not None and not isinstance(self.allow_hosts, str):
            self._set("allow_hosts", tuple(self.allow_hosts))
        if not isinstance(self.deny_hosts, str):
            self._set("deny_hosts", tuple(self.deny_hosts))
        # made again by the Fetcher; here it checks the patterns
        HostGuard(
            deny_private=self.deny_private, allow_hosts=self.allow_hosts, deny_hosts=self.deny_hosts
        )
        if self.nameservers is not None:
            self._set("nameservers", tuple(parse_nameservers(self.nameservers)))
        if self.client_cert is not None and not isinstance(self.client_cert, str | os.PathLike):
            self._set("client_cert", tuple(self.client_cert))
        tls_context(cacert=self.cacert, verify=self.verify, client_cert=self.client_cert)
        if self.proxy is not None:  # the environment is read by each Fetcher, not here
            from fanout.net.proxy import proxies_for

            proxies_for(self)
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be 'aiohttp' or 'curl', got {self.transport!r}")
        if self.transport == "curl":
            _check_curl()
        elif self.http2:
            raise ConfigError(
                "--http2 needs --transport curl (http2=True needs transport 'curl'):"
                " aiohttp speaks HTTP/1.1 only"
            )

    def __repr__(self) -> str:
        # As dataclass's, without the values of credential headers (nor the proxy).
        shown = []
        for option in dataclasses.fields(self):
            if option.repr:
                value = getattr(self, option.name)
                if option.name == "headers" and value is not None:
                    value = {
                        name: "***" if name.lower() in _CREDENTIALS else header
                        for name, header in value.items()
                    }
                shown.append(f"{option.name}={value!r}")
        return f"FetcherConfig({', '.join(shown)})"

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)


_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(FetcherConfig))


def _environment_transport() -> TransportName:
    """The transport ``FANOUT_TRANSPORT`` names, else aiohttp."""
    value = os.environ.get(ENVIRONMENT, "").strip().lower()
    if not value:
        return "aiohttp"
    if value == "curl":
        return "curl"
    if value == "aiohttp":
        return "aiohttp"
    raise ConfigError(f"{ENVIRONMENT}={value!r}: must be 'aiohttp' or 'curl'")


def _check_curl() -> None:
    """ConfigError when the curl transport cannot run: pycurl is missing."""
    try:
        import pycurl  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"transport 'curl' needs pycurl, which cannot be imported ({exc}):"
            " pip install 'fanout[curl]'"
        ) from None


class FetcherOptions(TypedDict, total=False):
    """The keyword options of :class:`~fanout.Fetcher` and :func:`fanout.fetch`:
    the fields of :class:`FetcherConfig`. tests/test_config.py checks that the two agree."""

    limits: Limits | None
    retry: RetryPolicy | None
    timeouts: Timeouts | None
    caps: Caps | None
    headers: Mapping[str, str] | None
    user_agent: str
    keep_body: bool
    seed: int | None
    tune_collector: bool
    deny_private: bool
    allow_hosts: Iterable[str] | None
    deny_hosts: Iterable[str]
    nameservers: Iterable[str] | None
    host_errors: int
    cacert: StrPath | None
    verify: bool
    client_cert: tuple[StrPath, StrPath] | None
    proxy: str | None
    env_proxy: bool
    cookies: bool
    robots: bool
    server_hints: bool
    adapt: bool
    transport: TransportName
    http2: bool


def resolve_config(
    config: FetcherConfig | None, options: Mapping[str, Any], caller: str
) -> FetcherConfig:
    """``config`` (or the default one) with the keyword ``options`` of ``caller``
    over its fields; TypeError naming an unknown one, as Python would."""
    unknown = sorted(options.keys() - _FIELDS)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    if config is None:
        return FetcherConfig(**options)
    if not isinstance(config, FetcherConfig):
        raise TypeError(f"{caller}(): config must be a FetcherConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **options) if options else config
