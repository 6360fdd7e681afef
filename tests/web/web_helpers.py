"""Helpers for the browser tests: the test key, and `Browser` (a Chromium session plus its request log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.service.service_helpers import REPO

KEY = "console-test-key-0123456789abcdef"
SCREENSHOTS = REPO / "docs" / "console"
LOCAL_SCHEMES = ("data:", "blob:")


class Browser:
    """A Chromium session plus the log of every request its pages started (read from DevTools events)."""

    def __init__(self, driver: Any, downloads: Path) -> None:
        self.driver = driver
        self.downloads = downloads
        self.requests: list[dict[str, str]] = []  # {"url", "method"} in the order they were sent

    def drain(self) -> list[dict[str, str]]:
        """Requests sent since the last drain (and keep them all in `requests`)."""
        new = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                req = message["params"]["request"]
                new.append({"url": req["url"], "method": req["method"]})
        self.requests += new
        return new

    def click(self, element: Any) -> None:
        """Scroll `element` to the middle of the window (clear of the sticky top bar), then click it."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def screenshot(self, name: str) -> Path:
        """Full-page PNG under docs/console/ (the window grows to the page's height first)."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, max(860, min(int(height) + 100, 2400)))
        self.driver.execute_script("window.scrollTo(0, 0)")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 860)
        return path
