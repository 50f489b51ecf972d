"""The ``/admin/`` page in a real headless Chromium against real gunicorn.

Chromium and its driver come from Debian (``chromium``, ``chromium-driver``);
when missing they are installed with apt-get, as the cluster's PostgreSQL is.
The screenshot of the drawn dashboard is saved under ``var/test-output/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gridlink.cli import main
from gridlink.project import VAR
from gridlink.settings import Settings
from infra import cluster
from infra.serving import ApiServer
from tests.support.api import random_username
from tests.support.servers import call, serving, sign_up_at, use_settings_environment

SCREENSHOT = VAR / "test-output" / "admin-page.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1280,1100",
)
WAIT_SECONDS = 20
REPLICA_COLOUR = (0x2E, 0x90, 0xFA)  # the first series' colour in admin.html


def chromium_and_driver() -> tuple[str, str]:
    """Return the paths of chromium and chromedriver, installing them with apt if need be."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.fail(
                "the admin page test needs Chromium: sudo apt-get install chromium chromium-driver"
            )
        cluster.apt_install(["chromium", "chromium-driver"])
        found = shutil.which("chromium"), shutil.which("chromedriver")
    browser, driver = found
    assert browser is not None and driver is not None, "apt installed no chromium"  # noqa: PT018
    return browser, driver


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ApiServer]:
    with serving(settings, workers=2) as (started,):
        yield started


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = chromium_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Every request the browser makes, as DevTools sees it (not just what the page lists).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def sign_up_over_http(server: ApiServer) -> tuple[str, str, str]:
    username, password = random_username("page"), "a page password"
    return username, password, sign_up_at(server.address, username, password)


def wait(driver: webdriver.Chrome, condition: str, what: str) -> None:
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.execute_script(condition), what)


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the browser asked for, from DevTools' network events."""
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_a_non_admin_token_is_told_it_is_not_an_administrator(server, browser):
    _, _, token = sign_up_over_http(server)
    browser.get(f"http://{server.address}/admin/")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(
        browser,
        "return document.getElementById('login-message').textContent",
        "the page says why it shows nothing",
    )
    message = browser.find_element(By.ID, "login-message").text
    assert "not an administrator" in message
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_an_admin_logs_in_and_sees_each_replicas_lag_drawn_without_leaving_the_host(
    server, browser, settings, monkeypatch
):
    username, password, _ = sign_up_over_http(server)
    use_settings_environment(monkeypatch, settings)
    assert main(["users", "promote", username]) == 0
    origin = f"http://{server.address}"
    for _ in range(3):  # profile reads, served from the cache, for the read-source split
        assert call(server.address, "GET", f"/api/users/{username}/")[0] == 200

    browser.get(f"{origin}/admin/")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#password-form button").click()
    replicas = len(settings.replica_urls)
    # Two polls at least, so every replica's line has a segment to draw.
    wait(
        browser,
        f"return Number(document.getElementById('lag-chart').dataset.points) >= {2 * replicas}",
        "the lag chart is drawn",
    )
    wait(
        browser,
        "return document.querySelectorAll('#split-legend [data-source]').length === 3",
        "the read-source split is shown",
    )
    cache_share = browser.find_element(By.CSS_SELECTOR, "#split-legend [data-source=cache]").text
    assert re.fullmatch(r"cache \d+ \(\d+%\)", cache_share)
    assert int(cache_share.split()[1]) >= 3

    rows = browser.find_elements(By.CSS_SELECTOR, "#replicas tr")
    assert [row.get_attribute("data-replica") for row in rows] == [
        f"replica{number}" for number in range(1, replicas + 1)
    ]
    for row in rows:
        _, _, reachable, rotation, lag, *_ = (
            cell.text for cell in row.find_elements(By.TAG_NAME, "td")
        )
        assert (reachable, rotation) == ("yes", "in rotation")
        assert re.fullmatch(r"\d+\.\d\d s", lag), lag
        assert float(lag.split()[0]) <= settings.max_replica_lag_seconds
    assert "reachable, WAL at" in browser.find_element(By.ID, "primary").text
    # The replica's line really is on the canvas, in its colour.
    drawn = browser.execute_script(
        """
        const canvas = document.getElementById('lag-chart');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (pixels[i] === arguments[0] && pixels[i + 1] === arguments[1]
              && pixels[i + 2] === arguments[2]) count++;
        }
        return count;
        """,
        *REPLICA_COLOUR,
    )
    assert drawn > 0

    # The token lives in sessionStorage only.
    assert browser.execute_script("return sessionStorage.getItem('gridlink-admin-token')")
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.execute_script("return document.cookie") == ""

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    print(f"admin page screenshot: {SCREENSHOT}")

    # Nothing was fetched from anywhere but this server.
    listed = browser.execute_script(
        "return [...performance.getEntriesByType('navigation'),"
        " ...performance.getEntriesByType('resource')].map((entry) => entry.name)"
    )
    assert listed, "the page made requests"
    requested = requested_urls(browser)
    assert any(url.startswith(f"{origin}/api/admin/replicas") for url in requested)
    assert any(url == f"{origin}/metrics" for url in requested)
    for url in [*listed, *requested]:
        # chrome:// is the browser's own start page, served from inside the browser.
        assert url.startswith((f"{origin}/", "data:", "chrome://")), url


def test_log_out_revokes_the_token_on_the_server(server, browser, settings, monkeypatch):
    username, password, _ = sign_up_over_http(server)
    use_settings_environment(monkeypatch, settings)
    assert main(["users", "promote", username]) == 0
    browser.get(f"http://{server.address}/admin/")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#password-form button").click()
    wait(
        browser,
        "return document.getElementById('replicas').querySelectorAll('tr').length > 0",
        "the dashboard is shown",
    )
    token = browser.execute_script("return sessionStorage.getItem('gridlink-admin-token')")
    assert call(server.address, "GET", "/api/users/me/", token=token)[0] == 200

    browser.find_element(By.ID, "logout").click()
    wait(
        browser,
        "return document.getElementById('login-message').textContent === 'Logged out.'",
        "the page says it logged out",
    )
    assert browser.execute_script("return sessionStorage.length") == 0
    # Not only forgotten by the page: whoever copied it holds a dead token.
    status, refused = call(server.address, "GET", "/api/users/me/", token=token)
    assert (status, refused["error"]["type"]) == (401, "unauthenticated")
