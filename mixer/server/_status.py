"""The live status page on the HTTP port: ``/status`` and its views, each with a JSON twin.

Views (see docs/status-page.md): the overview (``/status``), the config and its reload history
(``/status/config``), handlers with their delivery queues (``/status/handlers``), quota stores and
the busiest plan subjects (``/status/quota``), and the most recent denials (``/status/denials``);
``.json`` after any of them gives the same data as JSON.

Numbers come from the same registry ``/metrics`` renders, so the page and a scrape agree. A sampler
task reads it every :data:`SAMPLE_SECONDS` and keeps :data:`SERIES_POINTS` points of a few series
(Check and Report rates, each handler's queue and spool) for the small charts: everything held is
bounded by those constants and by :data:`MAX_SERIES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from mixer.redact import redact_text
from mixer.statusboard import DENIALS, USAGE, USAGE_CAPACITY

__all__ = ["SAMPLE_SECONDS", "SERIES_POINTS", "StatusBoard", "install_status"]

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


# -- HTML -------------------------------------------------------------------------------------

_VIEWS: Final = (
    ("", "Overview"),
    ("/config", "Config"),
    ("/handlers", "Handlers"),
    ("/quota", "Quota"),
    ("/denials", "Denials"),
)

_CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f23;background:#f6f8fa}
header{background:#24292e;color:#fff;padding:.5em 1em}header a{color:#c8e1ff;margin-right:1em}
header a.on{color:#fff;font-weight:bold}main{padding:0 1em 1em;max-width:1100px}
h1{font-size:1.1em;margin:.3em 0}h2{font-size:1em;margin:1em 0 .4em}h3{font-size:.95em;margin:.6em 0 .3em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{background:#fff;border:1px solid #d1d5da;
border-radius:6px;padding:.5em .8em;min-width:9em;flex:1 1 9em}.card b{display:block;font-size:1.4em}
.wrap{overflow-x:auto}table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #d1d5da;padding:.25em .5em;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}.ok,.loaded,.success,.closed{color:#22863a}
.down,.failing,.failure,.erroring{color:#cb2431;font-weight:bold}.retrying{color:#b08800;font-weight:bold}
svg{background:#fff;border:1px solid #d1d5da;border-radius:4px;max-width:100%}
.err{background:#ffeef0;border:1px solid #cb2431;padding:.5em;white-space:pre-wrap;word-break:break-word}
small{color:#586069}td.text{white-space:normal;min-width:14em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _minutes(board: StatusBoard) -> str:
    return f"{_num(board.interval * (board.series.maxlen or 0) / 60)} minutes"


def _when(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) + "Z"


def sparkline(points: list[tuple[float, float]], *, title: str, width: int = 280, height: int = 48) -> str:
    """A small inline SVG line chart of ``points`` (time, value), labelled with its last value."""
    last = _num(points[-1][1]) if points else "-"
    head = f'<figure style="margin:0"><figcaption><small>{_e(title)}: <b>{_e(last)}</b></small></figcaption>'
    svg = (
        f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    )
    if len(points) < 2:
        return f"{head}{svg}<text x='6' y='28' fill='#586069'>collecting…</text></svg></figure>"
    t0, t1 = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1.0
    span = (t1 - t0) or 1.0
    coords = " ".join(
        f"{(t - t0) / span * (width - 4) + 2:.1f},{height - 2 - v / top * (height - 14):.1f}"
        for t, v in points
    )
    return (
        f"{head}{svg}<polyline fill='none' stroke='#0366d6' stroke-width='1.5' points='{coords}'/>"
        f"<text x='{width - 4}' y='11' text-anchor='end' font-size='10' fill='#586069'>"
        f"max {_e(_num(top))}</text>"
        "</svg></figure>"
    )


def _page(view: str, title: str, body: str, refresh: int) -> str:
    nav = "".join(
        f'<a href="/status{path}"{" class=on" if path == view else ""}>{_e(name)}</a>'
        for path, name in _VIEWS
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="refresh" content="{refresh}">'
        f"<title>Mesh Mixer status: {_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><nav>{nav}</nav></header><main><h1>{_e(title)}</h1>{body}"
        f'<p><small>JSON: <a href="/status{view}.json">/status{view}.json</a>'
        f" · rendered {_e(_when(time.time()))}"
        f" · refreshes every {refresh}s</small></p></main></body></html>"
    )


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    return f"<div class=wrap><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _cell(value: Any, key: str = "") -> str:
    data = f' data-key="{_e(key)}"' if key else ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td class=num{data}>{_e(_num(value))}</td>"
    return f"<td{data}>{_e(value)}</td>"


def _health_cell(value: str, key: str) -> str:
    return f'<td class="{_e(value)}" data-key="{_e(key)}">{_e(value)}</td>'


def _error_box(error: Mapping[str, Any]) -> str:
    return f'<div class=err data-key="last_error">{_e(_when(error["at"]))}: {_e(error["error"])}</div>'


def render_overview(board: StatusBoard, data: Mapping[str, Any]) -> str:
    counters = data["counters"]
    cards = "".join(
        f'<div class=card><small>{_e(label)}</small><b data-key="{key}">{_e(_num(counters[key]))}</b></div>'
        for key, label in (
            ("check_calls", "Checks"),
            ("report_calls", "Reports"),
            ("report_records", "Report records"),
            ("quota_calls", "Quota calls"),
            ("denials", "Denials"),
        )
    )
    state = (
        "<div class=cards><div class=card><small>state</small>"
        f'<b data-key="status">{_e(data["status"])}</b></div>'
        "<div class=card><small>config generation</small>"
        f'<b data-key="generation">{data.get("generation", "-")}</b></div>'
        f"<div class=card><small>uptime</small><b>{_e(_num(data['uptime_seconds']))}s</b></div></div>"
    )
    charts = (
        '<div class=cards style="margin-top:.6em">'
        + sparkline(data["series"]["check_rate"], title="Checks per second")
        + sparkline(data["series"]["report_rate"], title="Reports per second")
        + "</div>"
    )
    health = _table(
        ("handler", "health"),
        ([_cell(name), _health_cell(h, f"health:{name}")] for name, h in sorted(data["handlers"].items())),
    )
    error = data["last_reload_error"]
    err = f"<h2>Last reload error</h2>{_error_box(error)}" if error else ""
    return f"{state}<h2>Counters</h2><div class=cards>{cards}</div>{charts}{err}<h2>Handlers</h2>{health}"


def render_config(board: StatusBoard, data: Mapping[str, Any]) -> str:
    facts = _table(
        ("what", "value"),
        (
            [_cell("generation"), _cell(data["generation"], "generation")],
            [_cell("source"), _cell(data.get("source", "-"))],
            [_cell("files"), _cell(", ".join(data.get("files", [])) or "-")],
            [
                _cell("handlers / instances / rules / plans"),
                _cell(" / ".join(str(data.get(k, 0)) for k in ("handlers", "instances", "rules", "plans"))),
            ],
            [
                _cell("reloads ok / failed"),
                _cell(f"{_num(data['reloads']['success'])} / {_num(data['reloads']['failure'])}"),
            ],
            [_cell("last loaded"), _cell(_when(data["last_success"]) if data["last_success"] else "-")],
        ),
    )
    history = _table(
        ("when", "result", "generation", "error"),
        (
            [
                _cell(_when(e["at"])),
                _health_cell(e["result"], "result"),
                _cell(e["generation"]),
                _cell(e["error"]),
            ]
            for e in data["history"]
        ),
    )
    error = data["last_error"]
    err = f"<h2>Last error</h2>{_error_box(error) if error else '<p>none since start</p>'}"
    return f"{facts}{err}<h2>Reload history</h2>{history}"


def render_handlers(board: StatusBoard, data: Mapping[str, Any]) -> str:
    rows = data["handlers"]
    table = _table(
        ("handler", "adapter", "health", "errors", "timeouts", "overloaded"),
        (
            [
                _cell(r["name"]),
                _cell(r["adapter"]),
                _health_cell(r["health"], f"health:{r['name']}"),
                _cell(r["errors"], f"errors:{r['name']}"),
                _cell(r["timeouts"]),
                _cell(r["overloaded"]),
            ]
            for r in rows
        ),
    )
    queued = [r for r in rows if "delivery" in r]
    queues = _table(
        (
            "handler",
            "queue",
            "queue bytes",
            "spool",
            "spool bytes",
            "circuit",
            "sent",
            "failed",
            "retried",
            "dead letters",
        ),
        (
            [
                _cell(r["name"]),
                _cell(r["delivery"]["queued_records"], f"queue:{r['name']}"),
                _cell(r["delivery"]["queued_bytes"]),
                _cell(r["delivery"]["spool_records"], f"spool:{r['name']}"),
                _cell(r["delivery"]["spool_bytes"]),
                _cell("open" if r["delivery"]["circuit_open"] else "closed", f"circuit:{r['name']}"),
                _cell(r["delivery"]["sent"], f"sent:{r['name']}"),
                _cell(r["delivery"]["failed"], f"failed:{r['name']}"),
                _cell(r["delivery"]["retried"]),
                _cell(r["delivery"]["dead_lettered"], f"dead:{r['name']}"),
            ]
            for r in queued
        ),
    )
    charts = "".join(
        sparkline(board.chart(f"queue:{r['name']}"), title=f"{r['name']} queue")
        + sparkline(board.chart(f"spool:{r['name']}"), title=f"{r['name']} spool")
        for r in queued[:MAX_SERIES]
    )
    return f"{table}<h2>Delivery queues</h2>" + (
        queues
        + f'<div class=cards style="margin-top:.6em">{charts}</div>'
        + f"<p><small>charts: the last {_minutes(board)}, sampled every {_num(board.interval)}s</small></p>"
        if queued
        else "<p>no delivery queues</p>"
    )


def render_quota(board: StatusBoard, data: Mapping[str, Any]) -> str:
    stores = _table(
        ("store", "health", "allocations", "denials", "failures", "timeouts", "fail-open grants"),
        (
            [
                _cell(r["name"]),
                _health_cell(r["health"], f"store:{r['name']}"),
                _cell(r["allocations"]),
                _cell(r["denials"]),
                _cell(r["store_failures"]),
                _cell(r["store_timeouts"]),
                _cell(r["fail_open_grants"]),
            ]
            for r in data["stores"]
        ),
    )
    plans = "".join(
        f"<h3>{_e(plan)}</h3>"
        + _table(
            ("subject", "checks", "denied", "± error"),
            (
                [_cell(u["subject"]), _cell(u["checks"]), _cell(u["denied"]), _cell(u["error_bound"])]
                for u in entries
            ),
        )
        for plan, entries in data["by_plan"].items()
    )
    return (
        f"<h2>Quota stores</h2>{stores if data['stores'] else '<p>no Redis quota store</p>'}"
        f"<h2>Busiest subjects by plan</h2>{plans or '<p>no plan checks yet</p>'}"
        f"<p><small>the top {TOP_SUBJECTS} of each plan from a count of at most {USAGE_CAPACITY} subjects; "
        "an entry's checks may be over by at most its error bound</small></p>"
    )


def render_denials(board: StatusBoard, data: Mapping[str, Any]) -> str:
    table = _table(
        ("when", "api", "code", "reason"),
        (
            [
                _cell(_when(d["at"])),
                _cell(d["api"]),
                _cell(d["code"]),
                f"<td class=text>{_e(d['reason'])}</td>",
            ]
            for d in data["recent"]
        ),
    )
    return (
        f'<p>denials since start: <b data-key="denials">{data["total"]}</b>'
        f" (the last {len(data['recent'])} below)</p>{table}"
    )


_RENDER: Final[
    dict[
        str,
        tuple[str, Callable[[StatusBoard], dict[str, Any]], Callable[[StatusBoard, Mapping[str, Any]], str]],
    ]
] = {
    "": ("Overview", StatusBoard.overview, render_overview),
    "/config": ("Config and reloads", StatusBoard.config, render_config),
    "/handlers": ("Handlers and delivery queues", StatusBoard.handlers, render_handlers),
    "/quota": ("Quota", StatusBoard.quota, render_quota),
    "/denials": ("Recent denials", StatusBoard.denials, render_denials),
}

STATUS_KEY: Final = web.AppKey("status_board", StatusBoard)


def install_status(app: web.Application, state: Any, *, interval: float = SAMPLE_SECONDS) -> StatusBoard:
    """Add the ``/status`` routes to ``app`` and run the sampler while the app runs."""
    board = StatusBoard(state, interval=interval)
    app[STATUS_KEY] = board

    async def on_startup(_: web.Application) -> None:
        await board.start()

    async def on_cleanup(_: web.Application) -> None:
        await board.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    for path, (title, view, render) in _RENDER.items():
        app.router.add_get(f"/status{path}", _html(board, path, title, view, render))
        app.router.add_get(f"/status{path}.json", _json(board, view))
    return board


def _html(
    board: StatusBoard,
    path: str,
    title: str,
    view: Callable[[StatusBoard], dict[str, Any]],
    render: Callable[[StatusBoard, Mapping[str, Any]], str],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        refresh = _refresh(request)
        text = _page(path, title, render(board, view(board)), refresh)
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    return handle


def _json(
    board: StatusBoard, view: Callable[[StatusBoard], dict[str, Any]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        text = json.dumps(view(board), indent=2, default=str)
        return web.Response(text=text, content_type="application/json", headers={"Cache-Control": "no-store"})

    return handle


def _refresh(request: web.Request) -> int:
    # ?refresh=N (2..3600) slows or speeds the page's self-refresh; anything else is the default.
    raw = request.query.get("refresh", "")
    if raw.isdigit() and 2 <= int(raw) <= 3600:
        return int(raw)
    return 5
