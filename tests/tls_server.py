"""An https server on loopback whose certificate a test CA made (trustme), and
the PEM files a client is given: the CA, and a client certificate the server
may require."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiohttp import web

from tests.loopback import serving

__all__ = ["TLSFiles", "https_server", "make_tls_files"]


@dataclass(frozen=True)
class TLSFiles:
    """The test CA and what it signed, as files and as the server's context."""

    ca: trustme.CA
    cacert: Path  # the CA's certificate, for --cacert
    cert: Path  # a client certificate signed by the CA...
    key: Path  # ...and its key
    both: Path  # the client certificate and key in one file
    server: trustme.LeafCert  # for 127.0.0.1


def make_tls_files(directory: Path) -> TLSFiles:
    """A new CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca = trustme.CA()
    client = ca.issue_cert("client@fanout.test")
    files = TLSFiles(
        ca=ca,
        cacert=directory / "ca.pem",
        cert=directory / "client.pem",
        key=directory / "client.key",
        both=directory / "client-both.pem",
        server=ca.issue_cert("127.0.0.1"),
    )
    ca.cert_pem.write_to_path(str(files.cacert))
    client.cert_chain_pems[0].write_to_path(str(files.cert))
    client.private_key_pem.write_to_path(str(files.key))
    client.private_key_and_cert_chain_pem.write_to_path(str(files.both))
    return files


async def _hello(request: web.Request) -> web.Response:
    """Who the client said it was (its certificate's subject), or nobody."""
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    return web.json_response({"client": bool(peer)})


@contextlib.asynccontextmanager
async def https_server(files: TLSFiles, *, client_cert: bool = False) -> AsyncIterator[str]:
    """An https server on 127.0.0.1 answering ``/`` with JSON; with ``client_cert``
    it requires a client certificate the test CA signed. Yields its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files.server.configure_cert(context)
    if client_cert:
        files.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/", _hello)
    async with serving(app, tls=context) as url:
        yield url
