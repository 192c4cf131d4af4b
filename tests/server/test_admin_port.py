"""The admin port (--admin-listen): /metrics and /config live there, apart from the data port that
nginx and Envoy call; probes answer on both; --admin-token-file puts a bearer token in front."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from mixer.server import DEFAULT_ADMIN_LISTEN, DEFAULT_HTTP_LISTEN, ListenAddress, ServeOptions
from tests.server.support import Launcher, http_get


def get_with(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8")


def test_the_admin_port_is_loopback_and_apart_from_the_data_port_by_default() -> None:
    options = ServeOptions()
    assert options.admin_listen == DEFAULT_ADMIN_LISTEN
    assert DEFAULT_ADMIN_LISTEN.startswith("127.0.0.1:")
    assert ListenAddress.parse(DEFAULT_ADMIN_LISTEN).port != ListenAddress.parse(DEFAULT_HTTP_LISTEN).port
    again = options.to_argv()
    assert again[again.index("--admin-listen") + 1] == DEFAULT_ADMIN_LISTEN


def test_admin_endpoints_moved_off_the_data_port(servers: Launcher) -> None:
    server = servers.start()
    for path in ("/metrics", "/config"):
        assert http_get(server.http_url + path)[0] == 404, path
        assert http_get(server.admin_url + path)[0] == 200, path
    for path in ("/healthz", "/readyz"):
        assert http_get(server.http_url + path)[0] == 200, path
        assert http_get(server.admin_url + path)[0] == 200, path
    # The data endpoints are not on the admin port.
    assert http_get(server.admin_url + "/v1/auth")[0] == 404
    assert http_get(server.http_url + "/v1/auth")[0] != 404
    assert "mixer_" in http_get(server.admin_url + "/metrics")[1]


def test_the_admin_token_guards_all_but_the_probes_and_is_reread(servers: Launcher, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("first-secret\n")
    server = servers.start("--admin-token-file", str(token_file))
    metrics = server.admin_url + "/metrics"
    status, body = get_with(metrics, None)
    assert status == 401
    assert json.loads(body) == {"error": "a valid bearer token is required"}
    assert get_with(metrics, "wrong")[0] == 401
    assert get_with(server.admin_url + "/config", "first-secret")[0] == 200
    assert get_with(metrics, "first-secret")[0] == 200
    assert get_with(server.admin_url + "/readyz", None)[0] == 200
    assert "first-secret" not in server.stderr()
    # Rotation: the file is swapped by rename, as Kubernetes secrets are.
    fresh = tmp_path / "admin-token.new"
    fresh.write_text("second-secret\n")
    os.replace(fresh, token_file)
    assert get_with(metrics, "second-secret")[0] == 200
    assert get_with(metrics, "first-secret")[0] == 401


def test_a_missing_admin_token_file_stops_the_start(servers: Launcher, tmp_path: Path) -> None:
    server = servers.start("--admin-token-file", str(tmp_path / "absent"), wait=False)
    assert server.process.wait(30) == 1
    assert "--admin-token-file" in server.stderr()
