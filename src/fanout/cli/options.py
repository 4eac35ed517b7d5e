"""Option parsing shared by the commands: one definition of each HTTP option
(concurrency, rates, retries, deadlines, caps, method, headers), of ``--debug``,
of file names and their checks, and of how the options become a FetcherConfig. Only
click is imported here (and fanout's light modules, when an option needs one)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click

if TYPE_CHECKING:
    from fanout.config import FetcherConfig

__all__ = [
    "DELAY",
    "DURATION",
    "HEADER",
    "METHOD",
    "RATE",
    "SIZE",
    "FilePath",
    "check_files",
    "debug_option",
    "enable_debug",
    "fetcher_config",
    "http_options",
    "parsed",
]

F = TypeVar("F", bound=Callable[..., Any])


def parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that converts with ``parse``; its ValueError becomes a usage error."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, tuple):
                return tuple(parse(v) for v in value)
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


def _duration(text: str) -> float:
    from fanout.cli.units import parse_duration

    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return value


def _delay(text: str) -> float:
    from fanout.cli.units import parse_duration

    return parse_duration(text)


def _size(text: str) -> int:
    from fanout.cli.units import parse_size

    value = parse_size(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of requests per second, got {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    from fanout.httpsyntax import header_problem
    from fanout.safetext import shown

    name, sep, value = text.partition(":")
    name = name.strip(" \t")  # RFC 9110 §5.6.3: optional white space is space and tab
    if not sep or not name:
        raise ValueError(f"expected 'Name: value', got '{shown(text, 80)}'")
    problem = header_problem(name, value)
    if problem is not None:
        raise ValueError(problem)
    return name, value.strip(" \t")


def _dns_server(text: str) -> str:
    from fanout.net.nameservers import parse_nameserver

    return parse_nameserver(text)


def _user_agent(text: str) -> str:
    from fanout.httpsyntax import value_problem

    problem = value_problem("User-Agent header", text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _method(text: str) -> str:
    from fanout.httpsyntax import method_problem

    problem = method_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text.upper()


DURATION = parsed(_duration)
DELAY = parsed(_delay)
SIZE = parsed(_size)
RATE = parsed(_rate)
HEADER = parsed(_header)
USER_AGENT = parsed(_user_agent)
METHOD = parsed(_method)
DNS_SERVER = parsed(_dns_server)


def _file_option(name: str, help: str) -> Callable[[F], F]:
    """An option naming a file to read, checked (it exists and is readable) by click."""
    return click.option(
        name, type=click.Path(exists=True, dir_okay=False, readable=True), metavar="FILE", help=help
    )


_HTTP_OPTIONS = [
    click.option(
        "-c", "--concurrency", type=click.IntRange(min=1), default=64, help="Requests in flight."
    ),
    click.option(
        "--per-host", type=click.IntRange(min=1), default=8, help="Requests in flight per host."
    ),
    click.option(
        "--rate",
        callback=RATE,
        metavar="R",
        help="Requests started per second, all hosts.  [default: none]",
    ),
    click.option(
        "--per-host-rate",
        callback=RATE,
        metavar="R",
        help="Requests per second per host.  [default: none]",
    ),
    click.option(
        "--parked",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="Waiting requests (retry, cool-down, rate, a busy host) held outside the read-ahead,"
        " so other hosts go on; 0 turns it off.  [default: max(10000, 100 x concurrency)]",
    ),
    click.option(
        "--retries", type=click.IntRange(min=0), default=2, help="Retries after the first try."
    ),
    click.option(
        "--timeout",
        callback=DURATION,
        metavar="DURATION",
        default="120s",
        help="Total deadline of one attempt.",
    ),
    click.option(
        "--connect-timeout",
        callback=DURATION,
        metavar="DURATION",
        default="10s",
        help="Deadline to connect.",
    ),
    click.option(
        "--read-timeout",
        callback=DURATION,
        metavar="DURATION",
        default="30s",
        help="Longest gap between reads.",
    ),
    click.option(
        "--dns-timeout",
        callback=DURATION,
        metavar="DURATION",
        default="5s",
        help="Deadline of one DNS lookup (at most --connect-timeout).",
    ),
    click.option(
        "--dns-server",
        "dns_servers",
        callback=DNS_SERVER,
        metavar="IP[:PORT]",
        multiple=True,
        help="DNS server to ask instead of the system's, repeatable.",
    ),
    click.option(
        "--max-bytes",
        callback=SIZE,
        metavar="SIZE",
        default="8MiB",
        help="Largest body (decoded), e.g. 10MB.",
    ),
    click.option(
        "--max-redirects", type=click.IntRange(min=0), default=10, help="Redirects to follow."
    ),
    click.option(
        "-H",
        "--header",
        "headers",
        callback=HEADER,
        metavar="'NAME: VALUE'",
        multiple=True,
        help="'Name: value', repeatable.",
    ),
    click.option(
        "--user-agent",
        default=None,
        callback=USER_AGENT,
        help="User-Agent header.  [default: fanout/VERSION]",
    ),
    click.option(
        "--host-errors",
        type=click.IntRange(min=0),
        default=5,
        metavar="N",
        help="Skip a host's other requests (host_down) after N consecutive connection, DNS"
        " or TLS failures to it; 0 never skips.",
    ),
    click.option(
        "--deny-private",
        is_flag=True,
        help="Refuse loopback, private, link-local and multicast addresses (after DNS).",
    ),
    click.option(
        "--allow-host",
        "allow_hosts",
        multiple=True,
        metavar="PATTERN",
        help="Fetch only these hosts: a name glob (*.example.com) or a network, repeatable.",
    ),
    click.option(
        "--deny-host",
        "deny_hosts",
        multiple=True,
        metavar="PATTERN",
        help="Never fetch these hosts: a name glob or a network, repeatable.",
    ),
    _file_option("--cacert", "Trust the CA certificates in this PEM file instead of the system's."),
    click.option(
        "-k",
        "--insecure",
        is_flag=True,
        help="Check no TLS certificate (anyone on the path can read and change the traffic).",
    ),
    _file_option("--cert", "Client certificate (PEM) to present; with its key unless --key."),
    _file_option("--key", "Private key (PEM) of the --cert certificate."),
    click.option(
        "--proxy",
        metavar="URL",
        help="Send every request through this HTTP proxy (http:// or https://; credentials"
        " in it go to the proxy only).  [default: http_proxy/https_proxy, no_proxy]",
    ),
    click.option(
        "--no-env-proxy",
        is_flag=True,
        help="Ignore http_proxy, https_proxy and no_proxy in the environment.",
    ),
    click.option(
        "--cookies",
        is_flag=True,
        help="Keep the cookies servers set, and send each back to its own origin only.",
    ),
    click.option(
        "--robots",
        is_flag=True,
        help="Obey each host's robots.txt: skip the URLs it disallows (a 'robots' record)"
        " and pace the host by its Crawl-delay.",
    ),
    click.option(
        "--transport",
        type=click.Choice(["aiohttp", "curl"]),
        help="What sends the requests: aiohttp, or libcurl (pip install 'fanout[curl]').  "
        "[default: FANOUT_TRANSPORT, else aiohttp]",
    ),
    click.option(
        "--http2",
        is_flag=True,
        help="Speak HTTP/2 (needs --transport curl): prior knowledge for http://, ALPN for"
        " https://; a host's requests share one connection, --per-host counting streams.",
    ),
    click.option(
        "--no-server-hints",
        is_flag=True,
        help="Ignore the quota servers advertise (RateLimit, X-RateLimit-*): by default a"
        " host with none left waits for its reset.",
    ),
    click.option(
        "--no-adapt",
        is_flag=True,
        help="Keep each host's rate and concurrency as set: by default a host that answers"
        " 429 or 503 without Retry-After, or times out, is slowed down, then sped up again.",
    ),
]


def http_options(command: F) -> F:
    """Add the shared HTTP options to a click command."""
    for option in reversed(_HTTP_OPTIONS):
        command = option(command)
    return command


def fetcher_config(options: dict[str, Any]) -> FetcherConfig:
    """The :class:`~fanout.FetcherConfig` the shared HTTP options describe, for
    every command that fetches; a value it refuses is a usage error. The
    concurrency is the one the process's file descriptor limit allows, raised
    first as far as the hard limit lets it
    (:func:`fanout.net.fdlimit.fit_process_limit`); when it is lowered, a line on
    stderr says so."""
    from fanout.config import DEFAULT_USER_AGENT, FetcherConfig
    from fanout.errors import ConfigError
    from fanout.net.fdlimit import fit_process_limit
    from fanout.net.proxy import proxies_for
    from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

    cert, key = options["cert"], options["key"]
    if key is not None and cert is None:
        raise click.UsageError("--key needs --cert (the certificate it is the key of)")
    try:
        config = FetcherConfig(
            retry=RetryPolicy(attempts=options["retries"] + 1),
            timeouts=Timeouts(
                connect=options["connect_timeout"],
                read=options["read_timeout"],
                total=options["timeout"],
                dns=options["dns_timeout"],
            ),
            caps=Caps(max_bytes=options["max_bytes"], max_redirects=options["max_redirects"]),
            headers=dict(options["headers"]),
            user_agent=options["user_agent"] or DEFAULT_USER_AGENT,
            deny_private=options["deny_private"],
            allow_hosts=options["allow_hosts"] or None,
            deny_hosts=options["deny_hosts"],
            nameservers=options["dns_servers"] or None,
            host_errors=options["host_errors"],
            cacert=options["cacert"],
            verify=not options["insecure"],
            client_cert=None if cert is None else (cert, key or cert),
            proxy=options["proxy"],
            env_proxy=not options["no_env_proxy"],
            cookies=options["cookies"],
            robots=options["robots"],
            server_hints=not options["no_server_hints"],
            adapt=not options["no_adapt"],
            http2=options["http2"],
            # not given: FANOUT_TRANSPORT, else aiohttp
            **({} if options["transport"] is None else {"transport": options["transport"]}),
        )
        proxies_for(config)  # the environment's proxies: checked now, not once fetching
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    concurrency, lowered = fit_process_limit(options["concurrency"])  # once the rest is valid
    if lowered is not None:
        click.echo(f"fanout: {lowered}", err=True)
    limits = Limits(
        concurrency=concurrency,
        per_host=options["per_host"],
        rate=options["rate"],
        per_host_rate=options["per_host_rate"],
        parked=options["parked"],
    )
    return dataclasses.replace(config, limits=limits)


# ------------------------------------------------------------------ --debug


def enable_debug(ctx: click.Context) -> None:
    """Turn on ``--debug`` for the whole command line: asyncio debug mode (read
    from the root context's ``obj``) and detailed logs on stderr."""
    ctx.find_root().ensure_object(dict)["debug"] = True
    logging.basicConfig(
        level=logging.DEBUG,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from fanout.cli.logs import redact_logs

    redact_logs()  # also for --debug after the command's name: credentials never reach a log


def _debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        enable_debug(ctx)


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=_debug_callback,
    help="asyncio debug mode and detailed logs on stderr (as 'fanout --debug COMMAND').",
)
"""``--debug`` on a command, so that it may come after the command's name too."""


# -------------------------------------------------------------- file names


class FilePath(click.Path):
    """A :class:`click.Path` that refuses an empty name (which would mean the
    current directory to some calls and no file to others)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            self.fail("the path is empty", param, ctx)
        return super().convert(value, param, ctx)


Named: TypeAlias = Mapping[str, str | Path | None]


def check_files(*, inputs: Named, outputs: Named, out_dir: Path | None = None) -> None:
    """Refuse, as a usage error and before anything is read or written, file
    options that would clash or cannot work: two options naming one file (an
    output would overwrite an input), both inputs on stdin, and an output that
    cannot be created or written (its directory is missing, say). ``inputs``
    and ``outputs`` map an option's name to its value; '-' is stdin or stdout
    for -i, --jsonl-input and -o, and no file."""
    stdio = {"-i", "--input", "--jsonl-input", "-o", "--output"}
    named = [(o, str(p)) for o, p in (*inputs.items(), *outputs.items()) if p is not None]
    if sum(1 for option, path in inputs.items() if path == "-" and option in stdio) > 1:
        raise click.UsageError("only one input can read stdin ('-')")
    files = [(o, p) for o, p in named if not (p == "-" and o in stdio) and _may_be_file(p)]
    if out_dir is not None:
        files.append(("--out-dir", str(out_dir)))
    for i, (option, path) in enumerate(files):
        for other, other_path in files[:i]:
            if _same_file(path, other_path):
                raise click.UsageError(
                    f"{other} '{_shown(other_path)}' and {option} '{_shown(path)}' are the same"
                    " file: give each its own"
                )
    for option, output in outputs.items():
        if output is not None and not (str(output) == "-" and option in stdio):
            problem = _unwritable(Path(output))
            if problem is not None:
                raise click.UsageError(f"{option} '{_shown(output)}': {problem}")
    if out_dir is not None:
        problem = _no_directory(out_dir)
        if problem is not None:
            raise click.UsageError(f"--out-dir '{_shown(out_dir)}': {problem}")


def _shown(path: str | Path) -> str:
    from fanout.safetext import shown

    return shown(str(path), 200)


def _may_be_file(path: str) -> bool:
    """Whether ``path`` is a regular file or does not exist yet: a terminal, a
    pipe or /dev/null may well be named twice (-i /dev/stdin -o /dev/stdout)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):  # symlinks, ./x and x
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # one of them does not exist yet
        return False


def _unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path``, or None. Nothing is created.

    Permissions are asked of the system (os.access), which also knows a
    read-only file system; a process that may write anything (root) passes."""
    if path.is_dir():
        return "is a directory"
    if path.exists():
        return None if os.access(path, os.W_OK) else "the file is not writable"
    parent = path.parent
    if not parent.exists():
        return f"directory '{_shown(parent)}' does not exist"
    if not parent.is_dir():
        return f"'{_shown(parent)}' is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create a file in '{_shown(parent)}'"
    return None


def _no_directory(path: Path) -> str | None:
    """Why a directory cannot be made or written at ``path``, or None. The
    missing ones are not made here, only once a body is saved."""
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link: os.makedirs cannot go through it
            return f"'{_shown(ancestor)}' is a broken symbolic link"
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"'{_shown(ancestor)}' is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create files in '{_shown(ancestor)}'"
    return None


# -------------------------------------------------------------- inputs

_INPUT_FILE = FilePath(dir_okay=False, allow_dash=True)

_INPUT_OPTIONS = [
    click.option(
        "-i",
        "--input",
        "input_path",
        type=_INPUT_FILE,
        metavar="FILE",
        help="URLs, one per line ('-' for stdin).",
    ),
    click.option(
        "--jsonl-input",
        type=_INPUT_FILE,
        metavar="FILE",
        help="Request objects, one JSON per line ('-' for stdin).",
    ),
]

_REQUEST_OPTIONS = [
    click.option(
        "-X",
        "--method",
        default="GET",
        callback=METHOD,
        metavar="METHOD",
        help="HTTP method for URL inputs (an HTTP token; upper-cased).",
    ),
    click.option("--data", help="Request body for URL inputs (sent as UTF-8)."),
]


def input_options(command: F) -> F:
    """Add where the requests are read (-i, --jsonl-input) to a click command
    (fanout fetch, fanout submit)."""
    for option in reversed(_INPUT_OPTIONS):
        command = option(command)
    return command


def request_options(command: F) -> F:
    """Add the method and body of URL inputs (-X, --data) to a click command."""
    for option in reversed(_REQUEST_OPTIONS):
        command = option(command)
    return command
