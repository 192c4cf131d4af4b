"""Hot reload of a real server: on config file change and on SIGHUP; invalid configs keep the old one."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc

from mixer.status import Code
from tests.server.support import (
    Launcher,
    ServerProcess,
    check,
    metric_value,
    policy_config,
    wait_until,
    write_atomically,
)

INVALID = """
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: broken, namespace: istio-system}
spec:
  match: destination.service.host ==
  actions:
  - handler: nosuchhandler
    instances: [nothing]
"""


def reloads(server: ServerProcess, result: str) -> float:
    return metric_value(server.metrics(), "mixer_config_reloads_total", result=result) or 0.0


async def precondition(channel: grpc.aio.Channel, host: str) -> int:
    response = await check(channel, {"destination.service.host": host})
    return int(response.precondition.status.code)


async def wait_for_precondition(channel: grpc.aio.Channel, host: str, code: Code) -> None:
    async with asyncio.timeout(15):
        while await precondition(channel, host) != code:
            await asyncio.sleep(0.05)


async def test_a_changed_config_file_is_picked_up_and_an_invalid_one_is_refused(
    servers: Launcher, tmp_path: Path
) -> None:
    output = tmp_path / "reports.jsonl"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    config = config_dir / "policy.yaml"
    config.write_text(policy_config(output, blocked_host="a.svc"), "utf-8")
    server = servers.start("--config", str(config_dir), "--reload-interval", "0.1")
    generation = metric_value(server.metrics(), "mixer_config_generation")
    assert generation is not None

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        assert await precondition(channel, "b.svc") == Code.OK
        write_atomically(config, policy_config(output, blocked_host="b.svc"))
        await wait_for_precondition(channel, "b.svc", Code.PERMISSION_DENIED)
        assert await precondition(channel, "a.svc") == Code.OK
        assert reloads(server, "success") == 1
        assert (metric_value(server.metrics(), "mixer_config_generation") or 0) > generation
        # The unchanged stdio handler was carried over, not restarted.
        assert "tofile.istio-system; retired: none" in server.stderr()

        # A new file in the watched directory with two mistakes: both logged, the old config stays.
        write_atomically(config_dir / "broken.yaml", INVALID)
        wait_until(lambda: reloads(server, "failure") == 1, 15, "a failed reload to be counted")
        assert await precondition(channel, "b.svc") == Code.PERMISSION_DENIED
        log = server.stderr()
        assert "config reload failed, the current config stays: 2 configuration error(s)" in log
        assert "nosuchhandler" in log
        assert "destination.service.host ==" in log

        (config_dir / "broken.yaml").unlink()
        wait_until(lambda: reloads(server, "success") == 2, 15, "the reload after the fix")
        assert await precondition(channel, "b.svc") == Code.PERMISSION_DENIED
    assert server.stop() == 0


async def test_sighup_reloads(servers: Launcher, tmp_path: Path) -> None:
    output = tmp_path / "reports.jsonl"
    config = tmp_path / "policy.yaml"
    config.write_text(policy_config(output, blocked_host="a.svc"), "utf-8")
    server = servers.start("--config", str(config), "--reload-interval", "0")

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        config.write_text(policy_config(output, blocked_host="b.svc"), "utf-8")
        server.send(signal.SIGHUP)
        await wait_for_precondition(channel, "b.svc", Code.PERMISSION_DENIED)
        assert reloads(server, "success") == 1

        config.write_text(INVALID, "utf-8")
        server.send(signal.SIGHUP)
        wait_until(lambda: reloads(server, "failure") == 1, 15, "a failed reload to be counted")
        assert await precondition(channel, "b.svc") == Code.PERMISSION_DENIED
        status, _ = server.get("/readyz")
        assert status == 200
    assert server.stop() == 0
