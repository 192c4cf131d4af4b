"""The syslog input: datagram parsing, the access-log mapping, batching, drops, and its lifecycle."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from mixer.api import ServiceLimits
from mixer.api.syslog import (
    MAX_DATAGRAM_BYTES,
    SyslogFormatError,
    SyslogReceiver,
    access_log_attributes,
    parse_datagram,
)
from mixer.runtime import Runtime, build_runtime
from mixer.server import ListenAddress, RuntimeHolder, ServeOptions, ServerMetrics
from tests.http.support import INFO
from tests.runtime.support import RecordingHandler, config, fq, handler, instance, registry, rule
from tests.server.support import Launcher, metric_value, read_json_lines, wait_until

LIMITS = ServiceLimits()

#: What nginx sends for one request with deploy/nginx/nginx.conf's log_format.
LINE: dict[str, str] = {
    "msec": "1714979289.250",
    "time_iso8601": "2024-05-06T07:08:09+00:00",
    "remote_addr": "192.0.2.7",
    "request_method": "GET",
    "request_uri": "/items?id=3",
    "uri": "/items",
    "scheme": "http",
    "host": "shop.example",
    "status": "429",
    "body_bytes_sent": "52",
    "bytes_sent": "360",
    "request_length": "110",
    "request_time": "0.002",
    "http_user_agent": "curl/8",
    "http_referer": "",
    "http_x_api_key": "demo-free-key",
    "arg_api_key": "",
    "request_id": "3f2a",
    "server_name": "shop",
}


def datagram(record: dict[str, Any] | str, header: bytes = b"<190>May  6 07:08:09 web-1 nginx: ") -> bytes:
    text = record if isinstance(record, str) else json.dumps(record)
    return header + text.encode()


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_a_datagram_as_nginx_sends_it() -> None:
    assert parse_datagram(datagram({"status": "200"})) == {"status": "200"}
    assert parse_datagram(b'{"a": 1}\n') == {"a": 1}
    # nginx's nohostname option and an RFC 5424 header both end before the object.
    assert parse_datagram(b'<14>1 2024-05-06T07:08:09Z - nginx - - - {"a": 2}') == {"a": 2}


def test_bytes_that_are_not_utf8_do_not_break_a_record() -> None:
    record = parse_datagram(b'<190>x nginx: {"http_user_agent": "caf\xe9"}')
    assert record == {"http_user_agent": "caf\ufffd"}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"<190>May  6 07:08:09 web-1 nginx: GET / 200", "no JSON object after the syslog header"),
        (b"<190>x nginx: {broken", "not a JSON object"),
        (b'<190>x nginx: {"a": NaN}', "not a JSON object"),
        (b"[1, 2]", "JSON but not an object"),
        (b'"text"', "JSON but not an object"),
        (b"", "not a JSON object"),
        (b'<190>x: {"a": ' + b"[" * 5000, "not a JSON object"),
        (b"{" + b" " * MAX_DATAGRAM_BYTES + b"}", "over 65536"),
    ],
)
def test_malformed_datagrams(data: bytes, fragment: str) -> None:
    with pytest.raises(SyslogFormatError, match=fragment.replace("[", r"\[")):
        parse_datagram(data)


# -- the access-log mapping ------------------------------------------------------------------------


def test_an_nginx_line_becomes_istio_attributes() -> None:
    values, invalid = access_log_attributes(LINE, LIMITS)
    end = datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC)
    assert invalid == 0
    assert values == {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "source.ip": ipaddress.ip_address("192.0.2.7"),
        "request.method": "GET",
        "request.path": "/items?id=3",
        "request.url_path": "/items",
        "request.scheme": "http",
        "request.host": "shop.example",
        "response.code": 429,
        "response.size": 52,
        "response.total_size": 360,
        "request.total_size": 110,
        "response.duration": timedelta(milliseconds=2),
        "request.useragent": "curl/8",
        "request.api_key": "demo-free-key",
        "request.id": "3f2a",
        "destination.service.name": "shop",
        "request.headers": {"user-agent": "curl/8", "x-api-key": "demo-free-key", "x-request-id": "3f2a"},
        # The line is written when the request ends: msec is the response time.
        "response.time": end,
        "request.time": end - timedelta(milliseconds=2),
    }


def test_fallbacks_and_unset_values() -> None:
    values, invalid = access_log_attributes(
        {
            "uri": "/only-uri",
            "http_x_api_key": "-",
            "arg_api_key": "from-query",
            "service": "catalog",
            "server_name": "shop",
            "time_iso8601": "2024-05-06T09:08:09+02:00",
            "status": 200,
            "request_time": 0.5,
            "remote_addr": "unix:",
        },
        LIMITS,
    )
    assert invalid == 0
    assert values["request.path"] == "/only-uri"
    assert values["request.api_key"] == "from-query"
    assert values["destination.service.name"] == "catalog"
    assert values["response.code"] == 200
    assert values["response.time"] == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert values["request.time"] == datetime(2024, 5, 6, 7, 8, 8, 500000, tzinfo=UTC)
    assert "source.ip" not in values


def test_values_that_do_not_parse_are_left_out_and_counted() -> None:
    values, invalid = access_log_attributes(
        {
            "status": "OK",
            "body_bytes_sent": "1.5",
            "request_time": "-3",
            "remote_addr": "999.0.0.1",
            "msec": "soon",
            "time_iso8601": "2024-05-06T07:08:09",
            "request_method": ["GET"],
            "host": True,
            "uri": "/kept",
        },
        LIMITS,
    )
    assert invalid == 8
    assert values == {
        "context.protocol": "http",
        "context.reporter.kind": "inbound",
        "request.url_path": "/kept",
        "request.path": "/kept",
    }


def test_a_value_over_a_decoding_limit_makes_the_record_malformed() -> None:
    with pytest.raises(SyslogFormatError, match=r"request\.path"):
        access_log_attributes({"request_uri": "/" + "x" * 100}, ServiceLimits(max_string_length=50))


# -- the receiver ----------------------------------------------------------------------------------


@dataclass
class Receiving:
    receiver: SyslogReceiver
    handler: RecordingHandler
    metrics: ServerMetrics
    runtime: Runtime

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(generate_latest(self.metrics.registry).decode(), name, **labels) or 0.0

    def reported(self) -> list[int]:
        return [len(batch.instances) for batch in self.handler.batches]


async def receiving(**kwargs: Any) -> Receiving:
    overloaded = kwargs.pop("overloaded", False)
    runtime = build_runtime(
        config(
            [handler("h", overloaded=overloaded)],
            [instance("code", "metric", value="response.code | 0")],
            [rule("r", 'context.protocol == "http"', (fq("h"), [fq("code")]))],
        ),
        registry(),
    )
    await runtime.start()
    holder = RuntimeHolder(runtime, INFO)
    metrics = ServerMetrics(lambda: holder.current.stats)
    receiver = SyslogReceiver(lambda: holder, metrics, LIMITS, **kwargs)
    recording = runtime.handlers[fq("h")]
    assert isinstance(recording, RecordingHandler)
    return Receiving(receiver, recording, metrics, runtime)


@pytest.fixture
async def batched() -> AsyncIterator[Receiving]:
    r = await receiving(batch_size=3, max_queue=5, flush_interval=60.0)
    yield r
    await r.receiver.stop()
    await r.runtime.shutdown(5.0)


async def test_records_are_reported_in_batches(batched: Receiving) -> None:
    for code in range(200, 205):
        batched.receiver.feed(datagram({"status": str(code)}))
    assert batched.receiver.queued == 5
    batched.receiver.flush()
    assert batched.reported() == [3, 2]
    codes = [inst.value for batch in batched.handler.batches for inst in batch.instances]  # type: ignore[attr-defined]
    assert codes == [200, 201, 202, 203, 204]
    assert batched.metric("mixer_syslog_datagrams_total", result="accepted") == 5
    assert batched.metric("mixer_requests_total", api="syslog", method="Report", code="OK") == 2


async def test_a_full_queue_drops_and_counts(batched: Receiving) -> None:
    for _ in range(8):
        batched.receiver.feed(datagram({"status": "200"}))
    assert batched.receiver.queued == 5
    assert batched.metric("mixer_syslog_datagrams_total", result="dropped") == 3
    assert batched.metric("mixer_syslog_queue_depth") == 5


async def test_malformed_datagrams_and_invalid_fields_are_counted(batched: Receiving) -> None:
    batched.receiver.feed(b"<190>x nginx: not json")
    batched.receiver.feed(b"\x00" * 10)
    batched.receiver.feed(datagram({"status": "abc", "uri": "/"}))
    assert batched.receiver.queued == 1
    assert batched.metric("mixer_syslog_datagrams_total", result="malformed") == 2
    assert batched.metric("mixer_decode_errors_total", api="syslog", method="Report") == 2
    assert batched.metric("mixer_syslog_invalid_fields_total") == 1


async def test_an_overloaded_handler_is_counted() -> None:
    r = await receiving(overloaded=True)
    r.receiver.feed(datagram({"status": "200"}))
    r.receiver.flush()
    assert r.metric("mixer_requests_total", api="syslog", method="Report", code="UNAVAILABLE") == 1
    await r.runtime.shutdown(5.0)


async def test_udp_in_batches_by_count_and_time_and_the_rest_on_stop() -> None:
    r = await receiving(batch_size=4, flush_interval=0.2)
    address = await r.receiver.start(ListenAddress("127.0.0.1", 0))
    assert address.port != 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for code in range(4):
            sock.sendto(datagram({"status": str(200 + code)}), ("127.0.0.1", address.port))
        # A full batch goes at once, well before the interval.
        for _ in range(100):
            if r.reported():
                break
            await asyncio.sleep(0.01)
        assert r.reported() == [4]
        sock.sendto(datagram({"status": "299"}), ("127.0.0.1", address.port))
        for _ in range(100):
            if len(r.reported()) == 2:
                break
            await asyncio.sleep(0.02)
        assert r.reported() == [4, 1]
        sock.sendto(datagram({"status": "300"}), ("127.0.0.1", address.port))
        for _ in range(100):
            if r.receiver.queued:
                break
            await asyncio.sleep(0.005)
    await r.receiver.stop()
    await r.receiver.stop()
    assert r.reported() == [4, 1, 1]
    await r.runtime.shutdown(5.0)


def test_receiver_settings_are_checked() -> None:
    metrics = ServerMetrics(lambda: None)
    with pytest.raises(ValueError, match="batch_size"):
        SyslogReceiver(lambda: None, metrics, LIMITS, batch_size=0)


def test_the_serve_option() -> None:
    options = ServeOptions(syslog_listen="127.0.0.1:5140", workers=2)
    argv = options.to_argv()
    assert argv[argv.index("--syslog-listen") + 1] == "127.0.0.1:5140"
    assert "--syslog-listen" not in ServeOptions().to_argv()
    with pytest.raises(ValueError, match="--syslog-listen needs a fixed port with --workers"):
        ServeOptions(syslog_listen="127.0.0.1:0", workers=2)
    with pytest.raises(ValueError, match="--syslog-listen: listen address 'nowhere' is not HOST:PORT"):
        ServeOptions(syslog_listen="nowhere")


# -- in a server process ---------------------------------------------------------------------------


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_config(output: Path) -> str:
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: tofile, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params: {{outputPath: {output}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: entry, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables: {{code: response.code | 0, id: request.id | ""}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logall, namespace: istio-system}}
spec:
  actions: [{{handler: tofile, instances: [entry]}}]
"""


def test_a_server_reports_what_its_syslog_input_holds_when_it_stops(tmp_path: Path) -> None:
    output = tmp_path / "reports.jsonl"
    conf = tmp_path / "config.yaml"
    conf.write_text(stdio_config(output), "utf-8")
    port = udp_port()
    launch = Launcher(tmp_path)
    try:
        server = launch.start("--config", str(conf), "--syslog-listen", f"127.0.0.1:{port}")
        assert "receiving nginx access logs over syslog on udp 127.0.0.1:" in server.stderr()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(30):
                sock.sendto(datagram({"status": "200", "request_id": f"r{i}"}), ("127.0.0.1", port))
        wait_until(
            lambda: (
                (metric_value(server.metrics(), "mixer_syslog_datagrams_total", result="accepted") or 0) == 30
            ),
            10,
            "the datagrams to arrive",
            interval=0.01,
        )
        # Queued or already flushed, nothing the input accepted is lost when the server stops.
        server.send(signal.SIGTERM)
        assert server.process.wait(30) == 0
        ids = sorted(int(line["id"][1:]) for line in read_json_lines(output))
        assert ids == list(range(30))
    finally:
        launch.close()


async def test_the_server_binds_the_input_and_says_where(tmp_path: Path) -> None:
    from mixer.server import MixerServer, StartupError

    conf = tmp_path / "config.yaml"
    conf.write_text(stdio_config(tmp_path / "reports.jsonl"), "utf-8")

    def options(syslog_listen: str | None) -> ServeOptions:
        return ServeOptions(
            config_paths=(str(conf),),
            grpc_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            syslog_listen=syslog_listen,
            reload_interval=0.0,
        )

    server = MixerServer(options("127.0.0.1:0"))
    await server.start()
    try:
        assert server.syslog_address is not None
        assert server.syslog_address.port != 0
        assert server.ready_info()["syslog"] == str(server.syslog_address)
        busy = server.syslog_address.port
        # A second server cannot take the port: it does not start, and says why.
        with pytest.raises(StartupError, match=f"cannot listen for syslog on 127.0.0.1:{busy}"):
            await MixerServer(options(f"127.0.0.1:{busy}")).start()
    finally:
        await server.stop()
    without = MixerServer(options(None))
    await without.start()
    try:
        assert "syslog" not in without.ready_info()
    finally:
        await without.stop()
