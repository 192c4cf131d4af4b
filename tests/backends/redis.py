"""A real ``redis-server`` on a free 127.0.0.1 port, without persistence, stopped by PID.

Fixtures: ``redis_server`` (one per test: failure tests stop, pause and restart it) and
``redis_session`` (one per session: tests sharing it keep to their own key prefix, see
:func:`unique_prefix`). Import them into a test module (or a conftest) to use them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process. :meth:`stop` and :meth:`start` keep the port, so clients
    configured with :attr:`url` reconnect to the restarted server (which starts empty)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        if self.running:
            return self
        self.starts += 1
        log = self.directory / f"redis-{self.port}-{self.starts}.log"
        argv = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
        ]
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} not ready after {READY_TIMEOUT}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM by PID and wait (SIGKILL if it lingers). Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server, for timeouts)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def command(self, *args: str) -> object:
        """One command through a short-lived synchronous client (for test set-up and checks)."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            return client.execute_command(*args)


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


def unique_prefix(name: str = "test") -> str:
    """A key prefix no other test uses, for tests that share a server."""
    return f"{name}:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for this test alone."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server shared by the whole session: never stop or flush it; use :func:`unique_prefix`."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
