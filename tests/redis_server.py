"""A real ``redis-server`` for the Redis mode's tests: on a free loopback port,
in a directory of its own, killed (-9) or restarted as a test needs, always
stopped at the end. No fakeredis: the queue's guarantees are Redis's own.

Without ``redis-server`` on the PATH the tests that need it are skipped with
the way to install it; under ``CI=true`` they fail instead, so CI cannot pass
without running them (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_or_skip", "running_redis"]

_START_DEADLINE = 30.0  # seconds for redis-server to answer PING on a loaded machine
INSTALL_HINT = "redis-server is not installed: apt-get install redis-server"


def redis_or_skip() -> str:
    """The path of ``redis-server``; skip the test without it (fail under CI=true)."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{INSTALL_HINT} (CI=true: the Redis tests must run)")
        pytest.skip(INSTALL_HINT)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING (a raw socket: no client needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; :meth:`restart` keeps its port
    and directory, so with ``persist=True`` (AOF, fsync on every write) what it
    held survives a kill -9."""

    def __init__(self, binary: str, directory: Path, *, persist: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.persist = persist
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (with a deadline) until it answers PING."""
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else ["--appendonly", "no"]
        )
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_DEADLINE
        while not _ping(self.port):
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {_START_DEADLINE} s")
            time.sleep(0.02)  # polling a process that is starting: no event to wait on

    def kill(self) -> None:
        """kill -9 the server and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=_START_DEADLINE)
        self.process = None

    def restart(self) -> None:
        """kill -9, then start again on the same port and directory."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server, whatever state it is in."""
        self.kill()


@contextlib.contextmanager
def running_redis(directory: Path, *, persist: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` (skipping the test without redis-server),
    always stopped on exit."""
    binary = redis_or_skip()
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, directory, persist=persist)
    try:
        server.start()
        yield server
    finally:
        server.stop()
