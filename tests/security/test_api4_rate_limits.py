"""API4:2023 Unrestricted Resource Consumption: request rates.

Per-client token buckets: a client past its burst gets 429 RATE_LIMITED with
Retry-After, every /api response carries RateLimit-Limit/-Remaining/-Reset,
one client's exhaustion never throttles another, a refused write writes
nothing, per-client limits apply, and POST /api/auth/token is limited per
client id and per source address (so secrets cannot be brute-forced).
Skipped while service.ratelimit does not exist.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.auth import clients as client_service
from service.config import Settings
from tests.conftest import Tenant, make_tenant
from tests.security.ratelimited import (
    assert_rate_limited,
    assert_ratelimit_headers,
    needs_rate_limiting,
    tight_client,
)
from tests.security.support import TOKEN_PATH, row_counts
from tests.service.api.helpers import assert_error

pytestmark = needs_rate_limiting

BURST = 5
# Slow refill: nothing comes back within a test.
SLOW = {"rate_limit": 0.01, "rate_burst": BURST}


async def _spend(http, tenant: Tenant, n: int) -> list:
    return [await http.get("/api/accounts", headers=tenant.headers()) for _ in range(n)]


async def test_client_past_its_burst_gets_429_with_retry_after(settings: Settings):
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        responses = await _spend(http, tenant, BURST + 3)
    assert [r.status_code for r in responses[:BURST]] == [200] * BURST
    for r in responses[BURST:]:
        assert_rate_limited(r, assert_error)


async def test_every_api_response_carries_ratelimit_headers(settings: Settings):
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        responses = await _spend(http, tenant, BURST + 1)
    remaining = []
    for r in responses:
        limit, left, reset = assert_ratelimit_headers(r)
        assert limit == BURST
        assert reset >= 0
        remaining.append(left)
    assert remaining[:BURST] == sorted(remaining[:BURST], reverse=True)
    assert remaining[0] == BURST - 1 and remaining[-1] == 0


async def test_errors_also_spend_and_show_the_budget(settings: Settings):
    """A 404 or 422 costs a token too, so bad requests cannot be sprayed for free."""
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        misses = [
            await http.get(f"/api/accounts/{uuid.uuid4()}", headers=tenant.headers())
            for _ in range(BURST)
        ]
        after = await http.get("/api/accounts", headers=tenant.headers())
    for r in misses:
        assert r.status_code == 404
        assert_ratelimit_headers(r)
    assert_rate_limited(after, assert_error)


async def test_one_clients_exhaustion_does_not_throttle_another(settings: Settings):
    async with tight_client(settings, **SLOW) as http:
        noisy = await make_tenant(http.app, "noisy")
        quiet = await make_tenant(http.app, "quiet")
        await _spend(http, noisy, BURST + 2)
        r = await http.get("/api/accounts", headers=quiet.headers())
    assert r.status_code == 200, r.text


async def test_refused_writes_write_nothing(settings: Settings):
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        await _spend(http, tenant, BURST)
        before = await row_counts(http.app, tenant)
        refused = [
            await http.post(
                "/api/accounts", json={"name": "x", "currency": "USD"}, headers=tenant.headers()
            )
            for _ in range(3)
        ]
        after = await row_counts(http.app, tenant)
    for r in refused:
        assert_rate_limited(r, assert_error)
    assert after == before


async def test_concurrent_burst_is_held_to_the_bucket(settings: Settings):
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        headers = tenant.headers()
        responses = await asyncio.gather(
            *(http.get("/api/accounts", headers=headers) for _ in range(BURST * 4))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == BURST, statuses
    assert statuses.count(429) == BURST * 3, statuses


async def test_bucket_refills_over_time(settings: Settings):
    async with tight_client(settings, rate_limit=20.0, rate_burst=2) as http:
        tenant = await make_tenant(http.app)
        await _spend(http, tenant, 3)
        await asyncio.sleep(0.3)
        r = await http.get("/api/accounts", headers=tenant.headers())
    assert r.status_code == 200, r.text


async def test_per_client_limit_overrides_the_default(settings: Settings):
    async with tight_client(settings, rate_limit=1000.0, rate_burst=1000) as http:
        tenant = await make_tenant(http.app)
        limited = await client_service.create_client(
            http.app.state.db,
            tenant.tenant_id,
            ("ledger:read",),
            "limited",
            rate_limit=1,
            burst=2,
        )
        token = http.app.state.tokens.issue(limited.client_id, tenant.tenant_id, ("ledger:read",))
        headers = {"Authorization": f"Bearer {token}"}
        responses = [await http.get("/api/accounts", headers=headers) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    assert assert_ratelimit_headers(responses[0])[0] == 2


# --- the token endpoint ---------------------------------------------------------------

AUTH_BURST = 3
AUTH_SLOW = {"auth_rate_limit": 0.01, "auth_rate_burst": AUTH_BURST}


async def test_guessing_one_clients_secret_is_throttled(settings: Settings):
    async with tight_client(settings, **AUTH_SLOW) as http:
        tenant = await make_tenant(http.app)
        guesses = [
            await http.post(
                TOKEN_PATH,
                json={"client_id": str(tenant.client_id), "client_secret": f"tsk_guess{i}"},
            )
            for i in range(AUTH_BURST + 3)
        ]
        # Even the right secret waits now: a guess that happened to be right would too.
        right = await http.post(
            TOKEN_PATH,
            json={"client_id": str(tenant.client_id), "client_secret": tenant.client_secret},
        )
    assert [r.status_code for r in guesses[:AUTH_BURST]] == [401] * AUTH_BURST
    for r in [*guesses[AUTH_BURST:], right]:
        assert_rate_limited(r, assert_error)
        assert "access_token" not in r.text


async def test_spraying_client_ids_from_one_address_is_throttled(settings: Settings):
    async with tight_client(settings, **AUTH_SLOW) as http:
        sprayed = [
            await http.post(
                TOKEN_PATH, json={"client_id": str(uuid.uuid4()), "client_secret": "tsk_x"}
            )
            for _ in range(AUTH_BURST + 3)
        ]
    assert [r.status_code for r in sprayed[:AUTH_BURST]] == [401] * AUTH_BURST
    for r in sprayed[AUTH_BURST:]:
        assert_rate_limited(r, assert_error)


async def test_token_endpoint_limit_is_separate_from_api_budget(settings: Settings):
    """Exhausting the token endpoint does not lock a client out of the API with its token."""
    async with tight_client(settings, **AUTH_SLOW) as http:
        tenant = await make_tenant(http.app)
        for i in range(AUTH_BURST + 1):
            await http.post(
                TOKEN_PATH, json={"client_id": str(tenant.client_id), "client_secret": f"x{i}"}
            )
        r = await http.get("/api/accounts", headers=tenant.headers())
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_operations_endpoints_are_not_part_of_a_clients_budget(settings: Settings, path):
    async with tight_client(settings, **SLOW) as http:
        tenant = await make_tenant(http.app)
        await _spend(http, tenant, BURST + 1)
        r = await http.get(path, headers=tenant.headers())
    assert r.status_code == 200, r.text
