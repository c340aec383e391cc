"""The front door's page in a real browser: Debian's chromium, driven by selenium through
chromium-driver, against `dogbreed lambda-local` and a real model server on loopback.

A person's path: open the page, choose a real JPEG in its file input, read the
breed it renders. The browser is kept on loopback (a proxy address that refuses
anything else, no background networking). Outside CI the test skips when chromium,
chromium-driver or selenium is missing; under CI=true it runs (containers/test-deps.sh
installs them).
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from dogbreed.serve.predictor import Predictor
from support.lambda_local import start_lambda_local, stop_lambda_local
from support.servers import start_native, stop, wait_for_ping

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root, where chromium's sandbox refuses to start
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    # Loopback bypasses a proxy; anything else goes to a port where nothing listens.
    "--proxy-server=http://127.0.0.1:9",
)


def browser_parts() -> tuple[str, str]:
    """(chromium, chromedriver) paths; a skip outside CI when any part is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [
        name
        for name, found in (
            ("chromium", chromium),
            ("chromium-driver", driver),
            ("selenium", importlib.util.find_spec("selenium")),
        )
        if not found
    ]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(
            f"browser test needs {', '.join(missing)} (containers/test-deps.sh installs them)"
        )
    assert not missing, f"CI=true but missing: {missing}; containers/test-deps.sh installs them"
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(options=options, service=Service(driver_path, log_output=str(log)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def front_door(trained, tmp_path_factory):
    """The page's address: lambda-local -> InvokeEndpoint twin -> the trained model's server."""
    tmp = tmp_path_factory.mktemp("front-door")
    server, proc, log = start_native(trained[0] / "model", tmp)
    try:
        wait_for_ping(server, proc, log)
        page, local = start_lambda_local(server, tmp)
        try:
            yield page
        finally:
            stop_lambda_local(local)
    finally:
        stop(proc)


def test_choose_a_photo_and_see_the_breed(browser, front_door, trained, photos):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = photos["dalmatian"]  # a real JPEG photo
    expected = Predictor(trained[0] / "model").predict_images([photo])[0]
    browser.get(front_door)
    assert browser.title == "Which dog breed?"
    browser.find_element(By.ID, "file").send_keys(str(photo))

    def answered(driver) -> bool:
        status = driver.find_element(By.ID, "status").text
        return bool(driver.find_element(By.ID, "breed").text) or status.startswith("Error")

    WebDriverWait(browser, 60, poll_frequency=0.2).until(answered)
    assert browser.find_element(By.ID, "status").text == ""
    assert browser.find_element(By.ID, "breed").text == expected["label"]
    rows = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#top li")]
    assert len(rows) == 5 and rows[0].startswith(f"{expected['label']}: ")
    assert all(row.endswith("%") for row in rows)
    assert browser.find_element(By.ID, "photo").get_attribute("src").startswith("blob:")
    # The page's own script ran under its Content-Security-Policy, with nothing refused.
    refused = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert refused == []


def test_an_error_is_shown_as_text(browser, front_door, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_bytes(b"these are not the pixels you are looking for")
    browser.get(front_door)
    browser.find_element(By.ID, "file").send_keys(str(not_a_photo))
    status = WebDriverWait(browser, 60, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "status").text.startswith("Error") and d
    )
    text = status.find_element(By.ID, "status").text
    assert text.startswith("Error: ") and browser.find_element(By.ID, "breed").text == ""
