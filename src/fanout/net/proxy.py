"""HTTP proxies: which one, if any, each target (scheme, host, port) goes through.

A proxy is given (``FetcherConfig.proxy``, ``--proxy``) or read from the
environment as curl and urllib read it (``env_proxy``, on by default;
``--no-env-proxy`` turns it off): ``http_proxy`` for http targets,
``https_proxy`` for https ones (either case; the lower-case one wins, and
``HTTP_PROXY`` is ignored under CGI), and ``no_proxy``, the hosts that go
direct: ``*`` for all, a name that also covers its subdomains (a leading dot
is ignored), an IP address or a network (``10.0.0.0/8``); a name or an
address may end with a port (``127.0.0.1:8080``, ``[::1]:8080``). A given proxy
wins over the environment (and over ``no_proxy``). ``ALL_PROXY`` is not read.
aiohttp's ``trust_env`` is not used: it would also read ``~/.netrc`` and send
the credentials it holds.

The proxy's own credentials (``http://user:pw@proxy:3128``) become a
``Proxy-Authorization`` header that aiohttp sends to the proxy only: on the
request in absolute form for an http target, on the CONNECT for an https one.
They are taken out of the URL handed to aiohttp, so no message of aiohttp's
can quote them; :attr:`Proxy.shown` names the proxy in fanout's own.

>>> proxy = parse_proxy("http://bob:s3cret@127.0.0.1:3128", "proxy")
>>> proxy.shown, dict(proxy.options["proxy_headers"])
('http://127.0.0.1:3128', {'Proxy-Authorization': 'Basic Ym9iOnMzY3JldA=='})
>>> parse_proxy("socks5://127.0.0.1:1080", "proxy")
Traceback (most recent call last):
fanout.errors.ConfigError: proxy: only http:// and https:// proxies are supported, got 'socks5://127.0.0.1:1080'
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from yarl import URL

from fanout.errors import ConfigError
from fanout.safetext import shown

if TYPE_CHECKING:
    from fanout.config import FetcherConfig
    from fanout.urls import HostKey

__all__ = ["ENV_HINT", "Proxies", "Proxy", "parse_proxy", "proxies_for"]

ENV_HINT: Final = "; --no-env-proxy (env_proxy=False) ignores the environment"


class Proxy:
    """One proxy: the request options that send a request through it
    (``proxy`` without credentials, ``proxy_headers`` with them) and how
    messages name it (``shown``, no credentials)."""

    __slots__ = ("authorization", "host", "options", "port", "shown")

    def __init__(self, url: URL, authorization: str | None) -> None:
        headers = None if authorization is None else {"Proxy-Authorization": authorization}
        self.options: Mapping[str, Any] = MappingProxyType({"proxy": url, "proxy_headers": headers})
        self.authorization = authorization
        self.host = url.raw_host or ""
        self.port = url.port
        self.shown = str(url).rstrip("/")

    def __repr__(self) -> str:
        return f"Proxy({self.shown!r})"

    def apply(self, options: Mapping[str, Any], url: URL) -> dict[str, Any]:
        """Request ``options`` for ``url`` through this proxy. aiohttp sends
        ``proxy_headers`` on a CONNECT only: a request in absolute form (an
        http target), which the proxy reads itself, carries the credentials
        among its own headers (a proxy takes them off before forwarding)."""
        applied = {**options, **self.options}
        if self.authorization is not None and url.scheme == "http":
            headers = dict(applied.get("headers") or {})
            headers["Proxy-Authorization"] = self.authorization
            applied["headers"] = headers
        return applied


def parse_proxy(text: str, source: str, hint: str = "") -> Proxy:
    """The proxy a URL names (a URL without a scheme is an http one, as curl
    takes it); ConfigError naming ``source`` (the option or the variable) when
    it is not an http or https proxy with a host, ``hint`` after the reason.
    Messages hide credentials."""
    from fanout.urls import redact_url

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"{source}: {reason}, got {shown(redact_url(text), 200)!r}{hint}")

    if not isinstance(text, str):
        raise ConfigError(f"{source} must be a URL string, got {type(text).__name__}")
    raw = text.strip()
    if "://" not in raw:
        raw = f"http://{raw}"
    try:
        url = URL(raw)
        host, port = url.raw_host, url.port
    except (ValueError, TypeError):
        raise refuse("not a valid proxy URL") from None
    if url.scheme not in ("http", "https"):
        raise refuse("only http:// and https:// proxies are supported")
    if not host:
        raise refuse("the proxy URL has no host")
    if url.raw_path not in ("", "/") or url.raw_query_string or url.raw_fragment:
        raise refuse("a proxy URL is a scheme, a host and a port only")
    if port == 0:
        raise refuse("port 0 cannot be connected to")
    authorization = None
    if url.user is not None or url.password is not None:
        if ":" in (url.user or ""):
            raise refuse("a user name with ':' cannot be sent in Basic authentication")
        authorization = aiohttp.encode_basic_auth(url.user or "", url.password or "")
    bare = url.with_user(None)  # the password goes too
    return Proxy(bare, authorization)


class Proxies:
    """The proxy of each target: ``given`` for every one, else the
    environment's ``http``/``https`` proxy unless ``no_proxy`` names the host.
    Asked once per target host (the engine keeps the answer with the host's
    state), so the per-request path pays nothing for it."""

    __slots__ = ("_by_scheme", "_given", "_no_proxy")

    def __init__(
        self,
        given: Proxy | None,
        by_scheme: Mapping[str, Proxy] | None = None,
        no_proxy: Mapping[str, str] | None = None,
    ) -> None:
        self._given = given
        self._by_scheme = dict(by_scheme or {})
        self._no_proxy = dict(no_proxy or {})

    @property
    def from_environment(self) -> bool:
        """Whether some target may go through a proxy the environment named."""
        return self._given is None and bool(self._by_scheme)

    def for_target(self, key: HostKey) -> Proxy | None:
        """The proxy a request to ``key`` goes through, or None: direct."""
        if self._given is not None:
            return self._given
        scheme, host, port = key
        proxy = self._by_scheme.get(scheme)
        if proxy is None or _bypassed(host, port, self._no_proxy):
            return None
        return proxy


def _bypassed(host: str, port: int, environment: Mapping[str, str]) -> bool:
    """Whether ``no_proxy`` sends ``host`` direct, as curl reads it: names
    by suffix (urllib's own test), addresses and networks by address."""
    no_proxy = environment.get("no")
    if not no_proxy:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # urllib's own no_proxy test: public, though typeshed does not list it;
        # it keeps a name's trailing dot, which curl drops (host keys have none)
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        names = []
        for entry in no_proxy.split(","):
            name, only = _port_of(entry.strip())
            names.append(name.rstrip(".") + ("" if only is None else f":{only}"))
        return bool(bypass(f"{host}:{port}", {"no": ",".join(names)}))
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        entry, only = _port_of(entry)
        if only is not None and only != port:
            continue
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            return True
    return False


def _port_of(entry: str) -> tuple[str, int | None]:
    """A ``no_proxy`` entry and the port it names (``10.0.0.1:8080``,
    ``[::1]:8080``), as urllib reads one for a name; None for any port."""
    head, colon, tail = entry.rpartition(":")
    if colon and tail.isdigit() and (head.endswith("]") or ":" not in head):
        return head, int(tail)
    return entry, None


def proxies_for(config: FetcherConfig) -> Proxies | None:
    """The proxies of a fetcher with ``config``, reading the environment now
    (when ``config.env_proxy``); None when every request goes direct.
    ConfigError for a bad proxy URL in the environment (naming the variable)
    and for a proxy beside the guard's address checks, which a proxy defeats:
    it, not fanout, resolves the target's name and connects to it."""
    given = None if config.proxy is None else parse_proxy(config.proxy, "proxy")
    by_scheme: dict[str, Proxy] = {}
    no_proxy: dict[str, str] = {}
    if given is None and config.env_proxy:
        environment = urllib.request.getproxies_environment()
        for scheme in ("http", "https"):
            value = environment.get(scheme)
            if value:
                by_scheme[scheme] = parse_proxy(value, _variable(scheme), ENV_HINT)
        if "no" in environment:
            no_proxy["no"] = environment["no"]
    if given is None and not by_scheme:
        return None
    from fanout.net.guard import HostGuard

    guard = HostGuard(
        deny_private=config.deny_private,
        allow_hosts=config.allow_hosts,
        deny_hosts=config.deny_hosts,
    )
    checks = guard.address_checks
    if checks:
        where, hint = "proxy (--proxy)", ""
        if given is None:
            names = ", ".join(_variable(scheme) for scheme in by_scheme)
            where, hint = f"a proxy from the environment ({names})", ENV_HINT
        raise ConfigError(
            f"{' and '.join(checks)} cannot be combined with {where}: the proxy, not"
            " fanout, resolves and connects to each host, so their addresses cannot be"
            f" checked (host name patterns can){hint}"
        )
    return Proxies(given, by_scheme, no_proxy)


def _variable(scheme: str) -> str:
    """The name of the variable that set ``scheme``'s proxy, as it is spelled."""
    lower = f"{scheme}_proxy"
    return lower if os.environ.get(lower) else lower.upper()
