"""Starting a server process on a loopback port, waiting until it answers, and stopping it by PID."""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    log: Callable[[], str],
    timeout: float,
    give_up: Callable[[], object],
    interval: float = 0.02,
) -> None:
    """Poll ``ready`` until it holds; ``give_up`` (stop or kill) when ``timeout`` passes first.

    :raises RuntimeError: the process exited, or did not get ready in time (with its ``log``).
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        if time.monotonic() > deadline:
            give_up()
            raise RuntimeError(f"{name} not ready after {timeout}s:\n{log()}")
        time.sleep(interval)


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, sig: signal.Signals = signal.SIGTERM
) -> int:
    """``sig`` by PID, SIGKILL if the process is still there after ``timeout`` seconds; its exit code.

    Idempotent.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL by PID: a crash, with no chance to close connections cleanly."""
    if process.poll() is None:
        process.kill()
        process.wait()


class ManagedProcess(abc.ABC):
    """One server process on a fixed loopback port. :meth:`stop` and :meth:`start` keep the port,
    so clients configured with it reconnect to the restarted server (which starts empty).

    Subclasses give :attr:`name` (for messages), :attr:`log_stem` (log files are
    ``DIRECTORY/STEM-PORT-N.log``), :meth:`argv` and, when a connection is not enough,
    :meth:`ready`.
    """

    name = "server"
    log_stem = "server"
    ready_timeout = 10.0
    stop_timeout = 10.0

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """The command line that starts the server on ``self.port``."""

    def environ(self) -> dict[str, str] | None:
        """The environment to start with; None inherits this process's."""
        return None

    def ready(self) -> bool:
        return accepts(self.port)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        self.starts += 1
        log = self.directory / f"{self.log_stem}-{self.port}-{self.starts}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, env=self.environ()
            )
        wait_ready(
            self.process,
            self.ready,
            name=f"{self.name} on port {self.port}",
            log=log.read_text,
            timeout=self.ready_timeout,
            give_up=self.kill,
        )
        return self

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after :attr:`stop_timeout` seconds. Idempotent."""
        if self.running:
            # A paused process cannot act on SIGTERM.
            self.resume()
        if self.process is not None:
            stop_process(self.process, self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, with no chance to close connections cleanly."""
        if self.process is not None:
            kill_process(self.process)

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
