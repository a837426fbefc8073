"""A real headless Chromium for browser tests, driven by Selenium through chromedriver.

Both come from the system (Debian ``chromium`` and ``chromium-driver``; ``scripts/dev test``
installs them): pip cannot download a browser, and Selenium is told where they are, so it
never tries to.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CHROMEDRIVER", "CHROMIUM", "chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2000",
)


@contextmanager
def chromium() -> Iterator[object]:
    """A Selenium WebDriver on a fresh profile; quits the browser on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    with tempfile.TemporaryDirectory(prefix="llm-edge-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(20)
            yield driver
        finally:
            driver.quit()
