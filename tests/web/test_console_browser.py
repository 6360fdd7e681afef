"""The web console in headless Chromium against `labelforge serve` (shipped bundles, SQLite, local storage,
embedded worker): sign in, create a dataset with a live preview, open its card and download a shard,
follow jobs live, predict from a dropped photo, explore with sliders. Screenshots go to docs/console/.
No request may leave 127.0.0.1 (see the `no_remote_requests` fixture)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from web_helpers import KEY, Browser

from tests.service.service_helpers import Server, wait_job

pytestmark = pytest.mark.browser

WAIT_S = 60.0


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll `check` until it returns something truthy (JS errors and missing elements count as 'not yet')."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # element not there yet, stale after a re-render
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def js(browser: Browser, script: str, *args: Any) -> Any:
    return browser.driver.execute_script(script, *args)


def open_signed_in(browser: Browser, server: Server, route: str) -> None:
    browser.driver.get(server.url + "/")
    js(browser, "sessionStorage.setItem('labelforge.apiKey', arguments[0])", KEY)
    browser.driver.get(f"{server.url}/#/{route}")


def photo_png() -> bytes:
    """A real photo that ships with scikit-image (an astronaut's portrait), cropped to the face."""
    from skimage import data

    img = Image.fromarray(data.astronaut()).crop((140, 20, 340, 220)).resize((160, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def set_input(browser: Browser, selector: str, value: str) -> None:
    """Type into an input as a user does (select all, type), which fires the form's input events."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    el = browser.driver.find_element(By.CSS_SELECTOR, selector)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(value)


def test_sign_in_refuses_a_wrong_key_and_keeps_the_right_one_in_session_storage(browser: Browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By

    d = browser.driver
    d.get(console_server.url + "/")
    js(browser, "sessionStorage.clear()")
    d.refresh()
    key_input = wait_for(lambda: d.find_element(By.ID, "api-key"), "the sign-in form")
    assert not d.find_element(By.ID, "nav").is_displayed()
    browser.screenshot("signin")
    key_input.send_keys("lf_not-a-key\n")
    error = wait_for(lambda: d.find_element(By.ID, "signin-error").text, "the sign-in error")
    assert "invalid API key" in error
    assert js(browser, "return sessionStorage.getItem('labelforge.apiKey')") is None
    d.find_element(By.ID, "api-key").clear()
    d.find_element(By.ID, "api-key").send_keys(KEY + "\n")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "h1").text == "Jobs", "the jobs page")
    assert d.find_element(By.ID, "nav").is_displayed()
    assert js(browser, "return sessionStorage.getItem('labelforge.apiKey')") == KEY
    sent = browser.drain()
    assert any(r["url"] == f"{console_server.url}/models" for r in sent), "the key was checked against the API"
    browser.click(d.find_element(By.ID, "signout"))
    wait_for(lambda: d.find_element(By.ID, "api-key"), "the sign-in form after signing out")
    assert js(browser, "return sessionStorage.getItem('labelforge.apiKey')") is None


def test_create_a_dataset_with_live_preview_then_open_its_card_and_download_a_shard(
        browser: Browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By

    d = browser.driver
    open_signed_in(browser, console_server, "new")
    tiles = lambda: d.find_elements(By.CSS_SELECTOR, "#preview .tile img:not(.sim)")  # noqa: E731
    wait_for(lambda: len(tiles()) == 8 and all(js(browser, "return arguments[0].naturalWidth", t) > 0 for t in tiles()),
             "8 preview images of the example spec")
    assert d.find_element(By.NAME, "bundle").get_attribute("value") == "faces-m"
    set_input(browser, "input[name=name]", "console-demo")
    set_input(browser, "input[name=count]", "64")
    set_input(browser, "input[name=shard_size]", "32")
    # A bad value: the preview answers 422 and the form marks the field it names.
    low = "input[name='labels.yaw_deg.uniform.low']"
    set_input(browser, low, "50")
    wait_for(lambda: "low > high" in d.find_element(By.ID, "preview-errors").text, "the preview's error")
    invalid = d.find_elements(By.CSS_SELECTOR, ".field.invalid")
    assert invalid and "low > high" in invalid[0].text
    set_input(browser, low, "-30")
    wait_for(lambda: not d.find_elements(By.CSS_SELECTOR, ".field.invalid") and len(tiles()) == 8
             and not d.find_element(By.ID, "preview-errors").text, "the preview after the fix")
    spec_json = d.find_element(By.ID, "spec-json").get_attribute("textContent")
    assert '"count": 64' in spec_json and '"low": -30' in spec_json
    browser.screenshot("new-dataset")
    previews = [r for r in browser.drain() if r["url"].startswith(console_server.url + "/preview")]
    assert 2 <= len(previews) <= 12, f"the preview is debounced while typing: {len(previews)} requests"

    browser.click(d.find_element(By.ID, "create"))
    job_id = wait_for(lambda: d.current_url.split("#/datasets/")[1] if "#/datasets/" in d.current_url else None,
                      "the dataset page")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "h1 .badge").get_attribute("textContent") == "succeeded", "the dataset to finish", 120)
    card_images = lambda: d.find_elements(By.CSS_SELECTOR, "#card figure img")  # noqa: E731
    wait_for(lambda: len(card_images()) == 2 and all(js(browser, "return arguments[0].naturalWidth", i) > 0 for i in card_images()),
             "the contact sheet and the label histograms")
    assert "Dataset console-demo" in d.find_element(By.ID, "card").text
    rows = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#shards tbody tr"), "the shard list")
    assert [r.find_element(By.CSS_SELECTOR, "td").text for r in rows] == ["console-demo-000000.tar", "console-demo-000001.tar"]
    assert "64 / 64 samples" in d.find_element(By.ID, "job-status").text
    browser.click(d.find_element(By.CSS_SELECTOR, "#shards button.download"))
    path = browser.downloads / "console-demo-000000.tar"
    wait_for(lambda: path.is_file() and path.stat().st_size > 0, "the downloaded shard")
    with console_server.client() as http:
        listed = http.get(f"/datasets/{job_id}/shards").json()["items"][0]
    time.sleep(0.3)  # Chrome renames the finished download into place; let it settle
    assert hashlib.sha256(path.read_bytes()).hexdigest() == listed["sha256"]
    assert len([m for m in tarfile.open(path).getnames() if m.endswith(".jpg")]) == 32
    js(browser, "document.querySelector('#manifest details').open = true")
    assert '"shards"' in d.find_element(By.ID, "manifest").text
    browser.screenshot("dataset")


def test_jobs_list_follows_new_jobs_live(browser: Browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By

    d = browser.driver
    open_signed_in(browser, console_server, "jobs")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "[data-kind=datasets] table, [data-kind=datasets] .empty"), "the lists")
    photos = io.BytesIO()
    with tarfile.open(fileobj=photos, mode="w") as tar:
        for i, png in enumerate([photo_png()] * 3):
            info = tarfile.TarInfo(f"photo-{i}.png")
            info.size = len(png)
            tar.addfile(info, io.BytesIO(png))
    with console_server.client() as http:  # created after the page loaded: only polling can show them
        labeling = http.post("/labeling-jobs", params={"bundle": "faces-m", "name": "astronaut"},
                             files={"file": ("photos.tar", photos.getvalue(), "application/x-tar")}).json()
        dataset = http.post("/datasets", json={"name": "digits-live", "bundle": "digits", "count": 200, "shard_size": 50,
                                               "image": {"format": "png"}}).json()
        for kind, job in (("labeling-jobs", labeling), ("datasets", dataset)):
            row = f"tr[data-job-id='{job['id']}']"
            wait_for(lambda row=row: d.find_elements(By.CSS_SELECTOR, row), f"the new {kind} row")
        for kind, job in (("labeling-jobs", labeling), ("datasets", dataset)):
            assert wait_job(http, kind, job["id"], console_server)["status"] == "succeeded"
    for job, total in ((labeling, 3), (dataset, 200)):
        row = f"tr[data-job-id='{job['id']}']"
        wait_for(lambda row=row: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-status") == "succeeded",
                 "the row to turn succeeded without a reload")
        assert f"{total} / {total} samples" in d.find_element(By.CSS_SELECTOR, row).text
    browser.screenshot("jobs")


def test_drop_a_photo_to_predict_and_see_the_simulators_render(browser: Browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By

    d = browser.driver
    open_signed_in(browser, console_server, "predict")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "select[name=bundle]").get_attribute("value") == "faces-m", "the bundle list")
    png = photo_png()
    js(browser, """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "astronaut.png", { type: "image/png" }));
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"])
          zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
    """, base64.b64encode(png).decode())
    render = wait_for(lambda: d.find_element(By.ID, "render"), "the simulator's render")
    wait_for(lambda: js(browser, "return arguments[0].naturalWidth", render) == 32, "the render to load")
    yaw = d.find_element(By.CSS_SELECTOR, ".angle[data-field=yaw_deg] .angle-value").text
    pitch = d.find_element(By.CSS_SELECTOR, ".angle[data-field=pitch_deg] .angle-value").text
    with console_server.client() as http:
        truth = http.post("/predict", params={"render": "true"}, files={"files": ("a.png", png, "image/png")}).json()
    p = truth["predictions"][0]
    assert (yaw, pitch) == (f"{p['yaw_deg']:.1f}°", f"{p['pitch_deg']:.1f}°")
    src = render.get_attribute("src")
    assert src == f"data:image/png;base64,{p['render_png_base64']}"
    bars = d.find_elements(By.CSS_SELECTOR, ".bar-row")
    assert [b.get_attribute("data-label") for b in bars][:3] == ["shape[0]", "shape[1]", "shape[2]"] and len(bars) == 20
    first = bars[0].find_element(By.CSS_SELECTOR, ".bar-value").text
    assert first.replace("−", "-").startswith(f"{p['shape'][0]:+.2f}")
    assert js(browser, "return document.getElementById('photo').naturalWidth") == 160
    uploads = [r for r in browser.drain() if r["method"] == "POST" and "/predict" in r["url"]]
    assert len(uploads) == 1 and "render=true" in uploads[0]["url"]
    browser.screenshot("predict")


def test_sliders_redraw_the_generator_output_debounced(browser: Browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser.driver
    open_signed_in(browser, console_server, "explore")
    outputs = wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".outputs[data-rendered]"), "the first render")
    generated = d.find_element(By.ID, "generated")
    wait_for(lambda: js(browser, "return arguments[0].naturalWidth", generated) == 32, "the generator image")
    before = generated.get_attribute("src")
    names = [s.get_attribute("data-key") for s in d.find_elements(By.CSS_SELECTOR, ".slider")]
    assert names[:2] == ["yaw_deg", "pitch_deg"] and names[2:8] == [f"shape[{i}]" for i in range(6)]
    browser.drain()
    yaw = d.find_element(By.CSS_SELECTOR, "input[name=yaw_deg]")
    yaw.send_keys(*[Keys.ARROW_RIGHT] * 20)  # 20 steps of 1°, as fast as a user holding the key
    d.find_element(By.CSS_SELECTOR, "input[name='shape[0]']").send_keys(*[Keys.ARROW_LEFT] * 30)  # −1.5 σ
    wait_for(lambda: json.loads(outputs.get_attribute("data-rendered")).get("shape[0]") == pytest.approx(-1.5)
             and json.loads(outputs.get_attribute("data-rendered"))["yaw_deg"] == pytest.approx(20.0), "the final render")
    after = generated.get_attribute("src")
    assert after != before
    renders = [r for r in browser.drain() if r["method"] == "POST" and r["url"].endswith("/render")]
    assert 1 <= len(renders) < 50 / 2, f"{len(renders)} /render calls for 50 slider steps: not debounced"
    with console_server.client() as http:
        truth = http.post("/render", json={"bundle": "faces-m", "seed": 0,
                                           "labels": json.loads(outputs.get_attribute("data-rendered"))}).json()
    assert after == truth["image"], "the page shows the generator's output for the slider values"
    assert "20.0°" == d.find_element(By.CSS_SELECTOR, ".slider[data-key=yaw_deg] output").text
    browser.screenshot("explore")


def test_remote_requests_are_blocked_and_would_be_reported(browser: Browser, console_server: Server) -> None:
    """The guard itself: a page that reaches for the network fails to, and the request log shows it."""
    open_signed_in(browser, console_server, "jobs")
    outcome = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("https://cdn.example.com/lib.js").then(() => done("loaded"), (e) => done("blocked: " + e.message));
    """)
    assert outcome.startswith("blocked")
    sent = browser.drain()  # drained here so the autouse check sees only what came after
    assert "https://cdn.example.com/lib.js" in [r["url"] for r in sent]
    pixels = np.asarray(Image.open(io.BytesIO(browser.driver.get_screenshot_as_png())))
    assert pixels.std() > 0, "the page rendered"
    with httpx.Client() as plain:
        assert plain.get(console_server.url + "/").status_code == 200
