"""The disk under the spool fills up while the backend is down.

``--data-dir`` is a 512 KiB tmpfs mounted by the test (CI runs as root; so does this suite). The
fake Elasticsearch answers 503 while Reports keep coming, so the elasticsearch handler spools
until the file system is full (ENOSPC), then keeps what it can in memory (a queue of 300 records)
and refuses the rest. What must hold: Reports are refused (UNAVAILABLE), not dropped after an OK;
the reasons are counted (``mixer_handler_overloaded_total``, ``mixer_delivery_dropped_total``);
the server keeps serving; and once Elasticsearch answers again every record a Report was accepted
for is indexed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import (
    FANOUT_ATTRIBUTES,
    Figures,
    count_delivery,
    metric,
    record,
    reports_sent,
    sized,
    start_server,
    wait_for,
)
from tests.e2e.conftest import ReportLoad, es_request_ids
from tests.fakes.fake_elasticsearch import FakeElasticsearch
from tests.server.support import Launcher

pytestmark = pytest.mark.chaos

HANDLER = "elasticsearch.istio-system"
DISK = "512k"
#: Load kept up after the first refusal: the server must go on refusing cleanly.
REFUSING = sized(2.0, 10.0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted (lazily: a killed server may still hold it) at the end."""
    assert os.geteuid() == 0, "mounting the small tmpfs needs root (as CI has)"
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def config(es_url: str) -> str:
    return f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: elasticsearch, namespace: istio-system}}
spec:
  compiledAdapter: elasticsearch
  params:
    hosts: ["{es_url}"]
    index: chaos-%Y.%m.%d
    request_timeout: 5s
    delivery:
      batch_timeout: 20ms
      retry_initial_interval: 100ms
      retry_max_interval: 500ms
      queue_max_records: 300
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: accesslog, namespace: istio-system}}
spec:
  actions:
  - {{handler: elasticsearch, instances: [accesslog]}}
"""


async def test_a_full_disk_under_the_spool_refuses_cleanly_and_loses_nothing_accepted(
    launch: Launcher, fake_es: FakeElasticsearch, small_disk: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "es.yaml"
    config_path.write_text(config(fake_es.url), "utf-8")
    server = await start_server(
        launch,
        FANOUT_ATTRIBUTES,
        "--config",
        str(FANOUT_ATTRIBUTES.with_name("accesslog.yaml")),
        "--config",
        str(config_path),
        "--data-dir",
        str(small_disk),
        "--reload-interval",
        "0",
    )
    fake_es.fail_requests(seconds=3600, status=503)
    load = ReportLoad(server.grpc_target, batch=20, interval=0.02).start()

    async def refusing() -> bool:
        return load.refused > 0

    await wait_for(refusing, 120, "a Report refused once the disk is full")
    await asyncio.sleep(REFUSING)
    await load.stop()
    assert server.process.poll() is None, server.stderr()
    stats = os.statvfs(small_disk)
    free = stats.f_bavail * stats.f_frsize
    overloaded = await metric(server, "mixer_handler_overloaded_total", handler=HANDLER)
    spool_errors = await metric(server, "mixer_delivery_dropped_total", handler=HANDLER, reason="spool_error")
    queue_full = await metric(server, "mixer_delivery_dropped_total", handler=HANDLER, reason="queue_full")
    log = server.stderr()

    fake_es.clear_failures()
    accepted = set(load.accepted)

    async def indexed() -> bool:
        return accepted <= set(es_request_ids(fake_es))

    await wait_for(indexed, 120, "every accepted record indexed once elasticsearch is back")
    figures = Figures(f"a full disk ({DISK} tmpfs) under the spool", sent=reports_sent(load))
    count_delivery(figures, accepted, es_request_ids(fake_es))
    figures.refused = load.refused * load.batch
    figures.notes.update(
        overloaded_batches=int(overloaded),
        dropped_spool_error=int(spool_errors),
        dropped_queue_full=int(queue_full),
        free_bytes_when_refusing=free,
    )
    record(figures)
    assert figures.lost == 0
    # Refusals are counted where they happen, and the full disk is named in the log.
    assert overloaded > 0
    assert "database or disk is full" in log, log[-2000:]
