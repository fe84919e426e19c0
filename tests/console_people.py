"""Console accounts for tests: people with a known password and an enrolled TOTP factor,
and the whole login (form token, password, second factor) over HTTP."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
from argon2 import PasswordHasher

from gateway.audit.trail import cli_actor
from gateway.cli.users import accounts_of
from gateway.identity import second_factor, users
from gateway.settings import Settings
from gateway.storage.db import Database

# argon2id with small parameters: the gateway verifies a hash with the parameters written
# in it, so these people log in fast; the gateway's own hashes keep its RFC 9106 profile
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Person:
    user_id: str
    email: str
    password: str
    totp_secret: str
    used_steps: set[int] = field(default_factory=set)

    def code(self) -> str:
        """A code the gateway accepts now and has not seen (each is accepted once)."""
        current = int(time.time() // second_factor.STEP_S)
        for step in (current, current + 1):
            if step not in self.used_steps and all(step > used for used in self.used_steps):
                self.used_steps.add(step)
                return pyotp.TOTP(self.totp_secret).generate_otp(step)
        raise AssertionError("this person logged in more than twice in one 30 s step")


def make_person(settings: Settings, role: str = "pharmacist", *, finess: str | None = None,
                operators: list[str] | None = None, enrolled: bool = True,
                database: Database | None = None, **extra: Any) -> Person:
    """An account as if its owner had chosen a password and enrolled TOTP already; stored
    through `database` when given (a running app's), else through an engine of its own."""
    if role == "pharmacist" and finess is None:
        finess = "330001231"
    email = f"{role}-{secrets.token_hex(4)}@test.invalid"
    password, secret = "correct horse battery staple", second_factor.new_totp_secret()
    accounts = accounts_of(settings)

    def create(session):  # type: ignore[no-untyped-def]
        user, _ = accounts.create(session, cli_actor(), role=role, name="Test Person",
                                  email=email, finess=finess, operators=operators, **extra)
        user.password_hash, user.password_one_time = CHEAP_HASHER.hash(password), False
        if enrolled:
            user.totp_secret_enc = accounts.credentials.seal(secret.encode(),
                                                             context=f"totp:{user.id}")
            user.totp_enabled = True
        users.seal(user, accounts.credentials)
        session.add(user)
        return user.id

    if database is not None:
        return Person(database.write_now(create), email, password, secret)
    db = Database(settings.database_url)
    try:
        user_id = db.write_now(create)
    finally:
        db.engine.dispose()
    return Person(user_id, email, password, secret)


def form_value(pattern: re.Pattern[str], html: str) -> str:
    match = pattern.search(html)
    assert match, f"no {pattern.pattern} on the page"
    return match.group(1)


async def post_password(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    page = await http.get("/console/login")
    token = form_value(LOGIN_TOKEN, page.text)
    return await http.post("/console/login", data={"email": email, "password": password,
                                                   "login_token": token})


async def log_in(http: httpx.AsyncClient, person: Person) -> httpx.Response:
    """Password, then the TOTP code; returns the last answer (303 to the console)."""
    answer = await post_password(http, person.email, person.password)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/login/code", answer.headers
    page = await http.get("/console/login/code")
    csrf = form_value(CSRF, page.text)
    answer = await http.post("/console/login/code", data={"code": person.code(),
                                                          "csrf_token": csrf})
    assert answer.status_code == 303, answer.text
    return answer
