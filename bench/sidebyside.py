"""Variants side by side: their servers at once on one pinned core, alternating rounds.

Single invocations of a bench differ by +-30 % on a shared machine, which hides the 10-20 % a
change is worth. Here every variant's server runs at the same time, all pinned to CPU 0, while
the load generator (and Redis, Tansu and the fake backends) run on CPU 1. Each round loads every
variant in turn for ``--seconds`` (the order reversed every other round, so no variant always
follows the same neighbour), and divides the records (or calls) it carried by the server's own
CPU seconds over that window, read from /proc/PID/stat: records per server CPU-second, a figure a
saturated load generator cannot flatter. A line is printed per variant per round; the summary
table gives medians and ratios to the suite's first variant.

Suites (``--suite``, several may be given):

- ``report``: a trivial Report servicer (the transport ceiling: it answers without decoding),
  Istio 1.4's stock telemetry (deploy/config/istio-1.4/v1.1: the metrics, and the access log as
  JSON lines into a file), and the fan-out (deploy/config/fanout: Prometheus, Kafka on Tansu,
  Elasticsearch and OTLP on the fakes). Load: 100-record ReportRequests as Istio's proxies batch
  them, ``--report-concurrency`` calls in flight, every record with a request id and trace id of
  its own, as real traffic has (``--recycled-ids``: 16 fixed requests over and over, whose ids
  repeat every 1,600 records and so stay in every cache).
- ``check``: a trivial Check servicer (the same precomputed answer over the same gRPC stack),
  the realistic plan policy (bench/config/check) with memquota and with redisquota. After the
  rounds, each one is driven at half its median maximum rate for ``--latency-seconds`` (open
  loop): p50, p99 and the worst call.
- ``auth``: nginx's ``auth_request`` endpoint (``/v1/auth``) with the memquota policy, against a
  trivial aiohttp handler answering 200.

``--compare-env KEY=VALUE`` runs every ``mixer serve`` variant twice, as is and with that
environment (several variables separated by spaces: ``"A=1 B=2"``), so a code path is compared
with its alternative on the same core in the same rounds;
``--compare-tree NAME=DIR`` does the same with the code of another checkout (a change against the
commit before it). ``--py-spy DIR`` samples every ``mixer serve`` variant during the rounds and
prints the functions with the most samples.

    .venv/bin/python bench/sidebyside.py [--suite report --suite check --suite auth]
        [--seconds 5] [--rounds 5] [--latency-seconds 60] [--compare-env KEY=VALUE]
        [--compare-tree NAME=DIR] [--py-spy DIR] [--short]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import grpc.aio
from check_throughput import open_loop, redis_server, requests
from report_fanout import FreshBodies, fake_backends, report_bodies, tansu

from mixer.decision import CheckOutcome
from mixer.status import OK
from mixer.wire import build_check_response

ROOT = Path(__file__).resolve().parent.parent
# Istio 1.4's stock telemetry: its metrics and access log (tracing is the fan-out's part).
STOCK = [
    ROOT / "deploy" / "config" / "istio-1.4" / "v1.1" / name
    for name in ("attributes.yaml", "metrics.yaml", "prometheus.yaml", "accesslog.yaml")
]
FANOUT = ROOT / "deploy" / "config" / "fanout"
POLICY = ROOT / "bench" / "config" / "check"
SERVER_CPU = 0
CLIENT_CPU = 1
RECORDS_PER_REPORT = 100
REPORT_METHOD = "/istio.mixer.v1.Mixer/Report"
LINE_NUMBER = re.compile(r":\d+\)$")
DELIVERY_COUNTERS = (
    "mixer_delivery_sent_total",
    "mixer_delivery_spooled_total",
    "mixer_delivery_dropped_total",
    "mixer_delivery_dead_lettered_total",
)
CHECK_METHOD = "/istio.mixer.v1.Mixer/Check"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- trivial servers ----------------------------------------------------------------------------


async def _trivial_grpc(port: int) -> None:
    check_answer = build_check_response(CheckOutcome(OK, timedelta(minutes=1), 10000)).SerializeToString()

    async def check(request: bytes, context: object) -> bytes:
        return check_answer

    async def report(request: bytes, context: object) -> bytes:
        return b""  # an empty ReportResponse

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "istio.mixer.v1.Mixer",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(check),
                    "Report": grpc.unary_unary_rpc_method_handler(report),
                },
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _trivial_http(port: int) -> None:
    from aiohttp import web

    async def auth(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"X-Mixer-Code": "OK", "Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_route("*", "/v1/auth", auth)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One variant's running server."""

    name: str
    proc: subprocess.Popen[bytes]
    grpc_port: int = 0
    http_port: int = 0
    admin_port: int = 0

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def delivery(self) -> dict[str, dict[str, float]]:
        """Per handler: what the delivery helper sent, spooled, dropped and dead-lettered."""
        from prometheus_client.parser import text_string_to_metric_families

        if not self.admin_port:
            return {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in DELIVERY_COUNTERS and "handler" in sample.labels:
                    counts = out.setdefault(sample.labels["handler"], dict.fromkeys(DELIVERY_COUNTERS, 0.0))
                    counts[sample.name] += sample.value
        return out


def _start(
    argv: list[str], env: dict[str, str], stdout: Path | None = None, *, pinned: bool = True
) -> subprocess.Popen[bytes]:
    out = subprocess.DEVNULL if stdout is None else stdout.open("wb")
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
            preexec_fn=(lambda: pin(SERVER_CPU)) if pinned else None,  # noqa: PLW1509 - affinity only
        )
    finally:
        if stdout is not None and not isinstance(out, int):
            out.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(
    name: str, proc: subprocess.Popen[bytes], probe: Callable[[], bool], deadline: float = 60.0
) -> None:
    end = time.monotonic() + deadline
    while not probe():
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: the server exited with {proc.returncode} before it was ready")
        if time.monotonic() > end:
            raise RuntimeError(f"{name}: not ready after {deadline:g} s")
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=0.5) as reply:
        return bool(reply.status == 200)
    return False


def _port_open(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@dataclass
class Variant:
    """How to start one server: ``kind`` is ``trivial-grpc``, ``trivial-http`` or ``mixer``."""

    name: str
    kind: str
    configs: Sequence[Path] = ()
    env: dict[str, str] = field(default_factory=dict)
    stdout_file: bool = False
    #: More ``mixer serve`` flags (e.g. ``--workers 2``).
    extra: Sequence[str] = ()
    #: Pinned to the server CPU, or allowed on every CPU (workers spread over the cores).
    pinned: bool = True


@contextlib.contextmanager
def running(variant: Variant, data_dir: Path) -> Iterator[Endpoint]:
    grpc_port, http_port, admin_port = free_port(), free_port(), 0
    if variant.kind == "trivial-grpc":
        argv = [sys.executable, __file__, "--trivial-grpc", str(grpc_port)]
        proc = _start(argv, variant.env)
        probe = lambda: _port_open(grpc_port)  # noqa: E731
    elif variant.kind == "trivial-http":
        argv = [sys.executable, __file__, "--trivial-http", str(http_port)]
        proc = _start(argv, variant.env)
        probe = lambda: _port_open(http_port)  # noqa: E731
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        admin_port = free_port()
        # -P: no working directory on sys.path, where it would come before a --compare-tree's
        # PYTHONPATH and run this checkout's code under the other tree's name.
        argv = [sys.executable, "-P", "-m", "mixer", "serve"]
        for config in variant.configs:
            argv += ["--config", str(config)]
        argv += [
            "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
            "--admin-listen", f"127.0.0.1:{admin_port}",
            "--data-dir", str(data_dir), "--log-level", "warning", *variant.extra,
        ]  # fmt: skip
        env = {"MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{free_port()}", **variant.env}
        stdout = data_dir / "stdout.log" if variant.stdout_file else None
        proc = _start(argv, env, stdout, pinned=variant.pinned)
        probe = lambda: _http_ok(f"http://127.0.0.1:{http_port}/readyz")  # noqa: E731
    try:
        _wait(variant.name, proc, probe)
        yield Endpoint(variant.name, proc, grpc_port, http_port, admin_port)
    finally:
        _stop(proc)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Window:
    """What one variant carried in one round.

    ``cpu`` is the server's CPU during the load; ``cpu_until_next`` runs on to the start of the
    variant's next window (or to the settled end of the run), so work a server defers past the
    load (batched sends to Kafka, Elasticsearch and OTLP) is charged to the records that caused it.
    """

    units: int
    refused: int
    wall: float
    cpu: float
    cpu_until_next: float = 0.0

    @property
    def per_cpu_second(self) -> float:
        spent = self.cpu_until_next or self.cpu
        return self.units / spent if spent > 0 else 0.0


Load = Callable[[Endpoint, float], Coroutine[None, None, tuple[int, int]]]


def grpc_load(
    method: str, bodies: Sequence[bytes], units_per_call: int, concurrency: int, connections: int = 1
) -> Load:
    """A closed loop of ``concurrency`` calls over ``connections`` connections of their own (more
    than one reaches every worker of ``--workers N``: SO_REUSEPORT spreads connections)."""

    async def run(endpoint: Endpoint, seconds: float) -> tuple[int, int]:
        # A local subchannel pool: channels to one target would otherwise share one connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.grpc_port}", options=options)
            for _ in range(connections)
        ]
        try:
            calls = [channel.unary_unary(method) for channel in channels]
            for call in calls:
                await call(bodies[0], timeout=30)
            done = refused = 0
            stop = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                nonlocal done, refused
                call = calls[offset % len(calls)]
                i = offset
                while time.perf_counter() < stop:
                    try:
                        await call(bodies[i % len(bodies)], timeout=30)
                    except grpc.aio.AioRpcError:
                        refused += 1
                    else:
                        done += 1
                    i += concurrency

            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done * units_per_call, refused
        finally:
            for channel in channels:
                await channel.close()

    return run


def auth_headers(n: int = 100) -> list[dict[str, str]]:
    """The headers nginx's auth_request subrequest carries, for the tenants of the Check policy."""
    return [
        {
            "X-Api-Key": f"bench-key-{i:03d}",
            "X-Real-IP": f"10.1.{i // 250}.{i % 250 + 1}",
            "X-Original-URI": f"/v1/orders/{i}",
            "X-Original-Method": "GET",
            "Host": "orders",
        }
        for i in range(n)
    ]


def http_auth_load(concurrency: int) -> Load:
    from aiohttp import ClientSession, TCPConnector

    headers = auth_headers()

    async def run(endpoint: Endpoint, seconds: float) -> tuple[int, int]:
        url = f"http://127.0.0.1:{endpoint.http_port}/v1/auth"
        async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:
            done = refused = 0
            stop = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                nonlocal done, refused
                i = offset
                while time.perf_counter() < stop:
                    async with session.get(url, headers=headers[i % len(headers)]) as reply:
                        await reply.read()
                        if reply.status == 200:
                            done += 1
                        else:
                            refused += 1
                    i += concurrency

            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done, refused

    return run


def measure(endpoint: Endpoint, load: Load, seconds: float) -> tuple[Window, float]:
    """One window of load, and the server's CPU reading at its start."""
    cpu = endpoint.cpu()
    started = time.perf_counter()
    units, refused = asyncio.run(load(endpoint, seconds))
    wall = time.perf_counter() - started
    return Window(units, refused, wall, endpoint.cpu() - cpu), cpu


def settle(endpoints: Sequence[Endpoint], quiet: float = 0.05, limit: float = 30.0) -> list[float]:
    """Wait until no server spends more than ``quiet`` of a core (deferred sends done); CPU readings."""
    end = time.monotonic() + limit
    before = [e.cpu() for e in endpoints]
    while True:
        time.sleep(1.0)
        after = [e.cpu() for e in endpoints]
        if all(b - a <= quiet for a, b in zip(before, after, strict=True)) or time.monotonic() > end:
            return after
        before = after


# -- one suite ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    windows: list[Window]
    latency: tuple[float, float, float, int] | None = None

    def median_per_cpu(self) -> float:
        return statistics.median(w.per_cpu_second for w in self.windows)

    def median_wall(self) -> float:
        return statistics.median(w.units / w.wall for w in self.windows)

    def median_share(self) -> float:
        return statistics.median(w.cpu / w.wall for w in self.windows)


@contextlib.contextmanager
def sampled(endpoints: Sequence[Endpoint], out: Path | None, suite: str) -> Iterator[None]:
    """py-spy samples every ``mixer serve`` variant while the rounds run (``--py-spy DIR``)."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    samplers: list[tuple[Endpoint, Path, subprocess.Popen[bytes]]] = []
    for i, endpoint in enumerate(endpoints):
        if not endpoint.admin_port:  # a trivial servicer: nothing of ours to profile
            continue
        raw = out / f"{suite}-{i}.txt"
        argv = [str(spy), "record", "--pid", str(endpoint.proc.pid), "--rate", "250", "--format", "raw",
                "--nonblocking", "--output", str(raw)]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samplers.append((endpoint, raw, proc))
    try:
        yield
    finally:
        for endpoint, raw, proc in samplers:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print_profile(endpoint.name, raw)


def print_profile(name: str, raw: Path, top: int = 15) -> None:
    """The functions with the most samples of their own, and with the most in all, from py-spy's raw
    (collapsed stacks) output."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    if not raw.exists():
        print(f"{name}: py-spy wrote no samples (is ptrace allowed here?)", flush=True)
        return
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        # Per function, not per line: "f (path.py:12)" and "f (path.py:30)" are one row.
        frames = [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    print(f"\n{name}: {samples:,} samples (py-spy, 250 Hz), kept in {raw}", flush=True)
    for title, table in (("own", own), ("in all (own and callees)", total)):
        print(f"  top {top} by samples {title}:")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {count / max(samples, 1):6.1%}  {frame}")


def side_by_side(
    suite: str,
    variants: Sequence[Variant],
    load: Load,
    unit: str,
    args: argparse.Namespace,
    data_dir: Path,
    latency_bodies: Sequence[bytes] | None = None,
) -> list[Outcome]:
    with contextlib.ExitStack() as stack:
        endpoints = [stack.enter_context(running(v, data_dir / f"v{i}")) for i, v in enumerate(variants)]
        for endpoint in endpoints:  # warm every server before the first measured round
            measure(endpoint, load, min(1.0, args.seconds))
        settle(endpoints, limit=args.settle_seconds)
        stack.enter_context(sampled(endpoints, args.py_spy, suite))
        outcomes = [Outcome(e.name, []) for e in endpoints]
        last_start: list[float | None] = [None] * len(endpoints)
        for r in range(args.rounds):
            order = list(range(len(endpoints)))
            if r % 2:
                order.reverse()
            for i in order:
                window, start = measure(endpoints[i], load, args.seconds)
                if last_start[i] is not None and outcomes[i].windows:
                    outcomes[i].windows[-1].cpu_until_next = start - (last_start[i] or 0.0)
                last_start[i] = start
                outcomes[i].windows.append(window)
                print(
                    f"[{suite}] round {r + 1}/{args.rounds}  {endpoints[i].name:<44} "
                    f"{window.units / window.wall:>10,.0f} {unit}/s  CPU {window.cpu / window.wall:>4.0%}  "
                    f"{window.units / max(window.cpu, 1e-9):>10,.0f} {unit}/CPU-s in the window  "
                    f"refused {window.refused}",
                    flush=True,
                )
        for i, reading in enumerate(settle(endpoints, limit=args.settle_seconds)):
            outcomes[i].windows[-1].cpu_until_next = reading - (last_start[i] or 0.0)
        for endpoint in endpoints:
            for handler, counts in sorted(endpoint.delivery().items()):
                listed = ", ".join(f"{k.removeprefix('mixer_delivery_').removesuffix('_total')} {v:,.0f}"
                                   for k, v in counts.items())  # fmt: skip
                print(f"[{suite}] {endpoint.name}: {handler}: {listed}", flush=True)
        for outcome in outcomes:
            for r, window in enumerate(outcome.windows):
                print(
                    f"[{suite}] round {r + 1}/{args.rounds}  {outcome.name:<44} "
                    f"CPU charged {window.cpu_until_next:.2f} s "
                    f"(during the load {window.cpu:.2f} s): {window.per_cpu_second:,.0f} {unit}/CPU-s",
                    flush=True,
                )
        if latency_bodies is not None:
            for endpoint, outcome in zip(endpoints, outcomes, strict=True):
                rate = outcome.median_wall() / 2
                outcome.latency = asyncio.run(
                    open_loop(endpoint.grpc_port, latency_bodies, rate, args.latency_seconds or args.seconds)
                )
                p50, p99, worst, failed = outcome.latency
                print(
                    f"[{suite}] latency  {endpoint.name:<44} at {rate:,.0f}/s: p50 {p50:.2f} ms, "
                    f"p99 {p99:.2f} ms, max {worst:.1f} ms, {failed} failed",
                    flush=True,
                )
    return outcomes


def summary(suite: str, unit: str, outcomes: Sequence[Outcome]) -> None:
    base = outcomes[0].median_per_cpu()
    latency = any(o.latency for o in outcomes)
    head = f"| {suite} variant | {unit}/server CPU-s (median) | range | {unit}/s | server CPU | ratio |"
    print("\n" + head + (" p50 / p99 / max at half rate |" if latency else ""))
    print("|---" * (6 + latency) + "|")
    for o in outcomes:
        values = [w.per_cpu_second for w in o.windows]
        ratio = o.median_per_cpu() / max(base, 1e-9)
        row = (
            f"| {o.name} | {o.median_per_cpu():,.0f} | {min(values):,.0f}-{max(values):,.0f} "
            f"| {o.median_wall():,.0f} | {o.median_share():.0%} | {ratio:.2f} |"
        )
        if o.latency is not None:
            p50, p99, worst, failed = o.latency
            row += f" {p50:.2f} / {p99:.2f} / {worst:.1f} ms ({failed} failed) |"
        elif latency:
            row += " - |"
        print(row, flush=True)
    refused = sum(w.refused for o in outcomes for w in o.windows)
    print(f"refused or failed calls over all rounds: {refused}", flush=True)


def with_compare(variants: Sequence[Variant], args: argparse.Namespace) -> list[Variant]:
    """Each ``mixer serve`` variant, then the same with each ``--compare-env`` and ``--compare-tree``."""
    out: list[Variant] = []
    for variant in variants:
        if variant.kind == "mixer" and args.only and not any(o in variant.name for o in args.only):
            continue
        out.append(variant)
        if variant.kind != "mixer":
            continue
        changes: list[tuple[str, dict[str, str]]] = []
        for spec in args.compare_env:
            changes.append((spec, dict(item.partition("=")[::2] for item in spec.split())))
        for spec in args.compare_tree:
            name, _, tree = spec.partition("=")
            # PYTHONPATH comes before the editable install's finder: the server runs that tree's code.
            changes.append((name, {"PYTHONPATH": str(Path(tree).resolve())}))
        for label, env in changes:
            out.append(
                Variant(f"{variant.name} [{label}]", "mixer", variant.configs, {**variant.env, **env},
                        variant.stdout_file)
            )  # fmt: skip
    return out


def run_report(args: argparse.Namespace, tmp: Path) -> list[Outcome]:
    bodies: Sequence[bytes] = report_bodies() if args.recycled_ids else FreshBodies()
    load = grpc_load(REPORT_METHOD, bodies, RECORDS_PER_REPORT, args.report_concurrency)
    with tansu() as kafka, fake_backends(tmp) as (es_url, otlp):
        fanout_env = {
            "MIXER_KAFKA_BROKERS": kafka,
            "MIXER_KAFKA_TOPIC": "istio-accesslog",
            "MIXER_ES_URL": es_url,
            "MIXER_OTLP_ENDPOINT": otlp,
        }
        variants = [
            Variant("trivial Report servicer", "trivial-grpc"),
            Variant("stock Istio 1.4 telemetry", "mixer", STOCK, stdout_file=True),
            Variant("fan-out (Prometheus, Kafka, ES, OTLP)", "mixer", [FANOUT], fanout_env),
        ]
        outcomes = side_by_side("report", with_compare(variants, args), load, "records", args, tmp)
    summary("report", "records", outcomes)
    return outcomes


def run_check(args: argparse.Namespace, tmp: Path) -> list[Outcome]:
    bodies = requests()
    load = grpc_load(CHECK_METHOD, bodies, 1, args.check_concurrency)
    with redis_server() as redis_url:
        variants = [
            Variant("trivial Check servicer", "trivial-grpc"),
            Variant("memquota policy", "mixer", [POLICY / "policy.yaml", POLICY / "memquota.yaml"]),
            Variant(
                "redisquota policy",
                "mixer",
                [POLICY / "policy.yaml", POLICY / "redisquota.yaml"],
                {"BENCH_REDIS_URL": redis_url},
            ),
        ]
        outcomes = side_by_side(
            "check", with_compare(variants, args), load, "calls", args, tmp, latency_bodies=bodies
        )
    summary("check", "calls", outcomes)
    return outcomes


def run_auth(args: argparse.Namespace, tmp: Path) -> list[Outcome]:
    load = http_auth_load(args.check_concurrency)
    variants = [
        Variant("trivial aiohttp handler", "trivial-http"),
        Variant("/v1/auth, memquota policy", "mixer", [POLICY / "policy.yaml", POLICY / "memquota.yaml"]),
    ]
    outcomes = side_by_side("auth", with_compare(variants, args), load, "calls", args, tmp)
    summary("auth", "calls", outcomes)
    return outcomes


SUITES: dict[str, Callable[[argparse.Namespace, Path], list[Outcome]]] = {
    "report": run_report,
    "check": run_check,
    "auth": run_auth,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="default: all three")
    parser.add_argument("--seconds", type=float, default=5.0, help="load per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--settle-seconds", type=float, default=30.0, help="at most this long for deferred sends to finish"
    )
    parser.add_argument("--latency-seconds", type=float, default=0.0, help="open loop per Check variant")
    parser.add_argument("--report-concurrency", type=int, default=4)
    parser.add_argument("--check-concurrency", type=int, default=64)
    parser.add_argument("--compare-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only mixer variants named with TEXT",
    )
    parser.add_argument(
        "--recycled-ids",
        action="store_true",
        help="report suite: send 16 fixed ReportRequests over and over (request and trace ids repeat)",
    )
    parser.add_argument(
        "--compare-tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run every mixer variant on the code of another checkout (e.g. main=../main)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample every mixer variant with py-spy; stacks kept in DIR",
    )
    parser.add_argument("--short", action="store_true", help="a quick pass that only shows it all runs")
    parser.add_argument("--trivial-grpc", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--trivial-http", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trivial_grpc:
        asyncio.run(_trivial_grpc(args.trivial_grpc))
        return 0
    if args.trivial_http:
        asyncio.run(_trivial_http(args.trivial_http))
        return 0
    if args.short:
        args.seconds, args.rounds, args.latency_seconds, args.settle_seconds = 0.5, 2, 0.5, 3.0
    for flag, specs in (("--compare-env", args.compare_env), ("--compare-tree", args.compare_tree)):
        for spec in specs:
            if not spec.split() or any("=" not in item for item in spec.split()):
                parser.error(f"{flag} {spec!r}: expected NAME=VALUE")
    pin(CLIENT_CPU)
    print(
        f"server CPU {SERVER_CPU}, load CPU {CLIENT_CPU}; {args.rounds} rounds of {args.seconds:g} s "
        f"per variant; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for suite in args.suite or sorted(SUITES, key=["report", "check", "auth"].index):
            (Path(tmp) / suite).mkdir()
            SUITES[suite](args, Path(tmp) / suite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
