"""The control-headers task end to end: a real `mixer serve`, Istio's keyval documents, the fake adapter."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.oop.fake_adapter import NOT_FOUND, FakeAdapter, start_fake
from tests.server.support import check, launcher

ISTIO = Path(__file__).resolve().parents[2].parent / "shared" / "istio-1.4"


async def test_keyval_lookup_becomes_a_request_header_in_the_check_response(tmp_path: Path) -> None:
    if not ISTIO.is_dir():
        pytest.fail(f"Istio 1.4 configs not found at {ISTIO} (the shared data folder beside the repository)")
    adapter = FakeAdapter()
    server, port = await start_fake(adapter)
    # The task's documents as they are, but for where the adapter runs (a Kubernetes service there).
    task = (ISTIO / "docs-tasks" / "control-headers-keyval.yaml").read_text()
    assert "address: keyval:9070" in task
    handler = tmp_path / "control-headers.yaml"
    handler.write_text(task.replace("address: keyval:9070", f"address: 127.0.0.1:{port}"))
    try:
        with launcher(tmp_path) as launch:
            mixer = launch.start(
                "--config",
                str(ISTIO / "httpbin" / "keyval-template.yaml"),
                "--config",
                str(ISTIO / "httpbin" / "keyval.yaml"),
                "--config",
                str(handler),
            )
            async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
                allowed = await check(channel, {"request.headers": {"user": "jason"}})
                denied = await check(channel, {"request.headers": {"user": "mallory"}})
    finally:
        await server.stop(None)
    precondition = allowed.precondition
    assert precondition.status.code == 0
    operations = [(op.name, op.value) for op in precondition.route_directive.request_header_operations]
    assert operations == [("user-group", "admin")]
    assert denied.precondition.status.code == NOT_FOUND
    assert not denied.precondition.route_directive.request_header_operations
    assert adapter.received["HandleKeyval"][0].instance.key == "jason"  # type: ignore[attr-defined]
