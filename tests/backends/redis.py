"""A real ``redis-server`` on a free 127.0.0.1 port, without persistence, stopped by PID.

Fixtures: ``redis_server`` (one per test: failure tests stop, pause and restart it) and
``redis_session`` (one per session: tests sharing it keep to their own key prefix, see
:func:`unique_prefix`). Import them into a test module (or a conftest) to use them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends._process import ManagedProcess, free_port

__all__ = [
    "READY_TIMEOUT",
    "REDIS_SERVER",
    "STOP_TIMEOUT",
    "RedisServer",
    "free_port",
    "redis_server",
    "redis_session",
    "running_redis",
    "unique_prefix",
]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_argv(port: int, directory: Path, *extra: str) -> list[str]:
    """A foreground redis-server on loopback that keeps nothing on disk, plus ``extra`` options."""
    return [
        REDIS_SERVER,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(directory),
        *extra,
    ]


class RedisServer(ManagedProcess):
    """One ``redis-server`` process. :meth:`stop` and :meth:`start` keep the port, so clients
    configured with :attr:`url` reconnect to the restarted server (which starts empty)."""

    name = "redis-server"
    log_stem = "redis"
    ready_timeout = READY_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return redis_argv(self.port, self.directory)

    def ready(self) -> bool:
        return _ping(self.port)

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
