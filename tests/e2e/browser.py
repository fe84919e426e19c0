"""Browser tests' helpers: Debian's headless Chromium and a `gateway demo` subprocess.

No conftest: the console tests import this module as they import `procs`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from procs import free_port_triple, output, spawn, wait_http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
KEY = r"(key_[0-9a-f]{16}\.\S+)"
PHARMACY_KEY = re.compile(r"pharmacy key:\s+" + KEY)
OPERATIONS_KEY = re.compile(r"operations key:\s+" + KEY)
# "  pharmacist:  pharmacien@demo.invalid   password: lHUX3FaC7GjHpp4hC5nK"
ACCOUNT = re.compile(r"^\s+(pharmacist|operations):\s+(\S+@\S+)\s+password:\s+(\S+)\s*$",
                     re.MULTILINE)
WHO = ("pharmacist", "operations")


@dataclass(frozen=True, slots=True)
class Account:
    """A console account printed in the demo's banner (its code is on the login page)."""

    email: str
    password: str


@dataclass(frozen=True, slots=True)
class Demo:
    """A running `gateway demo`: its URL, the two printed keys (the API, for `submit`), the
    two printed console accounts (pharmacist, operations), the simulators' URLs."""

    url: str
    pharmacy_key: str
    operations_key: str
    accounts: dict[str, Account]
    simulators: dict[str, str]

    def fault(self, operator: str, mode: str) -> None:
        """Break (`down`) or mend (`ok`) a simulated operator directly."""
        answer = httpx.post(f"{self.simulators[operator]}/_faults", json={"mode": mode},
                            timeout=5)
        answer.raise_for_status()

    def submit(self, invoice_number: str) -> dict[str, Any]:
        """A synthetic claim for the demo pharmacy (routed to opera), through the API."""
        from gateway.demo.samples import sample_claim  # imports the whole app: only when needed

        answer = httpx.post(f"{self.url}/v1/claims", json=sample_claim(invoice_number),
                            headers={"Authorization": f"Bearer {self.pharmacy_key}"},
                            timeout=15)
        assert answer.status_code in (201, 202), answer.text
        return answer.json()  # type: ignore[no-any-return]


def _accounts(banner: str) -> dict[str, Account]:
    return {who: Account(email, password) for who, email, password in ACCOUNT.findall(banner)}


@contextmanager
def running_demo(cwd: Path, timeout: float = 25) -> Iterator[Demo]:
    """`gateway demo --port P` in cwd until the block ends (its process group is killed)."""
    port = free_port_triple()
    with spawn("demo", "--port", str(port), cwd=cwd, name="demo") as proc:
        deadline = time.monotonic() + timeout
        banner = ""
        while not (PHARMACY_KEY.search(banner) and OPERATIONS_KEY.search(banner)
                   and set(_accounts(banner)) == set(WHO)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no keys or accounts in the demo's banner:\n{output(cwd, 'demo')}")
            time.sleep(0.1)
            banner = (cwd / "demo.out").read_text(errors="replace")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/console/login", proc, cwd, "demo", timeout=timeout)
        pharmacy, operations = PHARMACY_KEY.search(banner), OPERATIONS_KEY.search(banner)
        assert pharmacy is not None and operations is not None
        yield Demo(url, pharmacy.group(1), operations.group(1), _accounts(banner),
                   {"opera": f"http://127.0.0.1:{port + 1}",
                    "santex": f"http://127.0.0.1:{port + 2}"})


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (the caller checked both exist)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def french_page(browser: Any, wait_ms: int = 10_000) -> Iterator[Any]:
    """A fresh context (no cookies) and its page, in French, with bounded waits."""
    context = browser.new_context(viewport=VIEWPORT, locale="fr-FR")
    context.set_default_timeout(wait_ms)
    context.set_default_navigation_timeout(wait_ms)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot under artifacts/screenshots/ (the README's come from here)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
