"""Running one server process until a signal (or the supervisor's disappearance) stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from mixer.server._listeners import StartupError
from mixer.server._options import ServeOptions
from mixer.server._reload import Reloader

logger = logging.getLogger("mixer.server")

#: Exit codes: 0 after a graceful stop, 1 when the server could not start or a second signal cut
#: the shutdown short (130 when that signal was SIGINT, as shells report a Ctrl-C).
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INTERRUPTED: Final = 130

#: How often a worker checks that its supervisor is still there.
_PARENT_POLL_SECONDS: Final = 1.0


class Serving(Protocol):
    """What :func:`run_with_signals` needs of a server (:class:`~mixer.server.MixerServer`)."""

    options: ServeOptions
    stop_requested: asyncio.Event

    @property
    def reloader(self) -> Reloader | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_with_signals(server: Serving) -> int:
    """Start ``server``, serve until SIGTERM or SIGINT (or the supervisor goes away), stop; the
    exit code. SIGHUP reloads the config. A second SIGTERM or SIGINT exits at once."""
    loop = asyncio.get_running_loop()
    stop_requested = server.stop_requested
    signals_seen: list[int] = []

    def on_stop_signal(signum: int) -> None:
        if signals_seen:
            logger.warning("second %s: exiting without finishing the shutdown", signal.Signals(signum).name)
            os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_FAILURE)
        signals_seen.append(signum)
        logger.info("%s: shutting down (send it again to exit at once)", signal.Signals(signum).name)
        stop_requested.set()

    def on_hangup() -> None:
        if server.reloader is None:
            logger.warning("SIGHUP before the config was loaded: ignored")
            return
        server.reloader.request("SIGHUP")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    watch_parent = None
    parent_pid = server.options.parent_pid
    if parent_pid is not None:
        watch_parent = loop.create_task(_watch_parent(parent_pid, stop_requested))
    try:
        started = await _first(server.start(), stop_requested.wait())
        if not started:
            logger.info("stop requested while starting")
        else:
            await stop_requested.wait()
        await server.stop()
        return EXIT_OK
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_FAILURE
    finally:
        if watch_parent is not None:
            watch_parent.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


async def _watch_parent(parent_pid: int, stop_requested: asyncio.Event) -> None:
    # A worker runs in its own session (a terminal's Ctrl-C goes to the supervisor alone), so
    # nothing else would stop it if the supervisor were killed outright.
    while True:
        await asyncio.sleep(_PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            logger.warning("supervisor (pid %d) is gone: shutting down", parent_pid)
            stop_requested.set()
            return


async def _first(start: Coroutine[Any, Any, None], stop: Coroutine[Any, Any, Any]) -> bool:
    """Run ``start`` unless ``stop`` finishes first (then cancel it); whether ``start`` completed."""
    start_task = asyncio.ensure_future(start)
    stop_task = asyncio.ensure_future(stop)
    try:
        await asyncio.wait((start_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
    if start_task.done():
        start_task.result()
        return True
    start_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await start_task
    return False
