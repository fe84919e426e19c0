"""The console's logins in a real browser (issue 11): headless Chromium (Playwright)
against `gateway demo`, its Pro Santé Connect simulator, and accounts made with
`gateway users create` as an admin would.

Pro Santé Connect: a pharmacist whose activity names the demo pharmacy gets in, one
whose activity does not is refused, a tampered ID token is refused. Accounts: the first
login (new password, TOTP enrolment from the page, recovery codes), password and code,
a wrong code, a recovery code that works once, a locked account. And the login form
posted from another origin without its token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest
from browser import CHROMIUM, Demo, chromium, french_page, running_demo, shot
from procs import clean_env, gateway

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package): no browser to drive",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
Browser, Page, expect = sync_api.Browser, sync_api.Page, sync_api.expect

WAIT_MS = 10_000
HERE_RPPS, ELSEWHERE_RPPS = "10001234565", "10009876540"  # the PSC simulator's people
DEMO_CONFIG = 'environment = "development"\ndatabase_url = "sqlite:///var/gateway.db"\n' \
              'data_dir = "var"\n'


@dataclass
class Running:
    demo: Demo
    cwd: Path

    @property
    def psc(self) -> str:
        return self.demo.simulators["opera"].rsplit(":", 1)[0] + ":" + str(
            int(self.demo.url.rsplit(":", 1)[1]) + 3)

    def users(self, *args: str) -> list[str]:
        """`gateway users ARGS` on the demo's database, as an admin at the shell would."""
        done = gateway("users", *args, "--config", str(self.cwd / "demo.toml"),
                       cwd=self.cwd, env=clean_env())
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()

    def new_account(self, email: str) -> tuple[str, str]:
        """A pharmacist of the demo pharmacy: (user id, one-time password)."""
        lines = self.users("create", "--role", "pharmacist", "--finess", "330001231",
                           "--name", "Alex Testeur", "--email", email)
        return lines[0].removeprefix("user_id: "), lines[-1]

    def psc_mode(self, mode: str) -> None:
        httpx.post(f"{self.psc}/_faults", json={"mode": mode}, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running_browser:
        yield running_browser


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    cwd = tmp_path_factory.mktemp("demo")
    (cwd / "demo.toml").write_text(DEMO_CONFIG)
    with running_demo(cwd) as demo:
        yield Running(demo, cwd)


@pytest.fixture
def page(browser: Browser, running: Running) -> Iterator[Page]:
    running.psc_mode("ok")
    with french_page(browser, WAIT_MS) as fresh:
        yield fresh



def through_psc(page: Page, running: Running, rpps: str) -> None:
    page.goto(f"{running.demo.url}/console/login")
    page.click("#psc-login")
    page.wait_for_url(re.compile(re.escape(running.psc) + "/auth"))
    page.click(f"#psc-{rpps}")


def password_step(page: Page, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/console/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login button[type=submit]")


def code_step(page: Page, code: str) -> None:
    page.fill("#second-factor #code", code)
    page.click("#second-factor button[type=submit]")


def test_a_pharmacist_of_the_pharmacy_logs_in_with_pro_sante_connect(
        page: Page, running: Running) -> None:
    through_psc(page, running, HERE_RPPS)
    page.wait_for_url(f"{running.demo.url}/console/")
    expect(page.locator("#operators")).to_be_visible()
    shot(page, "dashboard-psc")


def test_a_professional_of_another_pharmacy_is_refused(page: Page, running: Running) -> None:
    through_psc(page, running, ELSEWHERE_RPPS)
    expect(page.locator("p.error")).to_contain_text("aucune pharmacie")
    page.goto(f"{running.demo.url}/console/")
    assert page.url == f"{running.demo.url}/console/login"


def test_a_tampered_id_token_is_refused(page: Page, running: Running) -> None:
    running.psc_mode("tampered_id_token")
    through_psc(page, running, HERE_RPPS)
    expect(page.locator("p.error")).to_contain_text("n'a pas pu être vérifiée")
    page.goto(f"{running.demo.url}/console/")
    assert page.url == f"{running.demo.url}/console/login"


def test_first_login_enrols_totp_then_password_code_and_a_recovery_code_once(
        page: Page, running: Running) -> None:
    url = running.demo.url
    _, one_time = running.new_account("alex@test.invalid")
    password_step(page, url, "alex@test.invalid", one_time)
    page.wait_for_url(f"{url}/console/login/password")
    page.fill("#password", "une phrase de passe solide")
    page.fill("#confirmation", "une phrase de passe solide")
    page.click("#new-password button[type=submit]")
    page.wait_for_url(f"{url}/console/login/enrol")
    expect(page.locator("#totp-qr svg")).to_be_visible()
    shot(page, "enrol")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    totp = pyotp.TOTP(secret)
    page.fill("#enrol #code", "000000")
    page.click("#enrol button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("Code incorrect")
    page.fill("#enrol #code", totp.now())
    page.click("#enrol button[type=submit]")
    shown = page.locator("#recovery-codes code")
    expect(shown).to_have_count(10)  # waits for the next page (all_inner_texts does not)
    codes = shown.all_inner_texts()
    page.click("#continue")
    page.wait_for_url(f"{url}/console/")
    page.click("header form.logout button[type=submit]")
    page.wait_for_url(f"{url}/console/login")

    # password and a wrong code, then a recovery code: once
    password_step(page, url, "alex@test.invalid", "une phrase de passe solide")
    page.wait_for_url(f"{url}/console/login/code")
    code_step(page, "999999" if totp.now() != "999999" else "999998")
    expect(page.locator("p.error")).to_contain_text("Code incorrect")
    code_step(page, codes[0])
    page.wait_for_url(f"{url}/console/")
    page.click("header form.logout button[type=submit]")
    password_step(page, url, "alex@test.invalid", "une phrase de passe solide")
    code_step(page, codes[0])
    expect(page.locator("p.error")).to_contain_text("Code incorrect")
    code_step(page, codes[1])
    page.wait_for_url(f"{url}/console/")


def test_a_locked_account_is_refused_until_unlocked(page: Page, running: Running) -> None:
    url = running.demo.url
    user_id, one_time = running.new_account("locked@test.invalid")
    for _ in range(5):
        password_step(page, url, "locked@test.invalid", "not the password")
    expect(page.locator("p.error")).to_contain_text("verrouillé")
    password_step(page, url, "locked@test.invalid", one_time)
    expect(page.locator("p.error")).to_contain_text("verrouillé")
    running.users("unlock", user_id)
    password_step(page, url, "locked@test.invalid", one_time)
    page.wait_for_url(f"{url}/console/login/password")


def test_the_login_form_posted_from_another_origin_is_refused(page: Page,
                                                              running: Running) -> None:
    url = running.demo.url
    account = running.demo.accounts["pharmacist"]
    page.goto(f"{url}/console/login")  # the victim has the login page's cookie
    page.goto(f"{running.psc}/.well-known/openid-configuration")  # another origin
    page.evaluate("""([action, email, password]) => {
        const form = document.createElement("form");
        form.method = "post"; form.action = action;
        for (const [name, value] of [["email", email], ["password", password],
                                     ["login_token", "forged"]]) {
            const input = document.createElement("input");
            input.name = name; input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();
    }""", [f"{url}/console/login", account.email, account.password])
    page.wait_for_url(f"{url}/console/login")
    expect(page.locator("h1")).to_have_text("Formulaire expiré")
    page.goto(f"{url}/console/")
    assert page.url == f"{url}/console/login"
