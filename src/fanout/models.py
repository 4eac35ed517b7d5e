"""The values that flow through fanout: Request in, exactly one Result out.

A :class:`Result` maps onto one JSONL record (see ``fanout.output.records``)::

    {"url": ..., "key": ..., "ok": true, "status": 200, "final_url": ...,
     "attempts": 1, "elapsed_ms": 12.3, "bytes": 1234, "sha256": ...,
     "error": null}

and on failure ``"error": {"kind": "timeout", "message": "...", "cause":
"SocketTimeoutError"}``, where ``kind`` is one of the :class:`ErrorKind`
values and ``cause`` is :attr:`Failure.cause`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fanout.errors import BodyError, ConfigError
from fanout.httpsyntax import headers_problem, method_problem

if TYPE_CHECKING:
    from yarl import URL

__all__ = ["IDEMPOTENT_METHODS", "ErrorKind", "Failure", "Request", "Result"]

# RFC 9110 §9.2.2: methods whose repetition has the same intended effect.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class ErrorKind(StrEnum):
    """Why a request failed. The values are the strings used in JSONL output."""

    TIMEOUT = "timeout"
    """A connect, read (gap between bytes) or total deadline passed."""
    CONNECT = "connect"
    """The connection could not be made (refused, unreachable, reset while connecting)."""
    DNS = "dns"
    """The host name could not be resolved."""
    TLS = "tls"
    """The TLS handshake or certificate check failed."""
    TOO_LARGE = "too_large"
    """The body (decoded) was larger than ``Caps.max_bytes``."""
    TOO_MANY_REDIRECTS = "too_many_redirects"
    """More redirects than ``Caps.max_redirects``."""
    INVALID_URL = "invalid_url"
    """The URL (or a redirect's Location) cannot be parsed or has no host."""
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    """Only http and https are fetched, also after a redirect."""
    HTTP_STATUS = "http_status"
    """The final response had a status of 400 or more."""
    PROTOCOL = "protocol"
    """The server broke HTTP: disconnected, sent a short body, a malformed message."""
    DENIED = "denied"
    """Refused before anything was sent: the host or its address is not allowed
    (``deny_private``, ``allow_hosts``, ``deny_hosts``)."""
    PROXY = "proxy"
    """The proxy could not be reached (connection, DNS, TLS), or refused the
    request (a 407 asking for credentials, an answer other than 200 to
    CONNECT, such as 502 when it cannot reach the host). Nothing reached the
    host, whose failure counts (``host_errors``) are left alone; retried only
    when the proxy could not be reached."""
    HOST_DOWN = "host_down"
    """Not sent: the host failed to connect (connect, DNS, TLS or connect
    deadline) too many times in a row (``host_errors``), so its other
    requests were skipped for a while."""
    ROBOTS = "robots"
    """Not sent: the host's robots.txt disallows the URL for the user agent's
    product token, or could not be fetched (a 5xx, a 429, no answer), which
    disallows the host for a while (``robots=True``, ``--robots``). Never retried."""
    WRITE = "write"
    """The body could not be saved under ``--out-dir`` (no space, permission, a
    refused symlink, a name the file system rejects); the run goes on."""
    CANCELLED = "cancelled"
    """The fetcher was closed before the request finished."""
    INTERNAL = "internal"
    """A bug in fanout or a library below it; the message holds the repr."""
    BAD_INPUT = "bad_input"
    """A ``--jsonl-input`` line could not become a request: not JSON, not an
    object, not UTF-8, too long, the ``url`` field missing, or a field of the
    wrong type. (A line of a URL list is its URL: a bad one is ``invalid_url``.)"""
    ABANDONED = "abandoned"
    """Redis mode: the request was handed to workers ``max_deliveries`` times
    without a result (each of them died or stopped with it in flight), so it is
    given up on rather than handed out again (``fanout worker --max-deliveries``)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with a request: a kind and a human-readable message.

    ``cause`` is the type name of the exception the failure came from (such
    as ``"ClientConnectorError"`` or ``"TimeoutError"``), for telling apart
    failures of one kind; None when no exception was involved (an HTTP
    status, a refused or invalid URL, a host marked down).
    """

    kind: ErrorKind
    message: str
    cause: str | None = None


# Request and Result are plain slotted dataclasses, not frozen ones: a frozen
# dataclass sets each field through object.__setattr__, which made building
# the two of them about 2 µs of every request's cost. Treat them as values.
@dataclass(slots=True, init=False)
class Request:
    """One HTTP request to make.

    ``key`` identifies the request in outputs and journals (the URL when not
    given); ``meta`` is carried through untouched to the :class:`Result`.
    ``idempotent`` overrides the method's own idempotency (RFC 9110 §9.2.2),
    which decides whether a failure after the request was sent is retried.
    ``send_credentials=False`` sends no Authorization, Proxy-Authorization or
    Cookie header, neither the fetcher's nor the request's own, at any hop:
    for a URL that a server chose, such as a next page on another origin
    (a URL's own ``user:password@`` is still its Basic authentication).

    A method that is not an HTTP token, or a header whose name is not a token
    or whose value holds a control character other than tab, raises
    :class:`fanout.ConfigError` here, naming the field. The URL is not checked:
    a bad one becomes the result's ``invalid_url`` error.

    >>> Request("http://127.0.0.1:8080/a").method
    'GET'
    >>> Request("http://127.0.0.1:8080/a", method="GE T")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fanout.errors.ConfigError: method must be an HTTP token (...), got 'GE T'
    """

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    body: bytes | None = None
    key: str | None = None
    meta: Any = None
    idempotent: bool | None = None
    send_credentials: bool = True
    # parse_url(_parsed_from), kept by fanout.urls.parse_request_url: an input
    # reader checks the URL and the engine needs it parsed a moment later. Two
    # fields, not a tuple: one tracked object less per request for the collector.
    _parsed_from: str | None = field(default=None, init=False, repr=False, compare=False)
    _parsed: URL | Failure | None = field(default=None, init=False, repr=False, compare=False)

    # Written out rather than generated, for the hot path: the generated one
    # calls a factory for the default headers and would call __post_init__.
    def __init__(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] = _NO_HEADERS,
        body: bytes | None = None,
        key: str | None = None,
        meta: Any = None,
        idempotent: bool | None = None,
        send_credentials: bool = True,
    ) -> None:
        if method != "GET":  # the default method and headers need no check
            _refuse(method_problem(method))
        if headers is not _NO_HEADERS:
            _refuse(headers_problem(headers))
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.key = key
        self.meta = meta
        self.idempotent = idempotent
        self.send_credentials = send_credentials
        self._parsed_from = None
        self._parsed = None

    @property
    def id(self) -> str:
        """The key of this request: ``key`` when given, else the URL."""
        return self.url if self.key is None else self.key

    @property
    def retry_safe(self) -> bool:
        """Whether the request may be sent again after it reached the server."""
        if self.idempotent is not None:
            return self.idempotent
        return self.method.upper() in IDEMPOTENT_METHODS


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise ConfigError(problem)


@dataclass(slots=True, init=False)
class Result:
    """The outcome of one :class:`Request`: a response or a :class:`Failure`.

    ``attempts`` counts the HTTP exchanges fanout started for the request
    (the first try plus each retry; redirects followed within one try do not
    count, and a request refused before sending, such as an invalid URL, has
    0). ``elapsed`` is the seconds from the first attempt's start to the end
    of the last (including waits between retries); ``last_attempt`` the
    seconds of the last attempt alone. A response with status >= 400 is kept
    (status, headers, body) and also carries an ``http_status`` error.
    ``sha256`` is the hex SHA-256 of the body (see the property).
    """

    request: Request
    status: int | None
    final_url: str | None
    headers: Mapping[str, str]
    body: bytes | None
    size: int
    _sha256: str | None = field(repr=False)  # as given
    _body_sha256: str | None = field(repr=False, compare=False)  # computed when asked
    attempts: int
    elapsed: float
    last_attempt: float
    error: Failure | None

    # Written out rather than generated: the dataclass would name the digest's
    # parameter after its private field, and ``sha256`` is a property. Not
    # keyword-only: the engine passes them by position, which is cheaper.
    def __init__(
        self,
        request: Request,
        status: int | None = None,
        final_url: str | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        body: bytes | None = None,
        size: int = 0,
        sha256: str | None = None,
        attempts: int = 0,
        elapsed: float = 0.0,
        last_attempt: float = 0.0,
        error: Failure | None = None,
    ) -> None:
        self.request = request
        self.status = status
        self.final_url = final_url
        self.headers = headers
        self.body = body
        self.size = size
        self._sha256 = sha256
        self._body_sha256 = None
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_attempt = last_attempt
        self.error = error

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 of the body: the one given when the result was made
        (fanout gives it when the body is not kept), else computed from ``body``
        when first asked for, which spares the hash to those who never read it;
        None with neither."""
        if self._sha256 is not None or self.body is None:
            return self._sha256
        if self._body_sha256 is None:
            self._body_sha256 = hashlib.sha256(self.body).hexdigest()
        return self._body_sha256

    def text(self) -> str:
        """The body decoded with the charset its Content-Type names (when that
        is a text encoding Python knows), else as UTF-8; bytes that do not
        decode become U+FFFD. Raises :class:`fanout.BodyError` when there is
        no body: none arrived (a connect error, ``too_large``...), or it was
        not kept (``Fetcher(keep_body=False)``).
        """
        from fanout.bodytext import decode_text

        return decode_text(self._body_or_raise(), _content_type(self.headers))

    def json(self) -> Any:
        """The body parsed as JSON. Raises :class:`fanout.BodyError` when there
        is no body (see :meth:`text`) or it is not JSON (the message says where
        parsing failed; the :class:`ValueError` from the parser is its cause).
        """
        import orjson

        body = self._body_or_raise()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"the body of {self.key} is not JSON: {exc}") from exc

    def _body_or_raise(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.error is not None and self.status is None:  # no response arrived
            why = f"the request failed ({self.error.kind}: {self.error.message})"
        elif self.error is not None and self.error.kind is not ErrorKind.HTTP_STATUS:
            why = f"no whole body was read ({self.error.kind}: {self.error.message})"
        else:
            why = "the body was not kept (Fetcher(keep_body=False))"
        raise BodyError(f"no body for {self.key}: {why}")

    @property
    def ok(self) -> bool:
        """True when the request ended with a response below 400."""
        return self.error is None

    @property
    def url(self) -> str:
        """The requested URL."""
        return self.request.url

    @property
    def key(self) -> str:
        """The request's key (its URL unless one was given)."""
        return self.request.id


def _content_type(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Content-Type")
    if value is not None:
        return value
    for name, item in headers.items():
        if name.lower() == "content-type":
            return item
    return None
