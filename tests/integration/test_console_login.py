"""Console login for people (issue 11): password, one-time password, TOTP enrolment and
second factor, recovery codes, lockout counted before any check, login CSRF, idle
expiry that the page's refresh does not renew, logout everywhere, disabling."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
import pyotp
import pytest
from console_people import (
    CSRF,
    LOGIN_TOKEN,
    form_value,
    log_in,
    make_person,
    post_password,
)
from sqlmodel import select

from gateway.cli.users import accounts_of
from gateway.identity import login as login_module
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, ConsoleSession, User, utcnow

pytestmark = pytest.mark.anyio
SECRET_SHOWN = re.compile(r'<code id="totp-secret">([A-Z2-7 ]+)</code>')
RECOVERY = re.compile(r"<li><code>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})</code></li>")


def browser(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway.test")


def read(settings, work):
    database = Database(settings.database_url)
    try:
        return database.read_now(work)
    finally:
        database.engine.dispose()


def write(settings, work):
    database = Database(settings.database_url)
    try:
        return database.write_now(work)
    finally:
        database.engine.dispose()


def audit(settings) -> list[tuple[str, str | None, str]]:
    return read(settings, lambda s: [(e.action, e.object_id, e.outcome) for e in
                                     s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()])


async def submit_code(http: httpx.AsyncClient, code: str) -> httpx.Response:
    page = await http.get("/console/login/code")
    return await http.post("/console/login/code",
                           data={"code": code, "csrf_token": form_value(CSRF, page.text)})


async def test_password_and_code_open_the_console_and_are_audited(app, settings):
    person = make_person(settings)
    async with browser(app) as http:
        answer = await log_in(http, person)
        assert answer.headers["location"] == "/console/"
        page = await http.get("/console/")
        assert page.status_code == 200 and "Tableau de bord" in page.text
    actions = audit(settings)
    assert ("console.login_password", person.user_id, "ok") in actions
    assert ("console.second_factor", person.user_id, "ok") in actions


async def test_first_login_sets_a_password_enrols_totp_and_shows_recovery_codes_once(
        app, settings):
    accounts = accounts_of(settings)
    from gateway.audit.trail import cli_actor

    user, one_time = write(settings, lambda s: accounts.create(
        s, cli_actor(), role="operations", name="Nadia", email="nadia@test.invalid"))
    async with browser(app) as http:
        answer = await post_password(http, "nadia@test.invalid", one_time)
        assert answer.headers["location"] == "/console/login/password"
        assert (await http.get("/console/")).headers["location"] == "/console/login"
        page = await http.get("/console/login/password")
        csrf = form_value(CSRF, page.text)
        weak = await http.post("/console/login/password", data={
            "password": "short", "confirmation": "short", "csrf_token": csrf})
        assert weak.status_code == 422 and "12 caractères" in weak.text
        new = "a sturdy new passphrase"
        answer = await http.post("/console/login/password", data={
            "password": new, "confirmation": new, "csrf_token": csrf})
        assert answer.headers["location"] == "/console/login/enrol"

        page = await http.get("/console/login/enrol")
        assert "<svg" in page.text  # the QR code, drawn by the gateway
        secret = form_value(SECRET_SHOWN, page.text).replace(" ", "")
        csrf = form_value(CSRF, page.text)
        wrong = await http.post("/console/login/enrol", data={"code": "000000",
                                                              "csrf_token": csrf})
        assert wrong.status_code == 401
        done = await http.post("/console/login/enrol", data={
            "code": pyotp.TOTP(secret).now(), "csrf_token": csrf})
        assert done.status_code == 200
        codes = RECOVERY.findall(done.text)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert (await http.get("/console/operations")).status_code == 200

    stored = read(settings, lambda s: s.get(User, user.id))
    assert all(code not in stored.recovery_codes for code in codes)  # digests only
    assert one_time not in (stored.password_hash or "") and stored.password_hash.startswith(
        "$argon2id$")
    assert ("user.mfa_enrolled", user.id, "ok") in audit(settings)

    # the one-time password no longer works; the new one with a recovery code does, once
    async with browser(app) as http:
        refused = await post_password(http, "nadia@test.invalid", one_time)
        assert refused.status_code == 401
        answer = await post_password(http, "nadia@test.invalid", new)
        assert answer.headers["location"] == "/console/login/code"
        assert (await submit_code(http, codes[3].upper())).status_code == 303
    async with browser(app) as http:
        await post_password(http, "nadia@test.invalid", new)
        again = await submit_code(http, codes[3])
        assert again.status_code == 401 and "Code incorrect" in again.text
    assert ("console.recovery_code_used", user.id, "ok") in audit(settings)


async def test_a_wrong_or_replayed_code_is_refused(app, settings):
    person = make_person(settings)
    async with browser(app) as http:
        await post_password(http, person.email, person.password)
        assert (await submit_code(http, "123456")).status_code == 401
        code = person.code()
        assert (await submit_code(http, code)).status_code == 303
    async with browser(app) as http:
        await post_password(http, person.email, person.password)
        assert (await submit_code(http, code)).status_code == 401  # each code works once


async def test_an_api_key_does_not_open_the_console(app, client, pharmacy):
    secret = pharmacy["Authorization"].split()[1]
    async with browser(app) as http:
        answer = await post_password(http, secret, secret)
        assert answer.status_code == 401
        answer = await http.post("/console/login", data={"key": secret})
        assert answer.status_code == 403  # no form token: the old key form is dead
        assert "gw_console" not in http.cookies


async def test_the_account_locks_and_only_an_unlock_opens_it(app, settings):
    person = make_person(settings)
    limit = settings.console.lock_after_failures
    async with browser(app) as http:
        statuses = [(await post_password(http, person.email, "wrong")).status_code
                    for _ in range(limit)]
        assert statuses == [401] * (limit - 1) + [403]
        right = await post_password(http, person.email, person.password)
        assert right.status_code == 403 and "verrouillé" in right.text
    assert ("console.login", person.user_id, "locked") in audit(settings)
    from gateway.audit.trail import cli_actor

    write(settings, lambda s: accounts_of(settings).unlock(s, cli_actor(), person.user_id))
    async with browser(app) as http:
        await log_in(http, person)


async def test_wrong_codes_count_towards_the_lock(app, settings):
    person = make_person(settings)
    async with browser(app) as http:
        await post_password(http, person.email, person.password)
        for _ in range(settings.console.lock_after_failures):
            await submit_code(http, "000000")
        blocked = await submit_code(http, person.code())
        assert blocked.status_code == 403


async def test_twenty_parallel_guesses_get_at_most_the_allowed_checks(app, settings,
                                                                     monkeypatch):
    person = make_person(settings)
    checked: list[str] = []
    real = login_module.verify_password

    def counting(stored, password):
        checked.append(password)
        return real(stored, password)

    monkeypatch.setattr(login_module, "verify_password", counting)
    async with browser(app) as http:
        token_page = await http.get("/console/login")
        token = form_value(LOGIN_TOKEN, token_page.text)
        answers = await asyncio.gather(*(http.post("/console/login", data={
            "email": person.email, "password": f"guess-{i}", "login_token": token})
            for i in range(20)))
    limit = settings.console.lock_after_failures
    assert len(checked) <= limit
    assert sorted(a.status_code for a in answers).count(401) <= limit
    assert all(a.status_code in (401, 403) for a in answers)
    entries = [e for e in audit(settings) if e[1] == person.user_id and e[0] == "console.login"]
    assert len(entries) <= limit  # refusals of a locked account are not one entry each


async def test_unknown_accounts_are_throttled_per_address_and_aggregated(app, settings,
                                                                         monkeypatch):
    limit = settings.console.address_failures_per_window
    checked: list[str] = []
    real = login_module.verify_password
    monkeypatch.setattr(login_module, "verify_password",
                        lambda stored, pw: checked.append(pw) or real(stored, pw))
    async with browser(app) as http:
        token = form_value(LOGIN_TOKEN, (await http.get("/console/login")).text)
        answers = await asyncio.gather(*(http.post("/console/login", data={
            "email": f"nobody{i}@test.invalid", "password": "x", "login_token": token})
            for i in range(limit + 10)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(401) == limit and statuses.count(429) == 10
    assert len(checked) == limit
    throttled = next(a for a in answers if a.status_code == 429)
    assert int(throttled.headers["retry-after"]) > 0
    anonymous = [e for e in audit(settings) if e[0] in ("console.login",
                                                         "console.login_throttled")]
    assert sorted(anonymous) == [("console.login", None, "refused_unknown"),
                                 ("console.login_throttled", None, "refused")]


@pytest.mark.parametrize("change", ["no token", "no cookie", "other origin", "cross-site"])
async def test_a_login_form_posted_from_elsewhere_is_refused(app, settings, change):
    person = make_person(settings)
    async with browser(app) as http:
        token = form_value(LOGIN_TOKEN, (await http.get("/console/login")).text)
        data = {"email": person.email, "password": person.password, "login_token": token}
        headers = {}
        if change == "no token":
            data["login_token"] = ""
        elif change == "no cookie":
            http.cookies.clear()
        elif change == "other origin":
            headers["Origin"] = "https://attacker.example"
        else:
            headers["Sec-Fetch-Site"] = "cross-site"
        answer = await http.post("/console/login", data=data, headers=headers)
        assert answer.status_code == 403
        assert "gw_console" not in http.cookies
        same = await http.post("/console/login", headers={
            "Origin": "http://gateway.test", "Sec-Fetch-Site": "same-origin"},
            data={**data, "login_token": token} if change != "no cookie" else data)
        assert same.status_code == (303 if change != "no cookie" else 403)


async def test_the_dashboards_refresh_does_not_keep_the_session_alive(app, settings):
    person = make_person(settings)
    earlier = utcnow() - timedelta(minutes=20)

    def age_session(session):
        row = session.exec(select(ConsoleSession).where(
            ConsoleSession.user_id == person.user_id)).one()
        row.last_seen_at = earlier
        session.add(row)

    def last_seen(session):
        return session.exec(select(ConsoleSession.last_seen_at).where(
            ConsoleSession.user_id == person.user_id)).one()

    async with browser(app) as http:
        await log_in(http, person)
        write(settings, age_session)
        assert (await http.get("/console/fragments/dashboard")).status_code == 200
        assert read(settings, last_seen) == earlier
        assert (await http.get("/console/")).status_code == 200  # the person's own click
        assert read(settings, last_seen) > earlier
        write(settings, lambda s: age_session(s) or None)
        stale = utcnow() - timedelta(seconds=settings.console.idle_timeout_s + 5)

        def expire(session):
            row = session.exec(select(ConsoleSession).where(
                ConsoleSession.user_id == person.user_id)).one()
            row.last_seen_at = stale
            session.add(row)

        write(settings, expire)
        answer = await http.get("/console/fragments/dashboard")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


async def test_log_out_everywhere_ends_every_session_of_the_person(app, settings):
    person = make_person(settings)
    async with browser(app) as first, browser(app) as second:
        await log_in(first, person)
        await log_in(second, person)
        page = await first.get("/console/")
        answer = await first.post("/console/logout-everywhere",
                                  data={"csrf_token": form_value(CSRF, page.text)})
        assert answer.status_code == 303
        for http in (first, second):
            assert (await http.get("/console/")).headers["location"] == "/console/login"
    assert ("console.logout_everywhere", person.user_id, "ok") in audit(settings)


async def test_disabling_a_person_ends_their_sessions_at_once(app, settings):
    from gateway.audit.trail import cli_actor

    person = make_person(settings, "operations")
    async with browser(app) as http:
        await log_in(http, person)
        assert (await http.get("/console/operations")).status_code == 200
        ended = write(settings, lambda s: accounts_of(settings).disable(
            s, cli_actor(), person.user_id))
        assert ended == 1
        assert (await http.get("/console/operations")).headers["location"] == "/console/login"
        refused = await post_password(http, person.email, person.password)
        assert refused.status_code == 401
    assert ("user.disable", person.user_id, "ok") in audit(settings)


async def test_admins_manage_accounts_in_the_console_and_operations_only_unlock(app, settings):
    admin, operations = make_person(settings, "admin"), make_person(settings, "operations")
    async with browser(app) as http:
        await log_in(http, admin)
        page = await http.get("/console/users")
        csrf = form_value(CSRF, page.text)
        created = await http.post("/console/users", data={
            "csrf_token": csrf, "role": "pharmacist", "name": "Léa", "email": "lea@test.invalid",
            "finess": "330001231"})
        assert created.status_code == 200
        password = re.search(r'id="one-time-password">([^<]+)<', created.text).group(1)
        bad = await http.post("/console/users", data={
            "csrf_token": csrf, "role": "pharmacist", "name": "X", "email": "x@test.invalid"})
        assert bad.status_code == 422 and "--finess" in bad.text
        user_id = read(settings, lambda s: s.exec(select(User.id).where(
            User.role == "pharmacist", User.finess == "330001231")).all())
        assert len(user_id) == 1
    async with browser(app) as http:  # the new person: password to replace at once
        answer = await post_password(http, "lea@test.invalid", password)
        assert answer.headers["location"] == "/console/login/password"
    async with browser(app) as http:
        await log_in(http, operations)
        page = await http.get("/console/users")
        assert page.status_code == 200 and 'id="create-account"' not in page.text
        csrf = form_value(CSRF, page.text)
        denied = await http.post(f"/console/users/{user_id[0]}/disable",
                                 data={"csrf_token": csrf})
        assert denied.status_code == 403
        unlocked = await http.post(f"/console/users/{user_id[0]}/unlock",
                                   data={"csrf_token": csrf})
        assert unlocked.status_code == 303
    actions = audit(settings)
    assert ("user.create", user_id[0], "ok") in actions
    assert ("user.unlock", user_id[0], "ok") in actions


async def test_a_pharmacist_cannot_open_the_accounts_page(app, settings):
    person = make_person(settings)
    async with browser(app) as http:
        await log_in(http, person)
        assert (await http.get("/console/users")).status_code == 403


async def test_the_first_unknown_account_is_audited_even_after_a_known_ones_failure(
        app, settings):
    person = make_person(settings)
    async with browser(app) as http:
        await post_password(http, person.email, "wrong")
        await post_password(http, "nobody@test.invalid", "wrong")
        await post_password(http, "nobody-else@test.invalid", "wrong")
    entries = [e for e in audit(settings) if e[0] == "console.login"]
    assert entries == [("console.login", person.user_id, "refused"),
                       ("console.login", None, "refused_unknown")]


async def test_the_purge_forgets_old_login_windows_and_sessions(app, settings):
    from gateway.storage.models import LoginThrottle
    from gateway.storage.retention import purge

    person = make_person(settings)
    async with browser(app) as http:
        await post_password(http, "nobody@test.invalid", "x")
        await log_in(http, person)
    long_ago = utcnow() - timedelta(days=9)

    def age(session):
        for row in session.exec(select(LoginThrottle)).all():
            row.window_started_at = long_ago
            session.add(row)
        for row in session.exec(select(ConsoleSession)).all():
            row.created_at = long_ago
            session.add(row)

    write(settings, age)
    from gateway.storage.models import RightsLookup

    today = f"{utcnow():%Y-%m-%d}"
    write(settings, lambda s: s.add_all([
        RightsLookup(scope="key:k", period="2020-01-01T10", subject="x"),
        RightsLookup(scope="key:k", period=f"{today}T00", subject="y")]))
    write(settings, lambda s: purge(s, now=utcnow(), retention_days=400, rights_cache_days=30))
    assert read(settings, lambda s: s.exec(select(LoginThrottle)).all()) == []
    assert read(settings, lambda s: s.exec(select(ConsoleSession)).all()) == []
    assert read(settings, lambda s: [r.subject for r in s.exec(select(RightsLookup)).all()]) == [
        "y"]  # today's budget cells stay


async def test_a_session_ended_between_the_check_and_the_step_goes_back_to_the_login(
        app, settings):
    """The step's own transaction finds the session ended ("log out everywhere" between): the
    service says LoginGone, and the console answers with the login page, not a 500."""
    from fastapi import FastAPI

    from gateway.audit.trail import cli_actor
    from gateway.console.errors import install_console_errors
    from gateway.errors import install_error_handlers

    person = make_person(settings)
    async with browser(app) as http:
        await post_password(http, person.email, person.password)
    row = read(settings, lambda s: s.exec(select(ConsoleSession).where(
        ConsoleSession.user_id == person.user_id)).one())
    write(settings, lambda s: accounts_of(settings).log_out_everywhere(
        s, cli_actor(), person.user_id))
    with pytest.raises(login_module.LoginGone):
        await login_module.second_factor_step(app.state.context, row=row, code=person.code(),
                                              address="127.0.0.1")

    probe = FastAPI()
    install_error_handlers(probe)
    install_console_errors(probe)

    @probe.post("/console/login/code")
    async def gone() -> None:
        raise login_module.LoginGone("the session ended")

    async with browser(probe) as http:
        answer = await http.post("/console/login/code")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
