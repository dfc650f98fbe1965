"""A real ``redis-server`` for the tests: started on a free loopback port in a temporary
folder, ready once it answers PING, stopped at the end; ``kill``, ``pause``/``resume`` and
``restart`` it for fault tests::

    with RedisServer() as srv:
        store = RedisStore(srv.url)

A test module imports the fixtures ``redis_server`` (one server per module) and
``redis_server_each`` (one per test) with
``from redis_server import redis_server_fixture, redis_server_each_fixture``.

When ``redis-server`` is not installed, starting one fails the test with a message saying to
run ``.ci/services.sh`` (nothing is skipped).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

__all__ = ["RedisServer", "redis_server_each_fixture", "redis_server_fixture"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` (no persistence, no password)."""

    def __init__(self, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail(
                "redis-server is not installed: run .ci/services.sh (it installs Debian's "
                "redis-server) and try again",
                pytrace=False,
            )
        self.exe = exe
        self.port = port or _free_port()
        self.dir = tempfile.mkdtemp(prefix="agentperf-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING (on the same port after a kill)."""
        args = [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.paused = False
        deadline = time.monotonic() + wait
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.01)
        return self

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the server is gone at once (connections refused from now on)."""
        if self.proc is not None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
            self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but answers nothing (a slow server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def restart(self) -> RedisServer:
        """Kill it (if running) and start a fresh, empty one on the same port."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """Stop the server and remove its folder (stopping twice is harmless)."""
        if self.proc is not None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
                self.paused = False
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One server for a test module (tests keep apart by namespace)."""
    with RedisServer() as srv:
        yield srv


@pytest.fixture(name="redis_server_each")
def redis_server_each_fixture() -> Iterator[RedisServer]:
    """A server of the test's own, for tests that kill, pause or restart it."""
    with RedisServer() as srv:
        yield srv
