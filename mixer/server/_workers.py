"""``mixer serve --workers N``: a supervisor process running N server processes on shared ports.

Each worker is ``python -m mixer serve`` re-executed with the same options plus internal flags
(``--worker-index``, ``--parent-pid``, ...); the workers bind the same gRPC and HTTP ports with
SO_REUSEPORT and the kernel spreads connections over them. The supervisor:

- resolves port 0 once for all workers by holding a bound, never-listening SO_REUSEPORT socket;
- gives worker ``i`` the environment variable ``MIXER_WORKER_INDEX=i`` (usable in config as
  ``${MIXER_WORKER_INDEX}``) and its own ``DATA_DIR/worker-i`` (a Prometheus handler in a worker
  other than 0 listens on an ephemeral port whatever its config says; worker 0 serves the sum);
- writes the ready file (with every worker's pid) once all workers are ready, and again after a
  restart;
- restarts a worker that dies, with exponential backoff, once the set has been ready; a worker
  that dies before the set was ever ready fails the start (exit 1): that is a config or port
  problem, not a crash to retry;
- forwards SIGHUP to every worker; on SIGTERM or SIGINT sends SIGTERM to each worker, waits up to
  the drain delay plus the shutdown timeout, then SIGKILLs what is left. A second signal SIGKILLs at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Final

from mixer.api import ListenAddress
from mixer.server._app import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, write_json_atomically
from mixer.server._net import reserve_shared_port
from mixer.server._options import ServeOptions

logger = logging.getLogger("mixer.server.workers")

WORKER_INDEX_ENV: Final = "MIXER_WORKER_INDEX"
PROMETHEUS_LISTEN_ENV: Final = "MIXER_PROMETHEUS_LISTEN"

_POLL_SECONDS: Final = 0.05
_BACKOFF_INITIAL: Final = 0.5
_BACKOFF_MAX: Final = 30.0
#: A worker that ran this long before dying starts its slot's backoff over.
_BACKOFF_RESET_AFTER: Final = 60.0
#: Time past the shutdown timeout a worker gets to exit before SIGKILL.
_EXIT_MARGIN: Final = 2.0


@dataclass(slots=True)
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = _BACKOFF_INITIAL
    restart_at: float | None = None
    ready_pid: int | None = None


class WorkerSupervisor:
    """Runs ``options.workers`` server processes and keeps them running (see the module docs)."""

    def __init__(self, options: ServeOptions, *, python: str = sys.executable) -> None:
        self.options = options
        self._python = python
        self._slots = [_Slot(i) for i in range(options.workers)]
        self._hangups = 0
        self._stop_signal: int | None = None
        self._reservations: list[socket.socket] = []
        self._state_dir: Path | None = None
        self._ever_ready = False
        self._published: tuple[int, ...] = ()
        self._grpc = ListenAddress.parse(options.grpc_listen)
        self._http = ListenAddress.parse(options.http_listen)
        self._admin = ListenAddress.parse(options.admin_listen)

    # -- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here; the loop acts on them. A second stop signal cannot wait for the loop,
        # which may be the one stuck waiting for workers to exit.
        if signum == signal.SIGHUP:
            self._hangups += 1
            return
        if self._stop_signal is not None:
            logger.warning("second %s: killing the workers", signal.Signals(signum).name)
            self._kill_all(signal.SIGKILL)
            os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_FAILURE)
        self._stop_signal = signum

    # -- run ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until told to stop; the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            try:
                self._reserve_ports()
            except OSError as exc:
                logger.error("cannot listen: %s", exc)
                return EXIT_FAILURE
            with tempfile.TemporaryDirectory(prefix="mixer-workers-") as state_dir:
                self._state_dir = Path(state_dir)
                return self._supervise()
        finally:
            for sock in self._reservations:
                sock.close()
            if self.options.ready_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.options.ready_file.unlink()

    def _reserve_ports(self) -> None:
        for attr in ("_grpc", "_http", "_admin"):
            address: ListenAddress = getattr(self, attr)
            sock, bound = reserve_shared_port(address)
            self._reservations.append(sock)
            setattr(self, attr, bound)
        logger.info(
            "supervisor (pid %d): %d workers on gRPC %s, HTTP %s and admin %s",
            os.getpid(),
            len(self._slots),
            self._grpc,
            self._http,
            self._admin,
        )

    def _supervise(self) -> int:
        for slot in self._slots:
            self._spawn(slot)
        while True:
            if self._stop_signal is not None:
                logger.info("%s: stopping the workers", signal.Signals(self._stop_signal).name)
                self._stop_all()
                return EXIT_OK
            if self._hangups:
                self._hangups = 0
                logger.info("SIGHUP: forwarding to the workers")
                self._kill_all(signal.SIGHUP)
            now = time.monotonic()
            for slot in self._slots:
                process = slot.process
                if process is not None and process.poll() is not None:
                    if not self._ever_ready:
                        logger.error(
                            "worker %d exited with %s before serving: giving up",
                            slot.index,
                            process.returncode,
                        )
                        self._stop_all()
                        return EXIT_FAILURE
                    self._schedule_restart(slot, now)
                if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    self._spawn(slot)
            self._check_ready()
            time.sleep(_POLL_SECONDS)

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        assert slot.process is not None
        code = slot.process.returncode
        lived = now - slot.started_at
        if lived >= _BACKOFF_RESET_AFTER:
            slot.backoff = _BACKOFF_INITIAL
        delay = slot.backoff
        slot.backoff = min(slot.backoff * 2, _BACKOFF_MAX)
        slot.restart_at = now + delay
        slot.process = None
        slot.ready_pid = None
        logger.warning(
            "worker %d (exit %s after %.1fs) will be restarted in %.1fs (restart %d)",
            slot.index,
            code,
            lived,
            delay,
            slot.restarts + 1,
        )

    def worker_options(self, slot_index: int, restarts: int) -> ServeOptions:
        """The options worker ``slot_index`` runs with."""
        assert self._state_dir is not None
        options = self.options
        data_dir = options.data_dir / f"worker-{slot_index}" if options.data_dir is not None else None
        return replace(
            options,
            workers=1,
            grpc_listen=str(self._grpc),
            http_listen=str(self._http),
            admin_listen=str(self._admin),
            data_dir=data_dir,
            ready_file=self._state_dir / f"worker-{slot_index}.json",
            worker_index=slot_index,
            worker_restarts=restarts,
            parent_pid=os.getpid(),
        )

    def worker_env(self, slot_index: int) -> dict[str, str]:
        env = dict(os.environ)
        env[WORKER_INDEX_ENV] = str(slot_index)
        return env

    def _spawn(self, slot: _Slot) -> None:
        options = self.worker_options(slot.index, slot.restarts)
        command = [self._python, "-m", "mixer", "serve", *options.to_argv()]
        assert options.ready_file is not None
        with contextlib.suppress(FileNotFoundError):
            options.ready_file.unlink()
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which stops workers in order.
        slot.process = subprocess.Popen(command, env=self.worker_env(slot.index), start_new_session=True)
        slot.started_at = time.monotonic()
        slot.restart_at = None
        logger.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _check_ready(self) -> None:
        assert self._state_dir is not None
        for slot in self._slots:
            if slot.process is None or slot.ready_pid == slot.process.pid:
                continue
            try:
                info = json.loads((self._state_dir / f"worker-{slot.index}.json").read_text("utf-8"))
            except (FileNotFoundError, ValueError):
                continue
            if info.get("pid") == slot.process.pid:
                slot.ready_pid = slot.process.pid
        pids = tuple(slot.ready_pid for slot in self._slots if slot.ready_pid is not None)
        if len(pids) != len(self._slots) or pids == self._published:
            return
        self._published = pids
        if not self._ever_ready:
            logger.info("all %d workers serving", len(pids))
        self._ever_ready = True
        if self.options.ready_file is not None:
            write_json_atomically(
                self.options.ready_file,
                {
                    "pid": os.getpid(),
                    "grpc": str(self._grpc),
                    "http": str(self._http),
                    "admin": str(self._admin),
                    "workers": list(pids),
                },
            )

    # -- stop -----------------------------------------------------------------------------------

    def _kill_all(self, signum: int) -> None:
        for slot in self._slots:
            process = slot.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def _stop_all(self) -> None:
        self._kill_all(signal.SIGTERM)
        # Workers keep serving for the drain delay before their shutdown timeout starts.
        options = self.options
        deadline = time.monotonic() + options.drain_delay + options.shutdown_timeout + _EXIT_MARGIN
        for slot in self._slots:
            process = slot.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %d (pid %d) did not stop in time: SIGKILL", slot.index, process.pid)
                process.kill()
                process.wait()
            if process.returncode not in (0, None):
                logger.warning("worker %d exited with %s", slot.index, process.returncode)


def run_workers(options: ServeOptions) -> int:
    """Run the supervisor of ``options.workers`` worker processes; the exit code."""
    return WorkerSupervisor(options).run()
