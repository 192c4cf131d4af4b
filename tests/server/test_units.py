"""The pieces of the server that need no process: flags, addresses, logs, metrics, HTTP endpoints."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from mixer.attributes import ISTIO_MANIFEST, AttributeBag
from mixer.cli import build_parser
from mixer.cli._serve import options_from_args
from mixer.config import load_config_text
from mixer.defaults import embedded_config_text
from mixer.expr import compile as compile_expression
from mixer.registry import Registry
from mixer.runtime import RuntimeStats
from mixer.server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_REPORT_RECORDS,
    AdminState,
    JsonFormatter,
    ListenAddress,
    Phase,
    ServeOptions,
    ServerMetrics,
    build_admin_app,
    configure_logging,
    reserve_shared_port,
)
from mixer.server._app import process_local_handlers
from plugins.manager import create_plugin_manager
from tests.server.support import http_get, metric_value


def parse(*argv: str) -> ServeOptions:
    return options_from_args(build_parser().parse_args(["serve", *argv]))


def test_defaults() -> None:
    options = parse()
    assert options.embedded
    assert options.grpc_listen == "127.0.0.1:9091"
    assert options.http_listen == "127.0.0.1:9093"
    assert options.shutdown_timeout == 15.0
    assert options.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 4 * 1024 * 1024
    assert options.reload_interval == 2.0
    assert options.workers == 1
    assert options.max_report_records == DEFAULT_MAX_REPORT_RECORDS == 10_000
    assert options.delivery_ack == "auto"
    assert (options.http_max_connections, options.http_header_timeout, options.http_body_timeout) == (
        1000,
        10,
        30,
    )


def test_every_flag_survives_the_trip_to_a_worker_command_line() -> None:
    options = parse(
        "--config", "a.yaml", "--config", "conf.d", "--grpc-listen", "[::1]:0", "--http-listen", "127.0.0.1:0",
        "--workers", "3", "--data-dir", "/tmp/d", "--ready-file", "/tmp/r.json", "--log-level", "debug",
        "--log-format", "json", "--shutdown-timeout", "2.5", "--max-message-size", "64KiB",
        "--max-concurrent-requests", "7", "--reload-interval", "0", "--check-timeout", "0.25",
        "--check-cache-bytes", "1MiB",
        "--max-attributes", "10", "--max-string-length", "20", "--max-map-entries", "30",
        "--max-report-records", "40",
        "--delivery-ack", "spool", "--http-max-connections", "40", "--http-header-timeout", "1.5",
        "--http-body-timeout", "2.5",
        "--worker-index", "2", "--worker-restarts", "4", "--parent-pid", "99",
    )  # fmt: skip
    assert options.config_paths == ("a.yaml", "conf.d")
    assert options.max_message_size == 64 * 1024
    assert options.log_level == "DEBUG"
    assert options.data_dir == Path("/tmp/d")
    assert options.max_report_records == 40
    assert options.check_cache_bytes == 1024 * 1024
    assert options.delivery_ack == "spool"
    assert (options.http_max_connections, options.http_header_timeout, options.http_body_timeout) == (
        40,
        1.5,
        2.5,
    )
    assert parse(*options.to_argv()) == options


@pytest.mark.parametrize(
    ("text", "size"), [("1024", 1024), ("64KiB", 65536), ("4MiB", 4 << 20), ("2m", 2 << 20), ("8 KB", 8192)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse("--max-message-size", text).max_message_size == size


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"],
        ["--shutdown-timeout", "0"],
        ["--max-concurrent-requests", "0"],
        ["--reload-interval", "-1"],
        ["--max-message-size", "10"],
        ["--max-report-records", "0"],
        ["--http-max-connections", "0"],
        ["--http-header-timeout", "0"],
        ["--http-body-timeout", "-1"],
    ],
)
def test_out_of_range_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="--"):
        parse(*argv)


def test_bad_flags_exit_2_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mixer", "serve", "--workers", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers must be at least 1" in result.stderr
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--grpc-listen", "nowhere"])


def test_an_invalid_config_exits_1_listing_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: a, namespace: istio-system}\n"
        "spec: {match: 'source.nope == 1', actions: [{handler: missing, instances: [gone]}]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mixer", "serve", "--config", str(bad), "--grpc-listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot start: 3 configuration error(s)" in result.stderr
    assert "source.nope" in result.stderr
    assert "missing" in result.stderr
    assert "gone" in result.stderr


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:9091", "127.0.0.1", 9091, "127.0.0.1:9091"),
        ("[::1]:0", "::1", 0, "[::1]:0"),
        ("localhost:80", "localhost", 80, "localhost:80"),
    ],
)
def test_listen_addresses(text: str, host: str, port: int, shown: str) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port, str(address)) == (host, port, shown)


@pytest.mark.parametrize("text", ["9091", ":9091", "host:", "host:x", "host:70000"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        ListenAddress.parse(text)


def test_a_reserved_port_can_be_shared_by_reuse_port_listeners_only() -> None:
    import socket

    sock, address = reserve_shared_port(ListenAddress("127.0.0.1", 0))
    try:
        assert address.port != 0
        sharer = socket.socket()
        sharer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharer.bind(("127.0.0.1", address.port))
        sharer.listen()
        sharer.close()
        with socket.socket() as intruder, pytest.raises(OSError):
            intruder.bind(("127.0.0.1", address.port))
    finally:
        sock.close()


def test_json_logs() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", worker_index=3, stream=stream)
    try:
        log = logging.getLogger("mixer.test")
        log.debug("not shown")
        log.info("hello %s", "there", extra={"handler": "h"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        configure_logging("warning", "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello there"
    assert first["level"] == "info"
    assert first["logger"] == "mixer.test"
    assert first["worker"] == 3
    assert first["handler"] == "h"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)


def test_refused_request_patterns_are_counted_in_metrics() -> None:
    metrics = ServerMetrics(lambda: None)
    before = metric_value(generate_latest(metrics.registry).decode(), "mixer_request_regex_refused_total")
    assert before is not None
    expr = compile_expression('request.headers["re"].matches(request.path)', ISTIO_MANIFEST)
    assert expr.evaluate(AttributeBag({"request.path": "/a", "request.headers": {"re": "(a)\\1"}})) is False
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "mixer_request_regex_refused_total") == before + 1
    assert metric_value(text, "mixer_request_regex_cache_evictions_total") is not None
    assert metric_value(text, "mixer_request_regex_cache_bytes") is not None


def test_runtime_stats_are_read_at_scrape_time() -> None:
    stats = RuntimeStats()
    metrics = ServerMetrics(lambda: stats, worker_index=1, worker_restarts=2)
    stats.match_errors = 4
    stats.instance_errors = 5
    stats.count_handler_error("stdio.istio-system")
    stats.count_overloaded("kafka.istio-system")
    stats.check_cache_hits, stats.check_cache_misses, stats.check_cache_bytes = 6, 7, 4096
    stats.check_cache_evictions, stats.check_cache_drops = 8, 9
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "mixer_check_cache_hits_total") == 6
    assert metric_value(text, "mixer_check_cache_misses_total") == 7
    assert metric_value(text, "mixer_check_cache_evictions_total") == 8
    assert metric_value(text, "mixer_check_cache_drops_total") == 9
    assert metric_value(text, "mixer_check_cache_bytes") == 4096
    assert metric_value(text, "mixer_rule_match_errors_total") == 4
    assert metric_value(text, "mixer_instance_errors_total") == 5
    assert metric_value(text, "mixer_handler_errors_total", handler="stdio.istio-system") == 1
    assert metric_value(text, "mixer_handler_overloaded_total", handler="kafka.istio-system") == 1
    assert metric_value(text, "mixer_worker_restarts", worker="1") == 2
    assert metric_value(text, "mixer_config_reloads_total", result="success") == 0

    metrics.reload_failed()
    metrics.reload_succeeded(7)
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "mixer_config_reloads_total", result="failure") == 1
    assert metric_value(text, "mixer_config_generation") == 7


async def test_readiness_follows_the_phase() -> None:
    import asyncio

    state = AdminState(ServerMetrics(lambda: None))
    runner = web.AppRunner(build_admin_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        status, body = await asyncio.to_thread(http_get, url + "/readyz")
        assert (status, json.loads(body)["status"]) == (503, "starting")
        assert (await asyncio.to_thread(http_get, url + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(http_get, url + "/config"))[0] == 503
        assert (await asyncio.to_thread(http_get, url + "/metrics"))[0] == 200
        assert (await asyncio.to_thread(http_get, url + "/v1/check"))[0] == 404
        state.phase = Phase.DRAINING
        status, body = await asyncio.to_thread(http_get, url + "/readyz")
        assert (status, json.loads(body)["status"]) == (503, "draining")
    finally:
        await runner.cleanup()


async def test_handlers_of_adapters_with_process_local_state_are_named_for_the_workers_warning() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(embedded_config_text(), registry, source_name="embedded", environ={})
    memquota = sorted(name for name, handler in config.handlers.items() if handler.adapter == "memquota")
    assert memquota
    assert process_local_handlers(config, registry) == memquota
    # The adapter's declaration decides, not its name.
    shared = dataclasses.replace(registry.adapters["memquota"], process_local_state=False)
    others = [info for name, info in registry.adapters.items() if name != "memquota"]
    assert (
        process_local_handlers(
            config, Registry.build([*others, shared], key_stores=registry.key_stores.values())
        )
        == []
    )
