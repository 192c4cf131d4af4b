"""The live status page on the HTTP port: ``/status`` and its views, each with a JSON twin.

Views (see docs/status-page.md): the overview (``/status``), the config and its reload history
(``/status/config``), handlers with their delivery queues (``/status/handlers``), quota stores and
the busiest plan subjects (``/status/quota``), and the most recent denials (``/status/denials``);
``.json`` after any of them gives the same data as JSON.

The data of each view (:class:`StatusBoard`, sampling the metrics registry) is in
:mod:`mixer.server._status_data`, its HTML in :mod:`mixer.server._status_html`; this module puts
them on the routes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from mixer.server._status_data import SAMPLE_SECONDS, SERIES_POINTS, StatusBoard, _Point
from mixer.server._status_html import (
    page,
    render_config,
    render_denials,
    render_handlers,
    render_overview,
    render_quota,
    sparkline,
)

# _Point: the tests build series of their own.
__all__ = ["SAMPLE_SECONDS", "SERIES_POINTS", "StatusBoard", "_Point", "install_status", "sparkline"]


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
        text = page(path, title, render(board, view(board)), refresh)
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
