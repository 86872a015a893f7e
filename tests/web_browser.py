#!/usr/bin/env python3
"""Drives Debian's chromium through chromedriver (Selenium) as a person would: opens the
unsubscribe link of a really sent message, checks that the GET changed nothing, clicks the
button, sees the confirmation, checks the journal has it; then logs in to the dashboard and
watches a campaign's sent counter rise. Started by tests/web_browser.rs, which runs the farm and
the web node. Any failure exits non-zero; a missing browser, driver or selenium is a failure."""

import argparse
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="unsubscribe link from the sent message")
    p.add_argument("--base", required=True, help="web node base URL")
    p.add_argument("--secret", required=True, help="dashboard secret from farm init")
    p.add_argument("--journal", required=True, help="path of journal.log")
    p.add_argument("--recipient-id", required=True)
    p.add_argument("--watch-campaign", required=True)
    p.add_argument("--shots", required=True)
    args = p.parse_args()
    for program in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        check(os.path.exists(program), f"{program} is not installed (apt-get install chromium chromium-driver)")
    os.makedirs(args.shots, exist_ok=True)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,800", "--user-data-dir=" + tempfile.mkdtemp(prefix="mf-chromium-")):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, 20)
    try:
        journal_before = open(args.journal).read()

        # 1-2. Open the link: a page with one button; the GET changes nothing.
        driver.get(args.url)
        heading = driver.find_element(By.TAG_NAME, "h1").text
        check(heading.startswith("Unsubscribe from"), f"unsubscribe page heading: {heading!r}")
        driver.save_screenshot(os.path.join(args.shots, "01-unsubscribe-page.png"))
        time.sleep(0.3)
        check(open(args.journal).read() == journal_before, "the GET wrote to the journal")
        print("GET changed nothing", flush=True)

        # 3. Click the button and see the confirmation.
        driver.find_element(By.ID, "unsubscribe").click()
        done = wait.until(lambda d: d.find_elements(By.ID, "done"))
        check("You are unsubscribed" in done[0].text, f"confirmation: {done[0].text!r}")
        check(driver.find_elements(By.ID, "undo"), "the confirmation offers an undo")
        driver.save_screenshot(os.path.join(args.shots, "02-unsubscribed.png"))

        # 4. The journal has it (durable before the page was answered).
        lines = [l.split("\t") for l in open(args.journal).read().splitlines()]
        check(any(f[1] == "U" and f[3] == args.recipient_id for f in lines),
              f"journal has the unsubscribe of recipient {args.recipient_id}: {lines}")
        print("journal has the unsubscribe", flush=True)

        # 5. The dashboard: nothing without the secret, then live counters.
        driver.get(args.base + "/dashboard")
        check(driver.find_elements(By.ID, "secret"), "login form shown")
        check(args.watch_campaign not in driver.page_source, "campaign visible without login")
        driver.save_screenshot(os.path.join(args.shots, "03-dashboard-login.png"))
        driver.find_element(By.ID, "secret").send_keys(args.secret)
        driver.find_element(By.ID, "login").click()

        def sent(d):
            # Read in one script call: the table is rebuilt on every event.
            value = d.execute_script(
                "for (const tr of document.querySelectorAll('#campaigns tr')) {"
                "  const td = tr.querySelectorAll('td');"
                "  if (td.length > 3 && td[0].textContent === arguments[0]) return td[3].textContent;"
                "} return null;", args.watch_campaign)
            return None if value is None else int(value)

        wait.until(lambda d: d.find_elements(By.ID, "live") and d.find_element(By.ID, "live").text == "live")
        deadline = time.time() + 20
        while sent(driver) is None and time.time() < deadline:
            time.sleep(0.2)
        first = sent(driver)
        check(first is not None, "campaign row on the dashboard")
        while (sent(driver) or 0) <= first and time.time() < deadline + 10:
            time.sleep(0.25)
        later = sent(driver)
        check(later > first, f"sent counter rose: {first} -> {later}")
        print(f"dashboard sent counter rose: {first} -> {later}", flush=True)
        time.sleep(3)  # let the chart draw a few points
        driver.save_screenshot(os.path.join(args.shots, "04-dashboard.png"))
    finally:
        driver.quit()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
