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
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.backends._process import accepts, stop_process, wait_ready

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
        return stop_process(self.process, timeout, signal.SIGQUIT)


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

    def listening() -> bool:
        while waiting and accepts(waiting[0]):
            waiting.pop(0)
        return not waiting

    wait_ready(
        process,
        listening,
        name=f"nginx on ports {waiting}",
        log=lambda: f"{started.output()}\n{started.error_log()}",
        timeout=READY_TIMEOUT,
        give_up=started.stop,
    )
    return started


@contextlib.contextmanager
def nginx(conf_text: str, prefix: Path, ports: Iterable[int]) -> Iterator[NginxProcess]:
    """:func:`start_nginx`, stopped by PID when the block ends."""
    started = start_nginx(conf_text, prefix, ports)
    try:
        yield started
    finally:
        started.stop()
