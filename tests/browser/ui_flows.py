#!/usr/bin/env python3
"""The web UI's flows in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium), against a real server that tests/integration/ui_browser.rs starts and fills.

Input (environment): UI_BASE (http://127.0.0.1:PORT), UI_IMAGE (alice's image, repo:tag),
UI_OTHER_IMAGE (an image alice may read whose SIF will fail, or empty), UI_DOWNLOADS (a directory
for the downloaded script), UI_SCREENSHOTS (where PNGs go; empty: none), UI_PASSWORDS
(user=password,...), UI_BROKEN_SCRIPT (a file with a script to lint), UI_FAILED_JOB (id of a
failed build job the admin retries).

Output: one JSON object on the last line of stdout with what each flow saw; the Rust test
asserts on it (and runs the downloaded script through `sbatch --test-only`). Any step that
does not happen as expected raises, and the exit status is non-zero.
"""

import json
import os
import pathlib
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["UI_BASE"].rstrip("/")
IMAGE = os.environ["UI_IMAGE"]
DOWNLOADS = pathlib.Path(os.environ["UI_DOWNLOADS"])
SHOTS = os.environ.get("UI_SCREENSHOTS", "")
PASSWORDS = dict(p.split("=", 1) for p in os.environ["UI_PASSWORDS"].split(","))
BROKEN = pathlib.Path(os.environ["UI_BROKEN_SCRIPT"]).read_text()
FAILED_JOB = os.environ.get("UI_FAILED_JOB", "")
SIF_DEADLINE = 240


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the suite runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(DOWNLOADS),
            "download.prompt_for_download": False,
        },
    )
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(DOWNLOADS)},
    )
    origin = BASE
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    driver.set_page_load_timeout(60)
    return driver


def wait(driver, seconds=30):
    return WebDriverWait(driver, seconds, poll_frequency=0.25)


def shot(driver, name):
    if not SHOTS:
        return
    path = pathlib.Path(SHOTS) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The whole page, not just the window: the layout's height as the window's.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 40, 2400)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)


def login(driver, user):
    driver.get(f"{BASE}/ui/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "secret").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver).until(EC.url_to_be(f"{BASE}/ui/"))
    who = driver.find_element(By.CSS_SELECTOR, ".who strong").text
    if who != user:
        raise AssertionError(f"logged in as {who!r}, not {user!r}")


def logout(driver):
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(driver).until(EC.url_to_be(f"{BASE}/ui/login"))


def alice_flows(driver, seen):
    login(driver, "alice")
    repo = IMAGE.rsplit(":", 1)[0]
    seen["alice_home_lists_image"] = repo in driver.find_element(By.ID, "main").text
    # Her image: the SIF state turns ready while the page is open (ui.js polls).
    driver.get(f"{BASE}/ui/i/{IMAGE}")
    seen["first_state"] = driver.find_element(By.ID, "sif-state").text
    try:
        wait(driver, SIF_DEADLINE).until(
            EC.text_to_be_present_in_element((By.ID, "sif-state"), "ready")
        )
    except TimeoutException:
        raise AssertionError(
            "the SIF never showed ready: " + driver.find_element(By.ID, "sif").text
        )
    seen["ready_text"] = driver.find_element(By.ID, "sif").text
    seen["sif_digest"] = driver.find_element(By.ID, "sif-digest").text
    shot(driver, "image")
    # Copy the run line: the clipboard holds what the field shows.
    driver.find_element(By.CSS_SELECTOR, "button[data-copy=copy-run]").click()
    wait(driver).until(
        lambda d: d.find_element(By.ID, "copy-run").get_attribute("data-copied") == "true"
    )
    seen["run_field"] = driver.find_element(By.ID, "copy-run").get_attribute("value")
    seen["clipboard"] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, (e) => done('ERROR ' + e));"
    )
    seen["pull_line"] = driver.find_element(By.ID, "copy-apptainer").get_attribute("value")
    seen["pyxis_line"] = driver.find_element(By.ID, "copy-pyxis").get_attribute("value")

    generator(driver, seen, "alice")
    lint(driver, seen)
    logout(driver)


def generator(driver, seen, user):
    driver.get(f"{BASE}/ui/script")
    images = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "image")).options]
    seen[f"{user}_generator_images"] = images
    if user != "alice":
        return
    Select(driver.find_element(By.ID, "image")).select_by_value(IMAGE)
    Select(driver.find_element(By.ID, "template")).select_by_value("gpu")
    gpus = driver.find_element(By.ID, "gpus")
    gpus.clear()
    gpus.send_keys("1")
    driver.find_element(By.ID, "fast_storage").click()
    for field, value in (
        ("fast_inputs", "data"),
        ("fast_results", "results"),
        ("job_name", "ui-train"),
        ("command", "python3 train.py --epochs 3"),
    ):
        el = driver.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "button[value=generate]").click()
    script = wait(driver).until(EC.presence_of_element_located((By.ID, "script")))
    seen["generated"] = script.get_attribute("value")
    seen["script_readonly"] = script.get_attribute("readonly") is not None
    shot(driver, "generator")
    before = set(DOWNLOADS.iterdir())
    driver.find_element(By.CSS_SELECTOR, "button[value=download]").click()
    deadline = time.time() + 30
    while time.time() < deadline:
        done = [
            p for p in DOWNLOADS.iterdir()
            if p not in before and not p.name.endswith(".crdownload")
        ]
        if done:
            seen["download"] = str(done[0])
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the script was not downloaded")


def lint(driver, seen):
    driver.get(f"{BASE}/ui/lint")
    box = driver.find_element(By.ID, "lint-script")
    box.clear()
    # Pasted, as a user would (send_keys would type it through the keyboard, slowly).
    driver.execute_script("arguments[0].value = arguments[1];", box, BROKEN)
    driver.find_element(By.CSS_SELECTOR, "form#lint button[type=submit]").click()
    wait(driver).until(EC.presence_of_element_located((By.ID, "findings")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr")
    seen["lint_findings"] = [
        {"line": r.get_attribute("data-line"), "code": r.get_attribute("data-code")} for r in rows
    ]
    flagged = driver.find_elements(By.CSS_SELECTOR, "ol.script li.flagged, ol.script li.flagged-warning")
    seen["lint_flagged_lines"] = sorted(int(li.get_attribute("data-line")) for li in flagged)
    shot(driver, "lint")


def bob_flows(driver, seen):
    login(driver, "bob")
    seen["bob_home"] = driver.find_element(By.ID, "main").text
    driver.get(f"{BASE}/ui/i/{IMAGE}")
    seen["bob_image_page"] = driver.find_element(By.TAG_NAME, "h1").text
    driver.get(f"{BASE}/ui/i/{IMAGE.rsplit(':', 1)[0]}-does-not-exist:1")
    seen["bob_missing_page"] = driver.find_element(By.TAG_NAME, "h1").text
    generator(driver, seen, "bob")
    logout(driver)


def admin_flows(driver, seen):
    login(driver, "boss")
    driver.get(f"{BASE}/ui/admin/builds?state=failed")
    row = driver.find_element(By.ID, f"job-{FAILED_JOB}")
    seen["admin_failed_row"] = row.text
    shot(driver, "builds")
    row.find_element(By.CSS_SELECTOR, "button").click()
    notice = wait(driver).until(EC.presence_of_element_located((By.ID, "notice")))
    seen["admin_notice"] = notice.text
    driver.get(f"{BASE}/ui/admin/")
    seen["admin_overview"] = driver.find_element(By.ID, "counters").text
    logout(driver)


def main():
    seen = {}
    driver = browser()
    try:
        for flow in (alice_flows, bob_flows, admin_flows):
            started = time.time()
            flow(driver, seen)
            seen[f"{flow.__name__}_secs"] = round(time.time() - started, 1)
    except Exception:
        if SHOTS:
            shot(driver, "failure")
        print(json.dumps(seen), file=sys.stderr)
        print("page at failure:", driver.current_url, file=sys.stderr)
        print(driver.page_source[:4000], file=sys.stderr)
        raise
    finally:
        driver.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
