"""The dashboard in a real browser: headless Chromium through Selenium.

Drives the overview (and its live refresh, which needs the page's script to
run under the Content-Security-Policy), a job's page and a retry, then a bulk
retry through its confirmation page. Saves a screenshot of the overview; set
``SPOOLHOUSE_DASHBOARD_SCREENSHOT=docs/img/dashboard-overview.png`` to write
the documentation's copy.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed here with
apt-get when missing and running as root) and ``selenium`` (the dev extra).
In CI a missing browser fails the test; elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_demo import CANARY, Demo, demo

from spoolhouse import JobState
from spoolhouse.dashboard import make_server

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCREENSHOT_ENV = "SPOOLHOUSE_DASHBOARD_SCREENSHOT"


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; in CI a missing browser is a failure")
    pytest.skip(reason)


def find_browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def install_browser() -> str:
    """apt-get install chromium chromium-driver; returns what went wrong, or ''."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(command)}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}"
    return ""


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if found is None:
        problem = install_browser()
        found = find_browser()
        if found is None:
            unavailable("no headless Chromium: apt-get install chromium chromium-driver"
                        + (f" ({problem})" if problem else ""))
    assert found is not None
    return found


@pytest.fixture(scope="module")
def webdriver_module() -> Any:
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium is not installed: pip install selenium (it is in the dev extra)")
    return webdriver


@pytest.fixture
def driver(browser_paths: tuple[str, str], webdriver_module: Any, tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths
    options = webdriver_module.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1000", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver_module.Chrome(options=options, service=service)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def served() -> Iterator[tuple[Demo, str]]:
    """The demo's dashboard on 127.0.0.1, on a free port, in a thread; stopped afterwards."""
    data = demo()
    server = make_server(data.spooler, host="127.0.0.1", port=0, insecure_local=True, refresh=1)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-under-test", daemon=True)
    thread.start()
    try:
        yield data, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_overview_job_page_and_retries_in_chromium(driver: Any, served: tuple[Demo, str],
                                                   tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    data, base = served
    wait = WebDriverWait(driver, 20)
    backend = data.spooler.backend

    # -- the overview, with its chart, and a screenshot of it
    driver.get(base + "/")
    wait.until(ec.presence_of_element_located((By.ID, "counts")))
    assert driver.title == "Overview · Spoolhouse"
    bars = driver.find_elements(By.CSS_SELECTOR, "figure.chart rect.succeeded")
    assert len(bars) >= 50  # one per minute of the demo hour
    assert driver.find_element(By.CSS_SELECTOR, "figure.chart rect.failed").is_displayed()
    assert "web-1:4211" in driver.find_element(By.TAG_NAME, "main").text
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1440, "height": min(int(height), 2400), "deviceScaleFactor": 1, "mobile": False})
    shot = tmp_path / "dashboard-overview.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # -- live refresh: a job spooled now shows up without a reload
    marker = driver.find_element(By.ID, "counts")
    live_task = data.spooler.registry.get("mail.send_welcome")
    live_task.options(queue="live-check").spool(1)
    wait.until(lambda d: "live-check" in d.find_element(By.ID, "counts").text)
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
    del marker

    # -- a failed job's page, then retry it
    driver.find_element(By.LINK_TEXT, "Failed").click()
    wait.until(ec.title_is("Jobs · Spoolhouse"))
    first = driver.find_element(By.CSS_SELECTOR, "table.jobs tbody a.mono")
    job_id = first.get_attribute("title")
    first.click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-status"), "failed"))
    page = driver.page_source
    assert job_id in page
    assert CANARY not in page
    assert driver.find_element(By.ID, "job-traceback").is_displayed()
    driver.find_element(By.ID, "retry-button").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.notice"), "Requeued"))
    assert driver.find_element(By.ID, "job-status").text == "pending"
    assert backend.get(job_id).state is JobState.PENDING

    # -- bulk retry of the rest of the failed jobs, through the confirmation page
    failed_before = {j.id for j in backend.list_jobs(state="failed", limit=1000)}
    driver.get(base + "/jobs?state=failed")
    driver.find_element(By.CSS_SELECTOR, "input[data-select-all]").click()
    boxes = driver.find_elements(By.CSS_SELECTOR, "input[name=job_id]")
    assert boxes and all(b.is_selected() for b in boxes)
    driver.find_element(By.CSS_SELECTOR, "button[value=retry]").click()
    wait.until(ec.presence_of_element_located((By.ID, "confirm-button")))
    assert f"Requeue {len(boxes)} selected job(s)?" in driver.find_element(By.TAG_NAME, "main").text
    driver.find_element(By.ID, "confirm-button").click()
    wait.until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "p.notice"), f"Requeued {len(boxes)} of {len(boxes)}"))
    still_failed = {j.id for j in backend.list_jobs(state="failed", limit=1000)}
    assert len(failed_before - still_failed) == len(boxes)

    # -- no script error and no Content-Security-Policy violation on the way
    problems = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert problems == []
