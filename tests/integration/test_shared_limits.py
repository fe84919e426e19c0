"""Every rate limit shared by the instances of one deployment (issue 12), and the read class.

Two apps on the test's database (SQLite, and PostgreSQL when configured), or on one
Redis when GATEWAY_TEST_REDIS_URL is set: the second instance refuses once the first
has used most of a key's limit, within the documented overshoot (a tenth of the limit
per other instance).
"""

from __future__ import annotations

import httpx
import pytest
from instances import REDIS_URL, instance, with_limits
from synthetic import claim_body

from gateway.keys.admin import create_key
from gateway.security.limit_store import DatabaseWindows, RedisWindows

pytestmark = pytest.mark.anyio
LIMIT = 20
SHARE = LIMIT // 10  # what one instance may admit before it syncs


async def reads_until_refused(http: httpx.AsyncClient, headers: dict[str, str],
                              most: int) -> tuple[int, httpx.Response | None]:
    for admitted in range(most):
        response = await http.get("/v1/claims", headers=headers)
        if response.status_code == 429:
            return admitted, response
        assert response.status_code == 200, response.text
    return most, None


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and not REDIS_URL:
        pytest.skip("needs GATEWAY_TEST_REDIS_URL")
    return str(request.param)


async def test_two_instances_share_one_keys_limit(settings, simulators, store):
    shared = with_limits(settings, reads_per_minute=LIMIT)
    if store == "redis":
        shared = shared.model_copy(update={"redis_url": REDIS_URL})
    _, secret = create_key(shared, role="pharmacy", finess="330001231")
    headers = {"Authorization": f"Bearer {secret}"}
    async with instance(shared, simulators) as (first, http_a), \
            instance(shared, simulators) as (second, http_b):
        kind = RedisWindows if store == "redis" else DatabaseWindows
        assert isinstance(first.state.context.limiter.store, kind)
        for app in (first, second):  # a busy CI machine's database may take over the 1 s
            app.state.context.limiter.sync_wait_s = 30.0  # after which each decides alone
        used, refused = await reads_until_refused(http_a, headers, LIMIT - 5)
        assert (used, refused) == (LIMIT - 5, None)
        await first.state.context.limiter.sync()  # at most 0.5 s later in any case
        more, refused = await reads_until_refused(http_b, headers, LIMIT)
        assert 5 <= more <= 5 + SHARE  # the rest of the limit, and at most the overshoot
        assert refused is not None and 1 <= int(refused.headers["Retry-After"]) <= 65
        assert refused.json()["type"] == "rate-limited"
        late, refused = await reads_until_refused(http_a, headers, LIMIT)
        assert refused is not None
        assert used + more + late <= LIMIT + SHARE  # both together, however they interleave


async def test_instances_keep_limiting_alone_when_the_store_is_unreachable(settings, simulators):
    alone = with_limits(settings, reads_per_minute=5).model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0"})
    _, secret = create_key(alone, role="pharmacy", finess="330001231")
    headers = {"Authorization": f"Bearer {secret}"}
    async with instance(alone, simulators) as (app, http):
        assert isinstance(app.state.context.limiter.store, RedisWindows)
        used, refused = await reads_until_refused(http, headers, 10)
        assert used == 5 and refused is not None  # as if it were the only instance


async def test_reads_have_their_own_limit_per_key(settings, simulators, operations):
    limited = with_limits(settings, reads_per_minute=3)
    _, secret = create_key(limited, role="pharmacy", finess="330001231")
    _, other = create_key(limited, role="pharmacy", finess="690000880")
    headers = {"Authorization": f"Bearer {secret}"}
    async with instance(limited, simulators) as (_, http):
        claim = (await http.post("/v1/claims", json=claim_body("R1"), headers=headers)).json()
        answers = [(await http.get(path, headers=headers)).status_code for path in (
            "/v1/claims", f"/v1/claims/{claim['id']}", "/v1/exposure", "/v1/events",
            "/v1/operators")]
        assert answers == [200, 200, 200, 429, 429]  # one budget for every read
        refused = await http.get("/v1/claims", headers=headers)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        # writes keep their own class, and another key its own budget
        assert (await http.post("/v1/claims", json=claim_body("R2"),
                                headers=headers)).status_code in (201, 202)
        assert (await http.get("/v1/claims", headers={
            "Authorization": f"Bearer {other}"})).status_code == 200
        for path in ("/v1/operators", "/v1/operators/opera/queue", "/v1/operators/opera/queue",
                     "/v1/operators/opera/replay"):
            await http.get(path, headers=operations)
        assert (await http.get("/v1/operators/opera/queue",
                               headers=operations)).status_code == 429


def test_reads_default_to_what_polling_software_needs():
    from gateway.settings import Settings

    limits = Settings().limits
    assert limits.reads_per_minute == 600 and limits.long_polls_per_key == 3
