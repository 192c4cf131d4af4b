"""Loading the config, and reloading it on SIGHUP or when its files change.

A reload loads and validates the config (in a thread: parsing and compiling take long enough to
stall requests), builds a runtime from it reusing the unchanged handlers of the current one,
starts it, swaps it in, waits for the requests still running on the old runtime, then shuts down
the handlers the new one retired. Any failure before the swap leaves the current runtime serving
untouched; it is logged with every config error and counted in
``mixer_config_reloads_total{result="failure"}``. Reloads are serialized, and a reload asked for
while one is waiting to run is merged into it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from mixer.adapter import DeliveryAck
from mixer.api import ConfigInfo, RuntimeHolder, ServerMetrics
from mixer.config import ConfigError, ValidatedConfig, config_files, load_config, load_config_text
from mixer.defaults import EMBEDDED_CONFIG_NAME, embedded_config_text
from mixer.registry import Registry
from mixer.runtime import Runtime, build_runtime

#: (path, mtime in ns, size) per config file, or the reason the files cannot be listed.
Fingerprint = tuple[tuple[str, int, int], ...] | str


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the config comes from: ``paths`` (files and directories), or the embedded default."""

    paths: tuple[str, ...] = ()

    @property
    def embedded(self) -> bool:
        return not self.paths

    def load(self, registry: Registry) -> tuple[ValidatedConfig, ConfigInfo]:
        """Load and validate; safe to call from a worker thread.

        :raises ConfigError: with every problem found.
        """
        if self.embedded:
            config = load_config_text(embedded_config_text(), registry, source_name=EMBEDDED_CONFIG_NAME)
            return config, ConfigInfo(embedded=True, source=EMBEDDED_CONFIG_NAME)
        files = config_files(self.paths)
        config = load_config(files, registry)
        return config, ConfigInfo(
            embedded=False, source=", ".join(self.paths), files=tuple(str(f) for f in files)
        )

    def fingerprint(self) -> Fingerprint:
        """What the config files look like now, cheaply: any edit, addition or removal changes it."""
        if self.embedded:
            return ()
        try:
            files = config_files(self.paths)
            stamps: list[tuple[str, int, int]] = []
            for path in files:
                st = path.stat()
                stamps.append((str(path), st.st_mtime_ns, st.st_size))
        except (ConfigError, OSError) as exc:
            return str(exc)
        return tuple(stamps)


def log_config_error(logger: logging.Logger, what: str, err: ConfigError) -> None:
    """Log every issue of ``err``, one record each, so none is lost in a long message."""
    logger.error("%s: %d configuration error(s)", what, len(err.issues))
    for issue in err.issues:
        logger.error("  %s", issue)


class Reloader:
    """Serialized reloads of the runtime in ``holder``, on request and from a file watcher."""

    def __init__(
        self,
        source: ConfigSource,
        registry: Registry,
        holder: RuntimeHolder,
        metrics: ServerMetrics,
        *,
        data_dir: Path | None,
        shutdown_timeout: float,
        logger: logging.Logger,
        delivery_ack: DeliveryAck = "auto",
    ) -> None:
        self._delivery_ack: DeliveryAck = delivery_ack
        self._source = source
        self._registry = registry
        self._holder = holder
        self._metrics = metrics
        self._data_dir = data_dir
        self._shutdown_timeout = shutdown_timeout
        self._log = logger
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task[bool] | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[bool]] = set()
        self.fingerprint: Fingerprint = ()

    def request(self, reason: str) -> asyncio.Task[bool]:
        """Reload soon (from a signal handler, say); a reload already waiting to run absorbs this one."""
        queued = self._queued
        if queued is not None and not queued.done():
            return queued
        task = asyncio.get_running_loop().create_task(self._queued_reload(reason))
        self._queued = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _queued_reload(self, reason: str) -> bool:
        async with self._lock:
            # From here a new request must queue another reload: this one may read stale files.
            self._queued = None
            return await self._reload_locked(reason)

    async def reload(self, reason: str) -> bool:
        """Reload now (after any reload in progress); whether the new config is serving."""
        async with self._lock:
            return await self._reload_locked(reason)

    async def _reload_locked(self, reason: str) -> bool:
        if self._closed:
            return False
        log = self._log
        log.info("reloading config (%s)", reason)
        # Taken before reading, so an edit made during the load is seen by the next poll.
        self.fingerprint = await asyncio.to_thread(self._source.fingerprint)
        try:
            config, info = await asyncio.to_thread(self._source.load, self._registry)
        except ConfigError as err:
            log_config_error(log, "config reload failed, the current config stays", err)
            self._metrics.reload_failed()
            return False
        except Exception:
            log.exception("config reload failed, the current config stays")
            self._metrics.reload_failed()
            return False
        current = self._holder.current
        try:
            new = build_runtime(
                config,
                self._registry,
                previous=current,
                data_dir=self._data_dir,
                delivery_ack=self._delivery_ack,
            )
            await new.start()
        except Exception as exc:
            log.error("config reload failed, the current config stays: %s", exc)
            self._metrics.reload_failed()
            return False
        old = self._holder.swap(new, info)
        self._metrics.reload_succeeded(new.generation)
        delta = new.delta
        log.info(
            "config generation %d serving (handlers new: %s; reused: %s; retired: %s)",
            new.generation,
            ", ".join(delta.new) or "none",
            ", ".join(delta.reused) or "none",
            ", ".join(delta.retired) or "none",
        )
        await self._retire(old)
        return True

    async def _retire(self, old: Runtime) -> None:
        timeout = self._shutdown_timeout
        if not await self._holder.drained(old, timeout):
            self._log.warning(
                "%d request(s) still running on generation %d after %.1fs; shutting it down anyway",
                self._holder.in_use(old),
                old.generation,
                timeout,
            )
        await old.shutdown(timeout)

    async def watch(self, interval: float) -> None:
        """Poll the config files every ``interval`` seconds and reload when they change. Runs until
        cancelled; does nothing for the embedded default."""
        if self._source.embedded:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                fingerprint = await asyncio.to_thread(self._source.fingerprint)
                if fingerprint != self.fingerprint and not self._lock.locked():
                    self.fingerprint = fingerprint
                    await self.reload("config files changed")
            except Exception:
                # The watcher must outlive any one bad poll, or later edits would go unnoticed.
                self._log.exception("config file watcher: poll failed")

    async def close(self, timeout: float) -> None:
        """Let a reload in progress finish (up to ``timeout`` seconds), then refuse further ones."""
        try:
            async with asyncio.timeout(timeout):
                async with self._lock:
                    self._closed = True
        except TimeoutError:
            self._closed = True
            self._log.warning("a config reload was still running at shutdown")
        for task in list(self._tasks):
            task.cancel()
