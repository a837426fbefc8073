"""A real headless Chromium for browser tests, driven by Selenium through chromedriver, and
the operator console as a page in it (:class:`Page`).

Both come from the system (Debian ``chromium`` and ``chromium-driver``; ``scripts/dev test``
installs them): pip cannot download a browser, and Selenium is told where they are, so it
never tries to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMEDRIVER", "CHROMIUM", "PATIENCE_S", "Page", "chromium", "needs_chromium"]

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
#: Skips a test where the system has no chromium and chromedriver.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)
#: How long a page step waits for what it looks for (the console polls once a second).
PATIENCE_S = 20.0


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


class Page:
    """The console page in Chromium, one blocking step per method (run them in a thread)."""

    def __init__(self, driver: Any, url: str, patience_s: float = PATIENCE_S) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        # the page redraws its tables every poll: an element found may be replaced at once
        self.wait = WebDriverWait(
            driver,
            patience_s,
            poll_frequency=0.1,
            ignored_exceptions=(StaleElementReferenceException,),
        )

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def until(self, selector: str, check: Callable[[list[Any]], bool] = bool) -> list[Any]:
        """The elements matching ``selector`` once ``check`` holds for them."""
        found: list[Any] = []

        def ready(_: object) -> bool:
            nonlocal found
            found = self.css(selector)
            return check(found)

        self.wait.until(ready, f"waiting for {selector}")
        return found

    def texts(self, selector: str, check: Callable[[list[str]], bool] = bool) -> list[str]:
        """The texts of the elements matching ``selector`` once ``check`` holds for them (read
        in one go, so a redraw between two reads cannot mix two polls)."""
        found: list[str] = []

        def ready(_: object) -> bool:
            nonlocal found
            found = [str(e.text) for e in self.css(selector)]
            return check(found)

        self.wait.until(ready, f"waiting for the text of {selector}")
        return found

    def attributes(
        self, selector: str, name: str, check: Callable[[list[str]], bool] = bool
    ) -> list[str]:
        """Attribute ``name`` of the elements matching ``selector`` once ``check`` holds for
        the values (read in one go, like :meth:`texts`)."""
        found: list[str] = []

        def ready(_: object) -> bool:
            nonlocal found
            found = [str(e.get_attribute(name)) for e in self.css(selector)]
            return check(found)

        self.wait.until(ready, f"waiting for {name} of {selector}")
        return found

    def sign_in(self, key: str) -> None:
        self.driver.get(self.url)
        self.until("#auth:not([hidden])")
        self.css("#admin-key")[0].send_keys(key)
        self.css("#auth button[type=submit]")[0].click()
        self.until("#services-body tr")

    def click(self, selector: str) -> None:
        """Click the first match; a button redrawn under the click is found again."""

        def clicked(_: object) -> bool:
            found = self.css(selector)
            if found:
                found[0].click()
            return bool(found)

        self.wait.until(clicked, f"waiting to click {selector}")

    def confirm(self) -> None:
        self.click("dialog[open] #confirm-yes")

    def type_into(self, selector: str, text: str) -> None:
        field = self.until(selector)[0]
        field.clear()
        field.send_keys(text)

    def notice(self, contains: str) -> str:
        return self.texts("#notice", lambda t: contains in t[0])[0]

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("CONSOLE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(folder) / name))
