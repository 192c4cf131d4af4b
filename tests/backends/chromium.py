"""Debian's headless Chromium, driven through its chromedriver by selenium.

``chromium_driver`` (a fixture) yields a WebDriver of a fresh browser with a profile of its own
under the test's tmp_path, and quits it (which stops chromedriver and the browser) afterwards.
Installed by ``make system-deps`` (packages chromium and chromium-driver).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["CHROMEDRIVER", "CHROMIUM", "chromium_driver", "new_driver"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Quiet, offline and reproducible: nothing but the page under test reaches the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def new_driver(profile: Path, *, width: int = 1100, height: int = 900) -> webdriver.Chrome:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            raise RuntimeError(f"{program} is missing: run `make system-deps` (chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def chromium_driver(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = new_driver(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
