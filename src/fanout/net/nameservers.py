"""DNS server addresses as the options take them (a light module: no c-ares)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fanout.errors import ConfigError

__all__ = ["parse_nameserver", "parse_nameservers"]


def parse_nameserver(text: str) -> str:
    """A DNS server given as ``IP`` or ``IP:PORT`` (``[IPv6]:PORT`` for an IPv6
    address with a port), in the form c-ares takes; ValueError if it is not one.

    >>> parse_nameserver("127.0.0.1:5353")
    '127.0.0.1:5353'
    """
    value = text.strip()
    host, port = value, None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected IP or IP:PORT, got {text!r}")
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address or IP:PORT, got {text!r}") from None
    if port is None:
        return str(address)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}: expected 1 to 65535")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{int(port)}"


def parse_nameservers(servers: Iterable[str]) -> list[str]:
    """Each of ``servers`` through :func:`parse_nameserver`; ConfigError for a bad one."""
    if isinstance(servers, str):
        raise ConfigError(f"nameservers must be a list of addresses, got the string {servers!r}")
    parsed = []
    for server in servers:
        if not isinstance(server, str):
            raise ConfigError(f"nameservers: expected a string, got {server!r}")
        try:
            parsed.append(parse_nameserver(server))
        except ValueError as exc:
            raise ConfigError(f"nameservers: {exc}") from None
    if not parsed:
        raise ConfigError("nameservers: the list is empty (None uses the system's servers)")
    return parsed
