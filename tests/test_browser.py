"""The admin in a real Chromium, served by gunicorn through app.server.

Screenshots of the dashboard, tracking and quarantine pages go to /tmp
(portcullis-*.png) for a person to look at.
"""

from __future__ import annotations

import os

import pytest

from tests.support.system import need
from tests.test_web import PASSWORD, seed
from tests.test_web_server import server  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = "/tmp"


@pytest.fixture
def page():
    need(os.path.exists(CHROMIUM), "Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 820})
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        yield tab
        context.close()
        browser.close()


def test_log_in_search_and_release(server, page):
    base, spool = server.base, server.spool
    seed(spool, sender="carol@example.net", subject="Budget for 2026",
         rcpts=("bob@example.com", "eve@example.com"))
    seed(spool, sender="dave@example.org", status="deferred",
         reply="451 4.7.1 greylisted, try again later")
    seed(spool, sender="promo@example.biz", subject="Cheap watches \u202egnp.exe",
         verdict="spam", quarantine="spam", reason="Bayes score 9.3")
    held = seed(spool, sender="frank@example.net", subject="Invoice 4411",
                verdict="spam", quarantine="spam", reason="Bayes score 6.4")
    seed(spool, sender="x@example.org", subject="Scanned document",
         verdict="virus", quarantine="virus", reason="Eicar-Test-Signature")

    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("#username", "admin")
    page.fill("#password", "wrong password here")
    page.click("button[type=submit]")
    assert page.locator(".flash.error").inner_text().startswith("Wrong user name")
    page.screenshot(path=f"{SHOTS}/portcullis-login.png")

    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#count-received")
    assert page.locator("#count-received .number").inner_text() == "5"
    assert page.locator("#count-quarantined .number").inner_text() == "3"
    page.screenshot(path=f"{SHOTS}/portcullis-dashboard.png", full_page=True)

    page.click("text=Tracking")
    page.fill("input[name=sender]", "carol")
    page.click("text=Search")
    rows = page.locator("#messages tbody tr")
    assert rows.count() == 1
    assert "Budget for 2026" in rows.first.inner_text()
    page.fill("input[name=sender]", "")
    page.click("text=Search")
    assert page.locator("#messages tbody tr").count() == 5
    page.screenshot(path=f"{SHOTS}/portcullis-tracking.png", full_page=True)

    page.click("text=Quarantine")
    page.click(".tabs >> text=Spam")
    assert page.locator("#quarantine tbody tr").count() == 2
    page.screenshot(path=f"{SHOTS}/portcullis-quarantine.png", full_page=True)

    page.click("text=Invoice 4411")
    page.wait_for_selector("pre.body")
    page.screenshot(path=f"{SHOTS}/portcullis-quarantine-item.png", full_page=True)
    page.click("button:has-text('Release')")
    assert f"Released {held}" in page.locator(".flash.info").inner_text()
    assert page.locator("#quarantine tbody tr").count() == 1
    assert spool.list("deliver") == [held]

    page.goto(f"{base}/tracking/{held}")
    assert "queued" in page.locator("#recipients").inner_text()
    page.screenshot(path=f"{SHOTS}/portcullis-message.png", full_page=True)

    page.click("text=Log out")
    assert "/login" in page.url
    page.goto(base + "/quarantine")
    assert "/login" in page.url
