"""The status page as HTML: one small page per view, plain tables and inline SVG charts."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from mixer.server._status_data import MAX_SERIES, TOP_SUBJECTS, StatusBoard
from mixer.statusboard import USAGE_CAPACITY

__all__ = [
    "page",
    "render_config",
    "render_denials",
    "render_handlers",
    "render_overview",
    "render_quota",
    "sparkline",
]

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


def page(view: str, title: str, body: str, refresh: int) -> str:
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
