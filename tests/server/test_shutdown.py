"""Graceful shutdown of a real server: what Report accepted is written before the process exits."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path

import grpc
import pytest

from mixer.api.mixer_v1 import REPORT_METHOD
from mixer.server import MixerServer, ServeOptions
from mixer.wire import encode_report_request
from tests.server.support import Launcher, http_get, policy_config, read_json_lines

SENDERS = 32


async def test_sigterm_loses_no_accepted_report(servers: Launcher, tmp_path: Path) -> None:
    output = tmp_path / "reports.jsonl"
    config = tmp_path / "policy.yaml"
    config.write_text(policy_config(output), "utf-8")
    server = servers.start("--config", str(config), "--shutdown-timeout", "10")

    accepted: list[str] = []
    refused: list[grpc.StatusCode] = []
    ids = (f"id-{n}" for n in itertools.count())
    enough = asyncio.Event()

    async def send(channel: grpc.aio.Channel) -> None:
        rpc = channel.unary_unary(REPORT_METHOD)
        while True:
            batch = [next(ids) for _ in range(5)]
            payload = encode_report_request([{"request.id": i} for i in batch]).SerializeToString()
            try:
                await rpc(payload, timeout=10)
            except grpc.aio.AioRpcError as err:
                refused.append(err.code())
                return
            accepted.extend(batch)
            if len(accepted) >= 1000:
                enough.set()

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        senders = [asyncio.ensure_future(send(channel)) for _ in range(SENDERS)]
        async with asyncio.timeout(30):
            await enough.wait()
            server.send(signal.SIGTERM)
            await asyncio.gather(*senders)
    assert await asyncio.to_thread(server.process.wait, 30) == 0

    assert refused
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    written = {entry["requestId"] for entry in read_json_lines(output)}
    missing = [i for i in accepted if i not in written]
    assert not missing, f"{len(missing)} of {len(accepted)} accepted reports were lost"
    assert "stopped" in server.stderr()


async def test_in_process_lifecycle_writes_and_removes_the_ready_file(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    options = ServeOptions(
        config_paths=(str(_config(tmp_path)),),
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        ready_file=ready_file,
        data_dir=tmp_path / "data",
        reload_interval=0,
    )
    server = MixerServer(options)
    await server.start()
    try:
        info = json.loads(ready_file.read_text())
        assert info["grpc"] == str(server.grpc_address)
        assert info["http"] == str(server.http_address)
        assert info["admin"] == str(server.admin_address)
        assert server.admin_address is not None
        assert server.admin_address.port not in (0, server.http_address and server.http_address.port)
        assert server.grpc_address is not None
        assert server.grpc_address.port != 0
        assert (tmp_path / "data").is_dir()
        status, _ = await asyncio.to_thread(http_get, f"http://{info['http']}/readyz")
        assert status == 200
    finally:
        await server.stop()
    assert not ready_file.exists()
    assert not server.admin.ready
    await server.stop()  # idempotent


async def test_an_invalid_config_at_start_is_a_startup_error(tmp_path: Path) -> None:
    from mixer.server import StartupError

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: x}\nspec: {bogus: 1}\n"
    )
    server = MixerServer(
        ServeOptions(
            config_paths=(str(bad),),
            grpc_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
        )
    )
    with pytest.raises(StartupError, match="invalid config"):
        await server.start()
    assert not server.admin.ready


def _config(directory: Path) -> Path:
    path = directory / "policy.yaml"
    path.write_text(policy_config(directory / "reports.jsonl"), "utf-8")
    return path
