"""Browser fixtures: `labelforge serve` with the shipped bundles, and Debian's headless Chromium driven by
selenium + chromedriver with every non-loopback request blocked and every request the page makes logged.

Run with `make test-web` (installs chromium, chromium-driver and selenium when missing)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import KEY, LOCAL_SCHEMES, Browser

from tests.service.service_helpers import BIN, FAST, REPO, Proc, Server, free_port, wait_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`labelforge serve` as a user starts it, serving the shipped bundles (faces-m, digits)."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {**FAST, "LABELFORGE_DATA_DIR": str(tmp / "data"), "LABELFORGE_DATABASE_URL": f"sqlite:///{tmp}/data/labelforge.db",
           "LABELFORGE_BROKER_URL": "filesystem://", "LABELFORGE_BUNDLES_DIR": str(REPO / "bundles"),
           "LABELFORGE_API_KEYS": KEY}
    proc = Proc([str(BIN / "labelforge"), "serve", "--port", str(port)], env, tmp / "serve.log", cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield Server(url, [KEY], env, tmp / "data", [proc])
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    selenium = pytest.importorskip("selenium", reason="run `make test-web` to install selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver not installed; run `make test-web`")
    assert selenium
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US",
                # No network but loopback: names resolve nowhere, and anything else goes to a dead proxy.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield Browser(driver, downloads)
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def no_remote_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each browser test: every request the pages made went to the test server (or data:/blob:)."""
    yield
    if "browser" not in request.fixturenames or "console_server" not in request.fixturenames:
        return
    browser: Browser = request.getfixturevalue("browser")
    server: Server = request.getfixturevalue("console_server")
    sent = browser.drain()
    remote = [r["url"] for r in sent if not r["url"].startswith((server.url + "/", *LOCAL_SCHEMES))]
    assert not remote, f"the console tried to reach the network: {remote}"
