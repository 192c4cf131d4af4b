"""A real nginx with deploy/nginx/nginx.conf in front of a service, asking a real `mixer serve`.

nginx asks mixer's /v1/auth before every request (auth_request) and sends every access-log line to
mixer's syslog input; the embedded default's demo plans decide and its Prometheus handler counts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.backends.nginx import NginxProcess, nginx
from tests.server.support import ServerProcess, free_port, launcher, metric_value, wait_until

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf"


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(conf: str, replacements: dict[str, str]) -> str:
    """The deploy config with its example addresses swapped; each must be there exactly once."""
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"deploy/nginx/nginx.conf should contain {old!r} exactly once"
        conf = conf.replace(old, new)
    return conf


@dataclass
class Upstream:
    """The service behind nginx: it answers 200 and remembers every request's headers."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({name.lower(): value for name, value in request.headers.items()})
        return web.Response(text=f"hello {request.headers.get('X-Mixer-Subject', '?')}\n")


@dataclass
class Stack:
    mixer: ServerProcess
    proxy: NginxProcess
    upstream: Upstream
    url: str
    prometheus: str
    session: aiohttp.ClientSession

    async def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
        async with self.session.get(self.url + path, headers=headers) as response:
            return response.status, dict(response.headers), await response.text()

    def istio(self, code: str) -> float:
        with urllib.request.urlopen(self.prometheus, timeout=5) as response:
            text = response.read().decode()
        value = metric_value(
            text,
            "istio_requests_total",
            response_code=code,
            destination_service_name="shop",
            request_protocol="http",
        )
        return value or 0.0


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream.port = int(runner.addresses[0][1])
    syslog_port, prometheus_port, nginx_port = udp_port(), free_port(), free_port()
    try:
        with launcher(tmp_path) as launch:
            mixer = launch.start(
                "--syslog-listen",
                f"127.0.0.1:{syslog_port}",
                env={"MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{prometheus_port}"},
            )
            conf = render(
                DEPLOY_CONF.read_text("utf-8"),
                {
                    "listen 127.0.0.1:8080;": f"listen 127.0.0.1:{nginx_port};",
                    "server 127.0.0.1:9093;": f"server 127.0.0.1:{mixer.http_port};",
                    "server 127.0.0.1:8081;": f"server 127.0.0.1:{upstream.port};",
                    "syslog:server=127.0.0.1:5140,": f"syslog:server=127.0.0.1:{syslog_port},",
                },
            )
            with nginx(conf, tmp_path / "nginx", [nginx_port]) as proxy:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                    yield Stack(
                        mixer,
                        proxy,
                        upstream,
                        f"http://127.0.0.1:{nginx_port}",
                        f"http://127.0.0.1:{prometheus_port}/metrics",
                        session,
                    )
    finally:
        await runner.cleanup()


async def at_the_start_of_a_minute_window() -> None:
    # The free plan counts per calendar minute: keep its ten requests inside one window.
    left = 60 - time.time() % 60
    if left < 5:
        await asyncio.sleep(left + 0.05)


async def test_nginx_enforces_plans_and_reports_every_request(stack: Stack) -> None:
    await at_the_start_of_a_minute_window()
    # A key's plan goes to the service; one the client claims is replaced.
    status, headers, body = await stack.get(
        "/hello", **{"X-API-Key": "demo-free-key", "X-Mixer-Plan": "enterprise"}
    )
    assert (status, body) == (200, "hello alice\n")
    assert stack.upstream.seen[-1]["x-mixer-plan"] == "free"
    assert stack.upstream.seen[-1]["x-mixer-subject"] == "alice"
    assert headers["RateLimit-Policy"] == '"per_minute";q=10;w=60, "per_day";q=1000;w=86400'
    assert headers["RateLimit"].startswith('"per_minute";r=')

    # The key may come in the query string too.
    status, _, body = await stack.get("/hello?api_key=demo-pro-key")
    assert (status, body) == (200, "hello bob\n")
    assert stack.upstream.seen[-1]["x-mixer-plan"] == "pro"

    assert (await stack.get("/hello", **{"X-API-Key": "stolen"}))[0] == 401
    assert (await stack.get("/hello"))[0] == 401
    assert len(stack.upstream.seen) == 2

    # Ten per minute: nine more pass, the tenth after the first is refused.
    statuses = [(await stack.get("/hello", **{"X-API-Key": "demo-free-key"}))[0] for _ in range(10)]
    assert statuses == [200] * 9 + [429]
    status, headers, body = await stack.get("/hello", **{"X-API-Key": "demo-free-key"})
    assert status == 429
    assert headers["Content-Type"] == "application/json"
    assert body == '{"error":"rate limited: the plan quota is used up"}\n'
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["RateLimit"].startswith('"per_minute";r=0;')

    # Another subject's plan is untouched.
    status, _, body = await stack.get("/hello", **{"X-API-Key": "demo-pro-key"})
    assert (status, body) == (200, "hello bob\n")

    allowed, limited = 2 + 9 + 1, 2
    # The service never saw a request mixer refused, and saw every one it allowed with a plan.
    assert len(stack.upstream.seen) == allowed
    assert {seen["x-mixer-plan"] for seen in stack.upstream.seen} == {"free", "pro"}

    # Every request's access-log line came over syslog and became a Report.
    await asyncio.to_thread(
        wait_until,
        lambda: (stack.istio("200"), stack.istio("401"), stack.istio("429")) == (allowed, 2, limited),
        10,
        "istio_requests_total for 200, 401 and 429 from nginx's access log",
    )
    own = stack.mixer.metrics()
    assert (
        metric_value(own, "mixer_requests_total", api="http", method="Auth", code="OK")
        == allowed + 2 + limited
    )
    assert metric_value(own, "mixer_syslog_datagrams_total", result="accepted") == allowed + 2 + limited
    assert metric_value(own, "mixer_syslog_datagrams_total", result="malformed") == 0

    def access_log() -> list[dict[str, Any]]:
        # Only whole lines: the writer may be half way through the last one.
        text = stack.mixer.stdout_path.read_text("utf-8")
        lines = [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
        return [e for e in lines if e.get("instance") == "accesslog.instance.istio-system"]

    # The stdio handler writes from its own thread, a little after the metrics count.
    entries = await asyncio.to_thread(
        wait_until,
        lambda: (found := access_log()) and len(found) == allowed + 2 + limited and found,
        10,
        "the access log lines on mixer's stdout",
    )
    by_code: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        by_code.setdefault(entry["responseCode"], []).append(entry)
    assert {code: len(found) for code, found in by_code.items()} == {200: allowed, 401: 2, 429: limited}
    # The access log groups requests by key without showing it: one hash, never the key.
    hashes = {e["apiKey"] for e in by_code[429]}
    assert len(hashes) == 1
    assert hashes.pop().startswith("sha256:")
    assert "demo-free-key" not in json.dumps(entries)
    assert all(
        e["url"] == "/hello" and e["method"] == "GET" and e["sourceIp"] == "127.0.0.1" for e in by_code[429]
    )
    # nginx hands the service and mixer the same request id.
    assert {e["requestId"] for e in by_code[200]} == {seen["x-request-id"] for seen in stack.upstream.seen}

    # Mixer gone: nginx fails closed with 503, and the service still sees nothing.
    stack.mixer.send(signal.SIGTERM)
    assert await asyncio.to_thread(stack.mixer.process.wait, 30) == 0
    status, _, body = await stack.get("/hello", **{"X-API-Key": "demo-pro-key"})
    assert (status, body) == (503, '{"error":"the policy check is unavailable"}\n')
    assert len(stack.upstream.seen) == allowed
    assert "auth request unexpected status: 429" in stack.proxy.error_log()
