"""Real `mixer serve` processes on free loopback ports, and raw-bytes gRPC calls to them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mixer.api.mixer_v1 import CHECK_METHOD, REPORT_METHOD
from mixer.attributes import AttributeValue
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.server import ServeOptions
from mixer.wire import encode_check_request, encode_report_request

#: Generous: a cold start imports grpc, aiohttp and every adapter (about a second here).
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
MIXER_SCRIPT = Path(sys.executable).with_name("mixer")
#: Served on the admin port only (--admin-listen).
ADMIN_PATHS = frozenset({"/metrics", "/config"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class ServerProcess:
    """A `mixer serve` process with its output captured in files (a pipe could fill and block it)."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    stdout_path: Path
    stderr_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    admin_port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text("utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` where it is served: the admin endpoints on the admin port, the rest (the
        HTTP protocols, the probes) on the HTTP port."""
        route = path.split("?", 1)[0]
        admin = route in ADMIN_PATHS or route == "/status" or route.startswith(("/status/", "/status."))
        base = self.admin_url if admin else self.http_url
        return http_get(base + path)

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                status, _ = self.get("/readyz")
            except OSError:
                return False
            return status == 200

        wait_until(ready, timeout, f"/readyz of pid {self.pid}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. The exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Launcher:
    """Starts servers in ``directory`` and stops every one of them, by pid, in :meth:`close`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[ServerProcess] = []

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
        n = len(self.servers)
        stdout_path = self.directory / f"server-{n}.stdout"
        stderr_path = self.directory / f"server-{n}.stderr"
        environ = dict(os.environ)
        environ.setdefault("MIXER_PROMETHEUS_LISTEN", f"127.0.0.1:{free_port()}")
        environ.update(env or {})
        argv = [
            *(command or [sys.executable, "-m", "mixer"]),
            "serve",
            "--grpc-listen",
            f"127.0.0.1:{grpc_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            *args,
        ]
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(argv, stdout=out, stderr=err, env=environ)
        server = ServerProcess(process, grpc_port, http_port, stdout_path, stderr_path, admin_port=admin_port)
        server.extra["env"] = environ
        self.servers.append(server)
        if wait:
            server.wait_ready()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.kill()


@contextlib.contextmanager
def launcher(directory: Path) -> Iterator[Launcher]:
    launch = Launcher(directory)
    try:
        yield launch
    finally:
        launch.close()


# -- gRPC ----------------------------------------------------------------------------------------


async def call(channel: grpc.aio.Channel, method: str, payload: bytes, timeout: float = 10.0) -> bytes:
    rpc = channel.unary_unary(method)
    answer: bytes = await rpc(payload, timeout=timeout)
    return answer


async def check(
    channel: grpc.aio.Channel, values: Mapping[str, AttributeValue], **kwargs: Any
) -> CheckResponse:
    payload = encode_check_request(values, **kwargs).SerializeToString()
    return CheckResponse.FromString(await call(channel, CHECK_METHOD, payload))


async def report(channel: grpc.aio.Channel, bags: Sequence[Mapping[str, AttributeValue]]) -> bytes:
    payload = encode_report_request(bags).SerializeToString()
    return await call(channel, REPORT_METHOD, payload)


async def rpc_error(channel: grpc.aio.Channel, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    try:
        await call(channel, method, payload)
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"{method} succeeded; an error was expected")


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a text exposition (labels must match exactly the ones given)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def policy_config(output: Path, *, blocked_host: str = "blocked.svc", extra: str = "") -> str:
    """A config with a denier for one destination host and every Report logged to ``output``."""
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: denyall, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params:
    status: {{code: 7, message: not on the guest list}}
    validDuration: 7s
    validUseCount: 3
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: denyblocked, namespace: istio-system}}
spec:
  match: destination.service.host == "{blocked_host}"
  actions:
  - handler: denyall
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: tofile, namespace: istio-system}}
spec:
  compiledAdapter: stdio
  params:
    outputPath: {output}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: entry, namespace: istio-system}}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      requestId: request.id | ""
      apiKey: request.api_key | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: logall, namespace: istio-system}}
spec:
  actions:
  - handler: tofile
    instances: [entry]
{extra}"""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, as a ConfigMap update does, so no poll sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def policy_options(tmp_path: Path, **overrides: object) -> ServeOptions:
    """Options of an in-process server with :func:`policy_config` on loopback ports of its own."""
    config = tmp_path / "policy.yaml"
    config.write_text(policy_config(tmp_path / "reports.jsonl"), "utf-8")
    settings: dict[str, object] = {
        "config_paths": (str(config),),
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "reload_interval": 0,
        "shutdown_timeout": 10.0,
    }
    settings.update(overrides)
    return ServeOptions(**settings)  # type: ignore[arg-type]
