"""Secrets in config and in failures stay out of answers, /config and the server's log."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio

from tests.server.support import Launcher, check, free_port, wait_until

PASSWORD = "s3cret-list-pw"

CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: allowed, namespace: istio-system}}
spec:
  compiledAdapter: list
  params:
    provider_url: http://lister:{password}@127.0.0.1:{port}/callers
    refresh_interval: 1s
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: caller, namespace: istio-system}}
spec:
  compiledTemplate: listentry
  params:
    value: source.name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: allowlist, namespace: istio-system}}
spec:
  actions:
  - handler: allowed
    instances: [caller]
"""


async def test_a_password_in_a_list_url_reaches_no_caller_no_config_view_and_no_log(
    servers: Launcher, tmp_path: Path
) -> None:
    config = tmp_path / "list.yaml"
    # Nothing listens on the port: every fetch fails, with the URL in the error.
    config.write_text(CONFIG.format(password=PASSWORD, port=free_port()), "utf-8")
    server = servers.start("--config", str(config), "--reload-interval", "0")

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        answer = await check(channel, {"source.name": "alice"})
    assert answer.precondition.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    message = answer.precondition.status.message
    assert "list unavailable" in message
    assert PASSWORD not in message
    assert "127.0.0.1" not in message

    status, body = server.get("/config")
    assert status == 200
    assert PASSWORD not in body
    assert "lister:***@127.0.0.1" in body

    logged = wait_until(
        lambda: server.stderr() if "could not load list from" in server.stderr() else None,
        30,
        "the failed fetch in the server log",
    )
    assert "lister:***@127.0.0.1" in logged
    assert PASSWORD not in logged
