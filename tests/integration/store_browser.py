"""A real Chromium driven by chromedriver (selenium), for the /ui tests; screenshots as artifacts."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACT_DIR", ROOT / "build" / "test-artifacts")) / "ui"
DOCS_IMG = ROOT / "docs" / "img"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1500,1000",
)  # fmt: skip


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _binary("chromium", "chromium-browser")
    driver_bin = _binary("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("chromium and chromedriver are needed (make test installs Debian's packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page may be mid-render
            last_exc = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last_exc!r}" if last_exc else ""))


def screenshot(driver: Any, name: str) -> Path:
    """Save a PNG under the artifacts dir (and into docs/img with UPDATE_SCREENSHOTS=1)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # The whole page, not just the viewport (bounded, so a runaway page cannot make a huge image).
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight")), 2400)
    size = driver.get_window_size()
    driver.set_window_size(size["width"], max(height, 600))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / f"ui-{name}.png")
    return path
