"""The TLS settings of a run as one :class:`ssl.SSLContext`: the CAs to trust
(``cacert``), whether certificates are checked at all (``verify``), and a client
certificate (``client_cert``), with curl's meanings (``--cacert``, ``--insecure``,
``--cert``/``--key``).

A file that cannot be read or is not what it should be raises
:class:`~fanout.ConfigError` naming it, when the context is made: before
anything is fetched, never mid-run.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import TypeAlias, TypeVar

from fanout.errors import ConfigError
from fanout.safetext import shown

__all__ = ["StrPath", "tls_context"]

StrPath: TypeAlias = str | os.PathLike[str]
T = TypeVar("T")


def tls_context(
    *, cacert: StrPath | None, verify: bool, client_cert: tuple[StrPath, StrPath] | None
) -> ssl.SSLContext | None:
    """The context for these settings, or None when they are the defaults (then
    aiohttp's own context is used: the system's CAs, certificates checked)."""
    if not isinstance(verify, bool):
        raise ConfigError(f"verify must be True or False, got {verify!r}")
    if cacert is None and verify and client_cert is None:
        return None
    if cacert is not None and not verify:
        raise ConfigError(
            "verify=False (--insecure) checks no certificate, so cacert (--cacert) would"
            " not be used: give one or the other"
        )
    if not verify:  # as aiohttp's own unverified context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cacert is None:
        context = ssl.create_default_context()  # the system's CAs
    else:  # these CAs instead of the system's, not beside them
        context = _load(_trusting, "cacert", cacert, "CA certificates")
    context.options |= ssl.OP_NO_COMPRESSION
    if client_cert is not None:
        if isinstance(client_cert, str | os.PathLike) or len(client_cert) != 2:
            raise ConfigError(
                f"client_cert must be a (certificate file, key file) pair, got {client_cert!r}"
            )
        cert, key = client_cert
        _readable("client_cert", key, "key")

        def encrypted() -> bytes:  # else OpenSSL asks for the passphrase on the terminal
            raise ConfigError(
                f"client_cert: the key file '{_name(key)}' is encrypted (a passphrase"
                " cannot be given): decrypt it first (openssl pkey -in KEY -out PLAIN)"
            )

        _load(
            lambda path: context.load_cert_chain(path, key, password=encrypted),
            "client_cert",
            cert,
            "certificate and key",
        )
    context.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
    return context


def _readable(field: str, path: StrPath, what: str) -> None:
    """ConfigError naming ``path`` when it cannot be opened for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read the {what} file '{_name(path)}': {exc.strerror or exc}"
        ) from None


def _trusting(cafile: StrPath) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)  # loads these CAs only


def _load(load: Callable[[StrPath], T], field: str, path: StrPath, what: str) -> T:
    """``load(path)``; a file that cannot be read or parsed is a ConfigError."""
    _readable(field, path, what.split(" ")[0])
    try:
        return load(path)
    except ConfigError:
        raise
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"{field}: '{_name(path)}' holds no usable {what} ({reason})") from None


def _name(path: StrPath) -> str:
    return shown(os.fsdecode(path), 200)
