"""A real nginx with a config of the test's own, in a prefix of its own, stopped by PID with SIGQUIT.

:func:`nginx` writes the config into ``PREFIX/nginx.conf`` and runs ``nginx -c CONF -p PREFIX/
-e PREFIX/logs/error.log`` in the foreground (the config must say ``daemon off;``), with ``logs/``
and ``temp/`` made under the prefix so that relative ``pid``, ``error_log`` and ``*_temp_path``
paths stay inside it. It yields once nginx accepts connections on every port given, and stops it
with SIGQUIT (graceful), then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "/usr/sbin/nginx"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass
class NginxProcess:
    process: subprocess.Popen[bytes]
    prefix: Path
    conf: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text("utf-8", errors="replace") if path.exists() else ""

    def output(self) -> str:
        return (self.prefix / "nginx.out").read_text("utf-8", errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGQUIT (finish requests in flight, then exit); SIGKILL if that takes too long."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_nginx(conf_text: str, prefix: Path, ports: Iterable[int]) -> NginxProcess:
    """Start nginx with ``conf_text`` under ``prefix``; returns once every one of ``ports`` accepts."""
    if "daemon off;" not in conf_text:
        raise ValueError("the config must say `daemon off;` so that the PID started is nginx's")
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text, "utf-8")
    with (prefix / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", f"{prefix}/", "-e", str(prefix / "logs" / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = NginxProcess(process, prefix, conf)
    waiting = list(ports)
    deadline = time.monotonic() + READY_TIMEOUT
    while waiting:
        if process.poll() is not None:
            raise RuntimeError(
                f"nginx exited with {process.returncode}:\n{started.output()}\n{started.error_log()}"
            )
        if time.monotonic() > deadline:
            started.stop()
            raise RuntimeError(f"nginx did not listen on {waiting} within {READY_TIMEOUT}s")
        if _accepts(waiting[0]):
            waiting.pop(0)
        else:
            time.sleep(0.02)
    return started


@contextlib.contextmanager
def nginx(conf_text: str, prefix: Path, ports: Iterable[int]) -> Iterator[NginxProcess]:
    """:func:`start_nginx`, stopped by PID when the block ends."""
    started = start_nginx(conf_text, prefix, ports)
    try:
        yield started
    finally:
        started.stop()
