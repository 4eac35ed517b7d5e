"""Shared pieces of the benchmarks: the servers (nginx, the fast server) and CPU pinning."""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PIDS: dict[str, int] = {}  # base URL -> pid of the server process behind it
NGINX_MISSING = "nginx not found: apt-get install nginx, or --server fast"
SERVERS = ("nginx", "fast")  # the choices of a benchmark's --server


def pin_to(cpu: int) -> str:
    """Pin this process to ``cpu`` when the machine has more than one; say what was done."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
        return f"client pinned to CPU {cpu}"
    return "no CPU pinning (one CPU or unsupported)"


@contextlib.contextmanager
def fast_server(cpu: int = 1, *options: str, host: str = "127.0.0.1") -> Iterator[str]:
    """Run benchmarks/fastserver.py in a subprocess on ``cpu``; yield its base URL."""
    multi = (os.cpu_count() or 1) > 1
    cmd = [sys.executable, str(HERE / "fastserver.py"), "--port", "0", "--host", host, *options]
    if multi:
        cmd += ["--cpu", str(cpu)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    base = ""
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        base = f"http://{host}:{port}"
        _PIDS[base] = process.pid
        yield base
    finally:
        _PIDS.pop(base, None)
        process.terminate()
        process.wait(timeout=10)


def find_nginx() -> str | None:
    """The nginx binary: ``$FANOUT_BENCH_NGINX`` when set (a test names a missing
    one), else nginx on the PATH or in /usr/sbin (root's PATH only has it)."""
    if (named := os.environ.get("FANOUT_BENCH_NGINX")) is not None:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")


def nginx_or_exit() -> str:
    """The nginx binary, or exit 2 with one line saying how to get it."""
    nginx = find_nginx()
    if nginx is None:
        print(NGINX_MISSING, file=sys.stderr)
        raise SystemExit(2)
    return nginx


_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def nginx_server(cpu: int = 1, deadline: float = 30.0) -> Iterator[str]:
    """Run the system's nginx in the foreground as one process (no master), on
    ``cpu``, answering every request on a free loopback port with the fast
    server's 128-byte body, keep-alive without limit, no access log; its pid
    file, logs and temp files in a temporary directory. Yield its base URL;
    stop it at the end. Exits 2 with :data:`NGINX_MISSING` without nginx."""
    nginx = nginx_or_exit()
    with tempfile.TemporaryDirectory(prefix="fanout-nginx-") as prefix:
        multi = (os.cpu_count() or 1) > 1
        for attempt in range(5):  # another process may take the free port first
            port = _free_port()
            conf = Path(prefix) / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(prefix=prefix, port=port, body="x" * 128))
            log = Path(prefix) / "error.log"
            log.unlink(missing_ok=True)
            # -e: the log for errors before the configuration is read (else /var/log/nginx)
            cmd = [nginx, "-c", str(conf), "-p", prefix, "-e", str(log)]
            with open(Path(prefix) / "stderr.log", "wb") as stderr:
                process = subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if multi else None,
                )
            try:
                if _listening(process, port, deadline):
                    break
            except BaseException:
                _stop(process)
                raise
            words = log.read_text(errors="replace").strip() if log.exists() else ""
            if "Address already in use" not in words or attempt == 4:
                last = words.splitlines()[-1] if words else "no error logged"
                raise SystemExit(f"nginx exited with {process.returncode}: {last}")
        base = f"http://127.0.0.1:{port}"
        _PIDS[base] = process.pid
        try:
            yield base
        finally:
            _PIDS.pop(base, None)
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _listening(process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """Wait (at most ``deadline`` seconds) until nginx answers on ``port``:
    True; False if it exited first."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as probe:
                probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
                # nginx's answer, not another listener's on the same port
                if b"Server: nginx" in probe.recv(4096):
                    return True
        except OSError:
            pass
        time.sleep(0.02)  # polling a port coming up: nothing to wait on instead
    _stop(process)
    raise SystemExit(f"nginx did not listen on 127.0.0.1:{port} within {deadline:.0f} s")


@contextlib.contextmanager
def benchmark_server(kind: str, cpu: int = 1) -> Iterator[str]:
    """The server a benchmark's ``--server`` names: ``nginx`` (:func:`nginx_server`)
    or ``fast`` (:func:`fast_server`), on ``cpu``; yield its base URL."""
    with nginx_server(cpu) if kind == "nginx" else fast_server(cpu) as base:
        yield base


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """A benchmark's ``--server nginx|fast`` (default nginx); call
    :func:`check_server` after parsing, before printing anything."""
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="nginx",
        help="the benchmark server: the system's nginx (default) or benchmarks/fastserver.py",
    )


def check_server(kind: str) -> None:
    """Exit 2 with :data:`NGINX_MISSING` when ``kind`` is nginx and it is missing."""
    if kind == "nginx":
        nginx_or_exit()


@contextlib.contextmanager
def fast_servers(
    ports: int, *options: str, hosts: tuple[str, ...] = ("127.0.0.1",), cpu: int = 1
) -> Iterator[list[str]]:
    """One benchmarks/fastserver.py process listening on ``ports`` ports spread
    over ``hosts``, on ``cpu``; yield their base URLs (distinct host:port pairs)."""
    multi = (os.cpu_count() or 1) > 1
    cmd = [sys.executable, str(HERE / "fastserver.py"), "--ports", str(ports)]
    cmd += ["--host", ",".join(hosts), *options]
    if multi:
        cmd += ["--cpu", str(cpu)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        bases = [f"http://{pair}" for pair in process.stdout.readline().split()]
        if len(bases) != ports:
            raise RuntimeError(f"fastserver listened on {len(bases)} of {ports} ports")
        yield bases
    finally:
        process.terminate()
        process.wait(timeout=30)


def settle_heap() -> None:
    """Collect, then freeze what is left (the benchmark's own objects, the
    modules): a full collection during a measured run then scans the run's
    objects only. Without it, whether a run happened to need one (about 0.2 s
    over this process's heap) swung a 3-second run by 10 %."""
    gc.collect()
    gc.freeze()


def raise_open_files() -> str:
    """Raise this process's soft limit of open files to its hard limit; say so."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f"open files limit {hard}"


def server_cpu_seconds(base: str) -> float:
    """CPU seconds (user + system) the fast server at ``base`` has used so far,
    from /proc; 0.0 where /proc is missing. Its share of a run's wall time
    shows whether the server, not the client, was the bottleneck."""
    try:
        fields = Path(f"/proc/{_PIDS[base]}/stat").read_text().rsplit(")", 1)[1].split()
    except (KeyError, OSError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def compile_fanout() -> str:
    """Byte-compile the fanout package, as pip does when it installs a wheel, so a
    timed fresh process loads it from .pyc files like it loads aiohttp (an
    editable install under PYTHONDONTWRITEBYTECODE=1 would compile it from source
    at every start). Says what was done."""
    import compileall

    import fanout

    package = Path(fanout.__file__).parent
    compileall.compile_dir(package, quiet=1)
    return f"fanout byte-compiled in {package}"


@contextlib.contextmanager
def collections_counted() -> Iterator[collections.Counter[int]]:
    """Count the garbage collector's collections, by generation, in the block."""
    counted: collections.Counter[int] = collections.Counter()

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counted[info["generation"]] += 1

    gc.callbacks.append(count)
    try:
        yield counted
    finally:
        gc.callbacks.remove(count)


def median_and_middle_half(ratios: list[float]) -> str:
    """The median of the rounds' ratios, and their middle half when there are 4 or more."""
    text = f"{statistics.median(ratios):.3f}"
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4)
        text += f" (middle half {low:.3f}-{high:.3f})"
    return text
