"""The console in a real browser: headless Chromium (Playwright) against `gateway demo`.

Screenshots of the main pages are kept under artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, Demo, chromium, french_page, running_demo, shot

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package): no browser to drive",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
Browser, Page, expect = sync_api.Browser, sync_api.Page, sync_api.expect

WAIT_MS = 10_000
NIR = "185077511512396"
NAMES = ("Martin", "Claire")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running_browser:
        yield running_browser


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    with running_demo(tmp_path) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with french_page(browser, WAIT_MS) as fresh:
        yield fresh



def log_in(page: Page, demo: Demo, who: str, home: str, *, code_shot: str = "") -> None:
    """`who`'s password, then the code the demo (only the demo) shows on the code page."""
    account = demo.accounts[who]
    page.goto(f"{demo.url}/console/login")
    page.fill("#email", account.email)
    page.fill("#password", account.password)
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{demo.url}/console/login/code")
    code = page.locator(f"#demo-codes code.demo-code[data-email='{account.email}']")
    expect(code).to_have_text(re.compile(r"^\d{6}$"))
    if code_shot:
        shot(page, code_shot)
    page.fill("#second-factor #code", code.inner_text().strip())
    page.click("#second-factor button[type=submit]")
    page.wait_for_url(f"{demo.url}{home}")


def log_out(page: Page, demo: Demo) -> None:
    page.click("header form.logout button[type=submit]")
    page.wait_for_url(f"{demo.url}/console/login")
    page.goto(f"{demo.url}/console/")
    assert page.url == f"{demo.url}/console/login"
    expect(page.locator("#login #email")).to_be_visible()


def assert_no_personal_data(page: Page) -> None:
    html = page.content()
    for secret in (NIR, *NAMES):
        assert secret not in html, f"{secret!r} shown on {page.url}"


def test_pharmacist_sees_an_outage_queue_and_prints_the_receipt(page: Page, demo: Demo) -> None:
    page.goto(f"{demo.url}/console/login")
    expect(page.locator("#login label[for=email]")).to_have_text("Adresse e-mail")
    shot(page, "login")
    log_in(page, demo, "pharmacist", "/console/", code_shot="login-code")
    opera = page.locator("#operators li.operator[data-operator=opera]")
    expect(opera).to_have_attribute("data-state", "closed")
    expect(opera.locator(".operator-state")).to_have_text("disponible")

    # the demo panel takes opera down; a claim then arrives through the API, not the page
    page.get_by_role("button", name="Mettre opera en panne").click()
    page.wait_for_url(re.compile(r"/console/\?notice=fault_down"))
    page.evaluate("window.notReloaded = true")
    claim = demo.submit(f"BR{time.time_ns() % 10**10}")
    assert claim["status"] == "queued", claim
    receipt = claim["coverage"]["receipt"]

    # console.js refreshes the sections every 5 s: no reload, bounded waits
    row = page.locator(f"#queued tr[data-claim-id='{claim['id']}']")
    expect(row).to_be_visible(timeout=15_000)
    expect(opera).not_to_have_attribute("data-state", "closed", timeout=20_000)
    expect(opera.locator(".operator-state")).to_contain_text("indisponible depuis")
    expect(opera).to_contain_text("tiers payant assuré sous reçu provisoire")
    assert page.evaluate("window.notReloaded === true"), "the dashboard reloaded itself"
    link = row.locator("a.print")
    expect(link).to_have_attribute("href", f"/console/receipts/{receipt['id']}/print")
    expect(row.locator(".nir")).not_to_have_text(NIR)
    expect(page.locator("#outstanding")).to_contain_text("2,80")
    assert_no_personal_data(page)
    shot(page, "dashboard")

    link.click()
    page.wait_for_url(f"{demo.url}/console/receipts/{receipt['id']}/print")
    expect(page.locator("h1")).to_have_text("Reçu provisoire de tiers payant")
    expect(page.locator("aside.warning")).to_be_visible()
    expect(page.locator("#warning-title")).to_have_text("Attention aux messages frauduleux")
    expect(page.locator("figure.qr svg")).to_have_count(1)
    assert_no_personal_data(page)
    shot(page, "receipt")

    page.goto(f"{demo.url}/console/")
    log_out(page, demo)
    demo.fault("opera", "ok")


def test_a_pharmacy_cannot_open_the_operations_pages(page: Page, demo: Demo) -> None:
    log_in(page, demo, "pharmacist", "/console/")
    for path in ("/console/operations", "/console/operations/opera/failed"):
        answer = page.goto(f"{demo.url}{path}")
        assert answer is not None and answer.status == 403, path
        expect(page.locator("h1")).to_have_text("Accès refusé")
    expect(page.locator("table#operators")).to_have_count(0)


def test_operations_pause_replay_and_resume(page: Page, demo: Demo) -> None:
    log_in(page, demo, "operations", "/console/operations")
    opera = page.locator("table#operators tr[data-operator=opera]")
    expect(opera).to_have_attribute("data-paused", "false")
    expect(page.locator("table#operators tr[data-operator=santex]")).to_be_visible()

    page.fill("#reason-opera", "Maintenance annoncée par opera")
    page.click("#actions-opera form.pause button[type=submit]")
    page.wait_for_url(re.compile(r"/console/operations\?notice=paused"))
    expect(opera).to_have_attribute("data-paused", "true")
    expect(opera).to_contain_text("Maintenance annoncée par opera")

    # paused: a claim is queued at once, and stays queued while the replay is counted
    claim = demo.submit(f"OP{time.time_ns() % 10**10}")
    assert claim["status"] == "queued", claim
    page.goto(f"{demo.url}/console/operations")
    expect(opera.locator("td[data-label=\"En file d'attente\"]")).to_contain_text("1")
    assert_no_personal_data(page)
    shot(page, "operations")

    page.select_option("#replay-status-opera", "queued")
    page.click("#actions-opera form.replay-count button[type=submit]")
    page.wait_for_url(f"{demo.url}/console/operations/opera/replay/count")
    expect(page.locator("#replay-count")).to_have_attribute("data-count", "1")
    expect(page.locator("#replay-count")).to_contain_text("1 demande serait renvoyée")
    shot(page, "replay-count")
    page.click("form.replay-confirm button[type=submit]")
    page.wait_for_url(re.compile(r"/console/operations\?notice=replayed"))
    expect(page.locator("p.notice")).to_contain_text("1 demande(s) de opera renvoyée(s)")

    page.click("#actions-opera form.resume button[type=submit]")
    page.wait_for_url(re.compile(r"/console/operations\?notice=resumed"))
    expect(opera).to_have_attribute("data-paused", "false")
    expect(opera.locator("td[data-label=Suspension]")).to_have_text("non")
    # resumed and the simulator up: the queue drains (the board refreshes on demand)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page.goto(f"{demo.url}/console/operations")
        if opera.locator("td[data-label=\"En file d'attente\"]").inner_text().strip() == "0":
            break
        time.sleep(0.5)
    expect(opera.locator("td[data-label=\"En file d'attente\"]")).to_have_text("0")
    log_out(page, demo)


def test_a_form_without_its_csrf_token_is_refused(page: Page, demo: Demo) -> None:
    log_in(page, demo, "operations", "/console/operations")
    form = "#actions-opera form.pause"
    page.fill("#reason-opera", "sans jeton")
    page.evaluate("selector => document.querySelector(selector)"
                  ".querySelector('input[name=csrf_token]').remove()", form)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click(f"{form} button[type=submit]")
    assert posted.value.status == 403
    expect(page.locator("h1")).to_have_text("Formulaire expiré")

    # a forged token is refused too, with the session cookie sent (Playwright's request)
    forged = page.request.post(f"{demo.url}/console/operations/opera/pause",
                               form={"reason": "faux jeton", "csrf_token": "x" * 43},
                               max_redirects=0)
    assert forged.status == 403
    page.goto(f"{demo.url}/console/operations")
    expect(page.locator("table#operators tr[data-operator=opera]")).to_have_attribute(
        "data-paused", "false")
