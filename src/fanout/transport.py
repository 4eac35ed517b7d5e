"""One attempt of one request on the shared aiohttp session.

This is the only module that knows aiohttp's exceptions: :func:`classify`
turns each into an :class:`ErrorKind`, most specific first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp
from multidict import CIMultiDict, istr
from yarl import URL

from fanout.models import ErrorKind, Failure, Request
from fanout.policy import Caps, Timeouts

__all__ = ["Outcome", "classify", "exchange", "make_session"]

logger = logging.getLogger("fanout")

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class Outcome:
    """What one attempt produced. ``sent`` is False when the request surely never
    reached the server (so it is safe to retry whatever the method)."""

    status: int | None = None
    final_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    body: bytes | None = None
    size: int = 0
    sha256: str | None = None
    error: Failure | None = None
    sent: bool = True


class _TooLargeError(Exception):
    pass


def make_session(
    *, concurrency: int, timeouts: Timeouts, headers: Mapping[str, str]
) -> aiohttp.ClientSession:
    """The one session of a run: a pool sized to the concurrency, async DNS with a cache."""
    try:
        resolver: aiohttp.abc.AbstractResolver = aiohttp.AsyncResolver()
    except (RuntimeError, ImportError):  # aiodns missing or unusable: threaded getaddrinfo
        resolver = aiohttp.ThreadedResolver()
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=0,  # fanout's own scheduler enforces per-host limits
        use_dns_cache=True,
        ttl_dns_cache=300,
        resolver=resolver,
    )
    # aiohttp's own total covers one attempt from sending to the last body byte
    # (its timer guards the body reads too), and is cheaper than asyncio.timeout().
    timeout = aiohttp.ClientTimeout(
        total=timeouts.total,
        connect=timeouts.connect,
        sock_connect=timeouts.connect,
        sock_read=timeouts.read,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # istr keys: aiohttp merges these into every request's headers, and a
        # plain str key is case-folded again each time.
        headers=CIMultiDict((istr(name), value) for name, value in headers.items()),
        raise_for_status=False,
        auto_decompress=True,
        trust_env=False,
    )


async def exchange(
    session: aiohttp.ClientSession, request: Request, url: URL, *, caps: Caps, keep_body: bool
) -> Outcome:
    """Make one attempt of ``request``. Its exceptions are the caller's to
    :func:`classify` (kept out of here to spare a coroutine layer per request)."""
    async with session.request(
        request.method,
        url,
        headers=request.headers or None,
        data=request.body,
        allow_redirects=caps.max_redirects > 0,
        max_redirects=caps.max_redirects,
    ) as response:
        max_bytes = caps.max_bytes
        length = response.content_length
        identity = "Content-Encoding" not in response.headers
        if identity and length is not None and (max_bytes is None or length <= max_bytes):
            # Fast path: the length is known and within the cap, and aiohttp stops
            # at Content-Length (a shorter body is a ClientPayloadError).
            body = await response.read()
            size = len(body)
            sha256 = hashlib.sha256(body).hexdigest()
        else:
            if max_bytes is not None and identity and length is not None:
                raise _TooLargeError(f"Content-Length {length} exceeds max_bytes {max_bytes}")
            body, size, sha256 = await _read_capped(response.content, max_bytes, keep_body)
        status = response.status
        error = None
        if status >= 400:
            reason = response.reason or ""
            error = Failure(ErrorKind.HTTP_STATUS, f"HTTP {status} {reason}".rstrip())
        return Outcome(
            status=status,
            final_url=str(response.url) if response.history else request.url,
            headers=response.headers,
            body=body if keep_body else None,
            size=size,
            sha256=sha256,
            error=error,
        )


async def _read_capped(
    content: aiohttp.StreamReader, max_bytes: int | None, keep_body: bool
) -> tuple[bytes, int, str]:
    """Read a body of unknown decoded size as a stream, stopping past ``max_bytes``."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise _TooLargeError(f"body exceeds max_bytes {max_bytes} (decoded)")
        digest.update(chunk)
        if keep_body:
            chunks.append(chunk)
    return b"".join(chunks), size, digest.hexdigest()


def classify(exc: BaseException, *, timeouts: Timeouts, caps: Caps) -> Outcome:
    """Translate an exception from one attempt into a failed :class:`Outcome`."""
    kind: ErrorKind
    sent = True
    if isinstance(exc, _TooLargeError):
        kind, message = ErrorKind.TOO_LARGE, str(exc)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind, message, sent = ErrorKind.TIMEOUT, f"connect deadline of {timeouts.connect:g}s", False
    elif isinstance(exc, aiohttp.SocketTimeoutError):
        kind, message = ErrorKind.TIMEOUT, f"read deadline: no data for {timeouts.read:g}s"
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        kind, message = ErrorKind.TIMEOUT, str(exc) or "timeout"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        kind, message, sent = ErrorKind.DNS, _describe(exc), False
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        kind, message, sent = ErrorKind.TLS, _describe(exc), False
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        kind, sent = ErrorKind.CONNECT, False
        message = f"cannot connect to {exc.host}:{exc.port}: {reason}"
    elif isinstance(exc, aiohttp.TooManyRedirects):
        kind = ErrorKind.TOO_MANY_REDIRECTS
        message = f"more than {caps.max_redirects} redirects"
    elif isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        kind, message = ErrorKind.UNSUPPORTED_SCHEME, f"redirect to a non-HTTP URL: {exc}"
    elif isinstance(exc, aiohttp.InvalidUrlRedirectClientError):
        kind, message = ErrorKind.INVALID_URL, f"redirect to an invalid URL: {exc}"
    elif isinstance(exc, aiohttp.NonHttpUrlClientError):
        kind, message = ErrorKind.UNSUPPORTED_SCHEME, f"not an HTTP URL: {exc}"
    elif isinstance(exc, aiohttp.InvalidURL):
        kind, message = ErrorKind.INVALID_URL, f"invalid URL: {exc}"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind, message = ErrorKind.PROTOCOL, f"incomplete or malformed body: {_describe(exc)}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind, message = ErrorKind.PROTOCOL, "server disconnected before a complete response"
    elif isinstance(exc, aiohttp.ClientResponseError):
        kind, message = ErrorKind.PROTOCOL, f"malformed response: {exc.message or exc}"
    elif isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        kind, message = ErrorKind.PROTOCOL, f"connection lost: {_describe(exc)}"
    elif isinstance(exc, aiohttp.ClientError):
        kind, message = ErrorKind.PROTOCOL, _describe(exc)
    elif isinstance(exc, TimeoutError):  # aiohttp's total deadline
        kind, message = ErrorKind.TIMEOUT, f"total deadline of {timeouts.total:g}s for one attempt"
    else:
        logger.error("unexpected error in one attempt", exc_info=exc)
        kind, message = ErrorKind.INTERNAL, repr(exc)
    return Outcome(error=Failure(kind, message), sent=sent)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
