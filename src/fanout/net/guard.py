"""Which hosts and addresses a fetcher may connect to: the guard for services.

A service that fetches URLs it did not choose must not be turned against its
own network (server-side request forgery). :class:`HostGuard` holds the rules:

- ``deny_private``: refuse every address that is not globally routable:
  loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16 with the
  cloud metadata address, fe80::/10), shared (100.64.0.0/10), multicast,
  reserved and unspecified ones, also when written as an IPv4-mapped,
  6to4, Teredo or NAT64 (64:ff9b::/96) IPv6 address.
- ``deny_hosts``: patterns refused.
- ``allow_hosts``: when given, only these patterns are fetched.

A pattern is a host name glob (``*.example.com``, ``api.example.com``;
matched case-insensitively against the URL's host, international names in
their ``xn--`` form) or an address or network (``10.0.0.0/8``, ``::1``).
Name patterns are checked against the URL's host before anything is sent;
address patterns and ``deny_private`` against every address fanout would
connect to: the literal address of the URL, or each address DNS returned, at
connect time (:class:`GuardedResolver`). Checking the addresses actually
connected to, not the name, is what makes the guard hold against DNS
rebinding. Every redirect hop is checked the same way.

>>> guard = HostGuard(deny_private=True)
>>> guard.check_host("127.0.0.1")
'127.0.0.1 is a loopback address (deny_private)'
>>> guard.check_host("example.com") is None
True
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from fanout.errors import ConfigError
from fanout.net.transport import AddressDenied

__all__ = ["GuardedResolver", "HostGuard"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one of the forms
    that reach an IPv4 host (mapped, 6to4, Teredo, the NAT64 well-known prefix)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _private_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = _private_reason(inner)
            return None if reason is None else f"{reason} (IPv4 {inner})"
    for attribute, what in (
        ("is_loopback", "a loopback address"),
        ("is_unspecified", "an unspecified address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, attribute):
            return what
    if not address.is_global:
        return "not a global address"
    return None


def _forms(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address, and for an IPv4-mapped one (``::ffff:10.0.0.1``, as an AAAA
    record may give) the IPv4 address it connects to: network patterns match either."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return (address, address.ipv4_mapped)
    return (address,)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return None


class HostGuard:
    """The rules of which hosts and addresses may be connected to (see the module).

    Checks are pure and cached: the engine asks :meth:`check_host` for every
    hop, the resolver :meth:`check_address` for every address.
    """

    def __init__(
        self,
        *,
        deny_private: bool = False,
        allow_hosts: Iterable[str] | None = None,
        deny_hosts: Iterable[str] = (),
    ) -> None:
        self.deny_private = deny_private
        self._allow = None if allow_hosts is None else _Patterns("allow_hosts", allow_hosts)
        self._deny = _Patterns("deny_hosts", deny_hosts)
        self.check_host = functools.lru_cache(maxsize=4096)(self._check_host)
        self.check_address = functools.lru_cache(maxsize=4096)(self._check_address)

    @property
    def active(self) -> bool:
        """Whether any rule is set (a guard with none checks nothing)."""
        return self.deny_private or self._allow is not None or bool(self._deny)

    @property
    def address_checks(self) -> list[str]:
        """The rules checked on the addresses connected to (not on names),
        named as options: what a proxy, which connects instead, defeats."""
        checks = ["deny_private"] if self.deny_private else []
        if self._allow is not None and self._allow.networks:
            checks.append("networks in allow_hosts")
        if self._deny.networks:
            checks.append("networks in deny_hosts")
        return checks

    def _check_host(self, host: str) -> str | None:
        """Why a URL's host (a name, or an address literal) is refused before
        anything is sent, or None. A name's addresses are checked later, by
        :meth:`check_address`, as DNS gives them."""
        name = host.rstrip(".").lower()
        address = _address(name)
        if address is None:
            pattern = self._deny.name_match(name)
            if pattern is not None:
                return f"{host} matches the denied pattern {pattern!r}"
            allow = self._allow
            if allow is not None and allow.name_match(name) is None and not allow.networks:
                return f"{host} matches no allowed pattern"
            return None
        return self._check_address(name, str(address))

    def _check_address(self, host: str, text: str) -> str | None:
        """Why connecting to ``text`` (an address of ``host``) is refused, or None."""
        address = _address(text)
        if address is None:
            return f"{text!r} is not an IP address"
        forms = _forms(address)
        for form in forms:
            pattern = self._deny.network_match(form)
            if pattern is not None:
                return f"{address} is in the denied network {pattern}"
        if self.deny_private:
            reason = _private_reason(address)
            if reason is not None:
                return f"{address} is {reason} (deny_private)"
        allow = self._allow
        if (
            allow is not None
            and allow.name_match(host.rstrip(".").lower()) is None
            and all(allow.network_match(form) is None for form in forms)
        ):
            return f"{host} ({address}) matches no allowed pattern"
        return None


class _Patterns:
    """Host name globs and networks, parsed once."""

    def __init__(self, option: str, patterns: Iterable[str]) -> None:
        if isinstance(patterns, str):
            raise ConfigError(f"{option} must be a list of patterns, got the string {patterns!r}")
        self.names: list[str] = []
        self.networks: list[IPNetwork] = []
        for pattern in patterns:
            text = pattern.strip().lower() if isinstance(pattern, str) else None
            if not text:
                raise ConfigError(f"{option}: empty or non-string pattern {pattern!r}")
            try:
                self.networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                if any(c in text for c in "/:@ \t") or not text.isprintable():
                    raise ConfigError(
                        f"{option}: {pattern!r} is neither a host name pattern nor a network"
                    ) from None
                self.names.append(_ascii_name(option, pattern, text.rstrip(".")))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def name_match(self, name: str) -> str | None:
        for pattern in self.names:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern
        return None

    def network_match(self, address: IPAddress) -> IPNetwork | None:
        for network in self.networks:
            if address.version == network.version and address in network:
                return network
        return None


def _ascii_name(option: str, pattern: str, name: str) -> str:
    """A name pattern as URL hosts are matched: each international label in
    its ``xn--`` form, encoded as yarl encodes a URL's host (else
    ``bücher.example`` would silently match nothing)."""
    if name.isascii():
        return name
    labels = []
    for label in name.split("."):
        if not label.isascii():
            try:
                if any(c in label for c in "*?["):
                    raise ValueError("a wildcard in an international label")
                label = URL.build(scheme="http", host=label).raw_host or ""
            except ValueError as exc:
                raise ConfigError(
                    f"{option}: {pattern!r}: {exc}; write the name in its xn-- form"
                ) from None
        labels.append(label)
    return ".".join(labels)


class GuardedResolver(AbstractResolver):
    """A resolver that drops the addresses :class:`HostGuard` refuses, and raises
    :class:`~fanout.net.transport.AddressDenied` when none is left, so nothing is
    ever connected to a refused address (aiohttp connects only to what its
    resolver returns)."""

    def __init__(self, inner: AbstractResolver, guard: HostGuard) -> None:
        self._inner = inner
        self._guard = guard

    @property
    def inner(self) -> AbstractResolver:
        """The resolver whose answers are checked."""
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        check = self._guard.check_address
        kept: list[ResolveResult] = []
        reason = None
        for answer in answers:
            refused = check(host, answer["host"])
            if refused is None:
                kept.append(answer)
            elif reason is None:
                reason = refused
        if not kept:
            raise AddressDenied(f"{host} has no address allowed: {reason or 'none given'}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
