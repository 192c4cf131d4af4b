"""The status page in a real browser (Debian's headless Chromium) on a `mixer serve` under load,
its numbers checked against ``/metrics``, and during a Kafka outage (a real Tansu broker stopped).

``MIXER_UPDATE_SCREENSHOTS=1`` also writes the screenshots docs/status-page.md shows
(docs/images/status.png and docs/images/status-kafka-outage.png).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.backends.chromium import chromium_driver
from tests.backends.kafka import TansuBroker, tansu, unique_topic
from tests.server.status_support import KAFKA_HANDLER, Load, kafka_config, status_json
from tests.server.support import Launcher, ServerProcess, metric_value, wait_until

__all__ = ["chromium_driver", "tansu"]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
UPDATE_SCREENSHOTS = os.environ.get("MIXER_UPDATE_SCREENSHOTS") == "1"
#: Seconds the broker stays down at least (then until the page shows a growing backlog).
OUTAGE = 6.0


@pytest.fixture
def kafka_server(
    servers: Launcher, tansu: TansuBroker, tmp_path: Path
) -> Iterator[tuple[ServerProcess, Load]]:
    config = tmp_path / "config.yaml"
    config.write_text(
        kafka_config(tmp_path / "reports.jsonl", tansu.bootstrap, unique_topic("status")), "utf-8"
    )
    server = servers.start(
        "--config", str(config), "--reload-interval", "0", "--data-dir", str(tmp_path / "data")
    )
    load = Load(server.grpc_target, limit=240)
    load.start()
    try:
        yield server, load
    finally:
        load.finish()


def shown(driver: webdriver.Chrome, key: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-key="{key}"]').text)


def number(driver: webdriver.Chrome, key: str) -> float:
    return float(shown(driver, key))


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    value = metric_value(server.metrics(), name, **labels)
    assert value is not None, f"{name} {labels} not in /metrics"
    return value


def screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = (DOCS_IMAGES if UPDATE_SCREENSHOTS else tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_the_page_under_load_shows_what_metrics_say(
    kafka_server: tuple[ServerProcess, Load], chromium_driver: webdriver.Chrome, tmp_path: Path
) -> None:
    server, load = kafka_server
    driver = chromium_driver
    wait_until(lambda: load.checks >= 100, 60, "100 Checks")

    # While the load runs: what the page shows lies between two scrapes around its load.
    before = metric(server, "mixer_check_calls_total")
    driver.get(server.admin_url + "/status")
    on_page = number(driver, "check_calls")
    after = metric(server, "mixer_check_calls_total")
    assert before <= on_page <= after
    assert after > before, "the load was not running"
    assert "Mesh Mixer status" in driver.title

    # Frozen: once the queue has drained, page and scrape agree exactly.
    load.pause()
    wait_until(
        lambda: metric(server, "mixer_delivery_queued_records", handler=KAFKA_HANDLER) == 0,
        30,
        "the kafka queue to drain",
    )
    driver.get(server.admin_url + "/status/handlers")
    page = {
        "queue": number(driver, f"queue:{KAFKA_HANDLER}"),
        "spool": number(driver, f"spool:{KAFKA_HANDLER}"),
        "sent": number(driver, f"sent:{KAFKA_HANDLER}"),
    }
    scrape = {
        "queue": metric(server, "mixer_delivery_queued_records", handler=KAFKA_HANDLER),
        "spool": metric(server, "mixer_delivery_spool_records", handler=KAFKA_HANDLER),
        "sent": metric(server, "mixer_delivery_sent_total", handler=KAFKA_HANDLER),
    }
    assert page == scrape
    assert page["sent"] >= load.reports * 5 - 5 * load.failures
    assert shown(driver, f"health:{KAFKA_HANDLER}") == "ok"
    driver.get(server.admin_url + "/status")
    assert number(driver, "check_calls") == metric(server, "mixer_check_calls_total") == load.checks
    assert number(driver, "denials") == load.checks // 4
    load.resume()

    # The charts have points once the sampler has run a few times.
    def charted() -> bool:
        driver.get(server.admin_url + "/status")
        polylines = driver.find_elements(By.CSS_SELECTOR, "svg polyline")
        return len(polylines) == 2 and len(str(polylines[0].get_attribute("points")).split()) >= 4

    driver.set_window_size(1000, 640)
    wait_until(charted, 60, "two charts with four points", interval=1.0)
    screenshot(driver, tmp_path, "status.png")

    # A phone: nothing wider than the screen but the tables, which scroll in their own box.
    driver.set_window_size(390, 844)
    for view in ("/status", "/status/handlers", "/status/denials"):
        driver.get(server.admin_url + view)
        width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{view} is {width[0]}px wide on a {width[1]}px screen"
    screenshot(driver, tmp_path, "status-phone.png")

    # The page refreshes itself (the meta refresh): a mark set in it is gone after a while.
    driver.get(server.admin_url + "/status?refresh=2")
    driver.execute_script("window.__mark = 1")
    wait_until(
        lambda: driver.execute_script("return window.__mark") is None, 20, "a self-refresh", interval=0.5
    )


def test_the_page_during_a_kafka_outage(
    kafka_server: tuple[ServerProcess, Load],
    tansu: TansuBroker,
    chromium_driver: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    server, load = kafka_server
    driver = chromium_driver
    wait_until(
        lambda: metric(server, "mixer_delivery_sent_total", handler=KAFKA_HANDLER) > 50, 60, "records sent"
    )

    def handler_view() -> dict[str, Any]:
        driver.get(server.admin_url + "/status/handlers")
        return {
            "health": shown(driver, f"health:{KAFKA_HANDLER}"),
            "queue": number(driver, f"queue:{KAFKA_HANDLER}"),
            "spool": number(driver, f"spool:{KAFKA_HANDLER}"),
            "circuit": shown(driver, f"circuit:{KAFKA_HANDLER}"),
            "failed": number(driver, f"failed:{KAFKA_HANDLER}"),
            "dead": number(driver, f"dead:{KAFKA_HANDLER}"),
        }

    assert handler_view()["health"] == "ok"
    failures_before = load.failures
    tansu.stop()
    outage_started = time.monotonic()
    seen: list[dict[str, Any]] = []

    def unhealthy_and_growing() -> bool:
        view = handler_view()
        view["t"] = round(time.monotonic() - outage_started, 1)
        seen.append(view)
        held = [v["queue"] + v["spool"] for v in seen if v["health"] != "ok"]
        # Some seconds of outage, so the page shows more than its first moment.
        return len(held) >= 2 and held[-1] > held[0] > 0 and view["t"] >= OUTAGE

    wait_until(unhealthy_and_growing, 90, "the kafka handler unhealthy with a growing backlog", interval=1.0)
    during = seen[-1]
    assert during["health"] in ("retrying", "down")
    assert during["failed"] > 0
    assert during["dead"] == 0
    overview = status_json(server)
    assert KAFKA_HANDLER in overview["unhealthy"]
    driver.set_window_size(1000, 520)
    driver.get(server.admin_url + "/status/handlers")
    shot = screenshot(driver, tmp_path, "status-kafka-outage.png")

    tansu.start()
    load.pause()
    # The spool held what the broker could not take: every Report was still answered OK.
    assert load.failures == failures_before

    def recovered() -> bool:
        view = handler_view()
        view["t"] = round(time.monotonic() - outage_started, 1)
        seen.append(view)
        return bool(
            view["health"] == "ok"
            and view["queue"] == 0
            and view["spool"] == 0
            and view["circuit"] == "closed"
        )

    wait_until(recovered, 120, "the kafka handler to recover and drain", interval=1.0)
    assert metric(server, "mixer_delivery_spool_records", handler=KAFKA_HANDLER) == 0
    assert metric(server, "mixer_delivery_dead_lettered_total", handler=KAFKA_HANDLER) == 0
    # What the page showed, for docs/status-page.md.
    print(f"\nkafka outage as the status page showed it (screenshot {shot}):")
    for view in seen:
        print(
            f"  t={view['t']:>5}s health={view['health']:<8} queue={view['queue']:>5.0f} "
            f"spool={view['spool']:>5.0f} circuit={view['circuit']:<6} failed={view['failed']:.0f}"
        )
