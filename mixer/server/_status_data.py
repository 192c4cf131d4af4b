"""The data of the status page: samples of the metrics registry, short series and the views.

Numbers come from the same registry ``/metrics`` renders, so the page and a scrape agree. A sampler
task reads it every :data:`SAMPLE_SECONDS` and keeps :data:`SERIES_POINTS` points of a few series
(Check and Report rates, each handler's queue and spool) for the small charts: everything held is
bounded by those constants and by :data:`MAX_SERIES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mixer.redact import redact_text
from mixer.statusboard import DENIALS, USAGE

__all__ = ["MAX_SERIES", "SAMPLE_SECONDS", "SERIES_POINTS", "TOP_SUBJECTS", "Samples", "StatusBoard"]

SAMPLE_SECONDS: Final = 2.0
#: Five minutes at the default interval.
SERIES_POINTS: Final = 150
#: Handlers whose queue and spool get a series (the rest still show their current numbers).
MAX_SERIES: Final = 32
RELOAD_HISTORY: Final = 20
TOP_SUBJECTS: Final = 10
MAX_ERROR: Final = 500
#: How far back "recently" reaches when a handler's health is judged from its counters.
HEALTH_WINDOW: Final = 20.0
_RELOAD_LOGGER: Final = "mixer.server.reload"

Labels = tuple[tuple[str, str], ...]


class Samples:
    """One read of a metrics registry: ``(name, labels) -> value`` for every sample."""

    def __init__(self, registry: Any) -> None:
        self.values: dict[tuple[str, Labels], float] = {}
        for family in registry.collect():
            for sample in family.samples:
                self.values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        """Values of ``name`` by the value of its one label ``label``."""
        out: dict[str, float] = {}
        for (sample, labels), value in self.values.items():
            if sample == name and len(labels) == 1 and labels[0][0] == label:
                out[labels[0][1]] = value
        return out

    def summed(self, name: str) -> float:
        return sum(value for (sample, _), value in self.values.items() if sample == name)


@dataclass(slots=True)
class ReloadEvent:
    at: float
    result: str
    generation: int
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "result": self.result, "generation": self.generation, "error": self.error}


class _ErrorCatcher(logging.Handler):
    """Keeps the last error the reloader logged (redacted, cut), for the reload history."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            text = record.getMessage()
            if record.exc_info is not None and record.exc_info[1] is not None:
                text = f"{text}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            self.last = redact_text(text[: MAX_ERROR * 2])[:MAX_ERROR]


@dataclass(slots=True)
class _Point:
    at: float
    values: dict[str, float] = field(default_factory=dict)


class StatusBoard:
    """The sampler and the views of one process's status page."""

    def __init__(self, state: Any, *, interval: float = SAMPLE_SECONDS, points: int = SERIES_POINTS) -> None:
        self.state = state
        self.interval = interval
        self.series: deque[_Point] = deque(maxlen=points)
        self.reloads: deque[ReloadEvent] = deque(maxlen=RELOAD_HISTORY)
        self.last_error: ReloadEvent | None = None
        self._catcher = _ErrorCatcher()
        self._seen_reloads: tuple[float, float] | None = None
        self._seen_generation = 0
        self._last_totals: tuple[float, float, float] | None = None
        self._task: asyncio.Task[None] | None = None
        self.started_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger(_RELOAD_LOGGER).addHandler(self._catcher)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        logging.getLogger(_RELOAD_LOGGER).removeHandler(self._catcher)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                # The page must outlive a collector that failed once.
                logging.getLogger("mixer.server.status").exception("status sampler: read failed")
            await asyncio.sleep(self.interval)

    # -- sampling -------------------------------------------------------------------------------

    def read(self) -> Samples:
        return Samples(self.state.metrics.registry)

    def sample(self, samples: Samples | None = None) -> Samples:
        """Take one point of the series and note reloads since the last one."""
        s = samples if samples is not None else self.read()
        now = time.time()
        self._note_reloads(s, now)
        checks, reports = s.get("mixer_check_calls_total"), s.get("mixer_report_calls_total")
        values: dict[str, float] = {"check_calls": checks, "report_calls": reports}
        last = self._last_totals
        if last is not None and now > last[0]:
            values["check_rate"] = max(0.0, checks - last[1]) / (now - last[0])
            values["report_rate"] = max(0.0, reports - last[2]) / (now - last[0])
        self._last_totals = (now, checks, reports)
        queued = s.by("mixer_delivery_queued_records", "handler")
        spool = s.by("mixer_delivery_spool_records", "handler")
        for name in sorted(queued)[:MAX_SERIES]:
            values[f"queue:{name}"] = queued[name]
            values[f"spool:{name}"] = spool.get(name, 0.0)
        for name in ("failed", "sent", "dead_lettered"):
            for handler, value in s.by(f"mixer_delivery_{name}_total", "handler").items():
                if f"queue:{handler}" in values:
                    values[f"{name}:{handler}"] = value
        for name in ("errors", "timeouts"):
            for handler, value in s.by(f"mixer_handler_{name}_total", "handler").items():
                values[f"{name}:{handler}"] = value
        stores = s.by("mixer_redisquota_store_failures_total", "handler")
        for handler in sorted(stores)[:MAX_SERIES]:
            values[f"quota_failures:{handler}"] = stores[handler]
        self.series.append(_Point(now, values))
        return s

    def _note_reloads(self, s: Samples, now: float) -> None:
        seen = (
            s.get("mixer_config_reloads_total", result="success"),
            s.get("mixer_config_reloads_total", result="failure"),
        )
        generation = int(s.get("mixer_config_generation"))
        before = self._seen_reloads
        self._seen_reloads = seen
        if before is None:
            self._seen_generation = generation
            if generation:
                self.reloads.append(ReloadEvent(now, "loaded", generation))
            return
        # Within one sample, the first load comes before any failed reload, which needs a config.
        if self._seen_generation == 0 and generation:
            self._seen_generation = generation
            self.reloads.append(ReloadEvent(now, "loaded", generation))
        if seen[1] > before[1]:
            event = ReloadEvent(now, "failure", self._seen_generation, self._catcher.last or "see the log")
            self.reloads.append(event)
            self.last_error = event
        if seen[0] > before[0] or generation != self._seen_generation:
            self._seen_generation = generation
            self.reloads.append(ReloadEvent(now, "success", generation))

    def _window(self, key: str, seconds: float = HEALTH_WINDOW) -> float:
        """How much the counter ``key`` grew over the last ``seconds`` of samples."""
        if not self.series:
            return 0.0
        newest = self.series[-1]
        oldest = newest
        for point in reversed(self.series):
            if newest.at - point.at > seconds:
                break
            oldest = point
        return max(0.0, newest.values.get(key, 0.0) - oldest.values.get(key, 0.0))

    def _last_change(self, key: str, seconds: float = HEALTH_WINDOW) -> float | None:
        """When the counter ``key`` last grew, within the last ``seconds`` of samples."""
        points = list(self.series)
        for newer, older in zip(reversed(points), reversed(points[:-1]), strict=False):
            if points[-1].at - newer.at > seconds:
                break
            if newer.values.get(key, 0.0) > older.values.get(key, 0.0):
                return newer.at
        return None

    def chart(self, key: str) -> list[tuple[float, float]]:
        return [(p.at, p.values[key]) for p in self.series if key in p.values]

    # -- views ----------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        s = self.read()
        handlers = self.handlers(s)["handlers"]
        return {
            **self.state.identity(),
            "now": time.time(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "counters": {
                "check_calls": s.get("mixer_check_calls_total"),
                "report_calls": s.get("mixer_report_calls_total"),
                "report_records": s.get("mixer_report_records_total"),
                "quota_calls": s.get("mixer_quota_calls_total"),
                "denials": DENIALS.total,
            },
            "handlers": {h["name"]: h["health"] for h in handlers},
            "unhealthy": sorted(h["name"] for h in handlers if h["health"] != "ok"),
            "last_reload_error": self.last_error.as_dict() if self.last_error is not None else None,
            "series": {
                "check_rate": self.chart("check_rate"),
                "report_rate": self.chart("report_rate"),
            },
        }

    def config(self) -> dict[str, Any]:
        s = self.read()
        holder = self.state.holder
        body: dict[str, Any] = {
            "generation": int(s.get("mixer_config_generation")),
            "last_success": s.get("mixer_config_last_reload_success_timestamp_seconds"),
            "reloads": {
                "success": s.get("mixer_config_reloads_total", result="success"),
                "failure": s.get("mixer_config_reloads_total", result="failure"),
            },
            "history": [event.as_dict() for event in reversed(self.reloads)],
            "last_error": self.last_error.as_dict() if self.last_error is not None else None,
        }
        if holder is not None:
            info = holder.info
            body["source"] = info.source
            body["embedded"] = info.embedded
            body["files"] = list(info.files)
            body["handlers"] = len(holder.current.config.handlers)
            body["instances"] = len(holder.current.config.instances)
            body["rules"] = len(holder.current.config.rules)
            body["plans"] = len(holder.current.config.plans)
        return body

    def handlers(self, samples: Samples | None = None) -> dict[str, Any]:
        s = samples if samples is not None else self.read()
        holder = self.state.holder
        configured: dict[str, str] = {}
        if holder is not None:
            configured = {name: h.adapter for name, h in holder.current.config.handlers.items()}
        delivery = {
            suffix: s.by(f"mixer_delivery_{suffix}", "handler")
            for suffix in ("queued_records", "queued_bytes", "spool_records", "spool_bytes", "circuit_open")
        }
        counters = {
            suffix: s.by(f"mixer_delivery_{suffix}_total", "handler")
            for suffix in ("sent", "failed", "retried", "spooled", "replayed", "dead_lettered")
        }
        errors = s.by("mixer_handler_errors_total", "handler")
        timeouts = s.by("mixer_handler_timeouts_total", "handler")
        overloaded = s.by("mixer_handler_overloaded_total", "handler")
        rows: list[dict[str, Any]] = []
        for name in sorted(set(configured) | set(delivery["queued_records"])):
            row: dict[str, Any] = {
                "name": name,
                "adapter": configured.get(name, "(retired)"),
                "errors": errors.get(name, 0.0),
                "timeouts": timeouts.get(name, 0.0),
                "overloaded": overloaded.get(name, 0.0),
            }
            if name in delivery["queued_records"]:
                row["delivery"] = {
                    **{k: v.get(name, 0.0) for k, v in delivery.items()},
                    **{k: v.get(name, 0.0) for k, v in counters.items()},
                }
            row["health"] = self._health(name, row)
            rows.append(row)
        return {"handlers": rows}

    def _health(self, name: str, row: Mapping[str, Any]) -> str:
        queue = row.get("delivery")
        if queue is not None:
            if queue["circuit_open"]:
                return "down"
            if queue["spool_records"]:
                return "retrying"
            failed = self._last_change(f"failed:{name}")
            # Failing until a send succeeds after the last failure (or the failures are old).
            if failed is not None and failed > (self._last_change(f"sent:{name}") or 0.0):
                return "retrying"
        if self._window(f"errors:{name}") or self._window(f"timeouts:{name}"):
            return "erroring"
        return "ok"

    def quota(self) -> dict[str, Any]:
        s = self.read()
        stores: list[dict[str, Any]] = []
        fields = (
            "allocations",
            "denials",
            "dedup_hits",
            "store_failures",
            "store_timeouts",
            "fail_open_grants",
        )
        names = set(s.by("mixer_redisquota_allocations_total", "handler"))
        for name in sorted(names):
            row: dict[str, Any] = {"name": name}
            for f in fields:
                row[f] = s.get(f"mixer_redisquota_{f}_total", handler=name)
            row["health"] = "failing" if self._store_failing(name, row) else "ok"
            stores.append(row)
        return {
            "stores": stores,
            "top_subjects": USAGE.top(TOP_SUBJECTS),
            "by_plan": USAGE.top_by_plan(TOP_SUBJECTS),
            "usage_evictions": USAGE.evictions,
        }

    def _store_failing(self, name: str, row: Mapping[str, Any]) -> bool:
        return self._window(f"quota_failures:{name}") > 0

    def denials(self) -> dict[str, Any]:
        return {"total": DENIALS.total, "recent": [d.as_dict() for d in DENIALS.recent()]}
