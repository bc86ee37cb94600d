"""API6:2023 Unrestricted Access to Sensitive Business Flows.

Moving money is the flow worth abusing: a burst of small transfers is
throttled (and every refused one changes nothing), and the ways to spend the
same money twice — retrying with the same Idempotency-Key, racing debits
against a floor, settling one hold twice — each let exactly one through.
The throttling tests are skipped while service.ratelimit does not exist;
the double-spend tests always run.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette

from service.auth import clients as client_service
from service.auth import scopes
from service.config import Settings
from tests.conftest import Tenant, make_tenant
from tests.security.ratelimited import assert_rate_limited, needs_rate_limiting, tight_client
from tests.security.support import row_counts, transfer
from tests.service.api.helpers import account, assert_error, open_account

BURST = 8


def _body(debit: str, credit: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **extra,
    }


# --- throttling -----------------------------------------------------------------------


@needs_rate_limiting
async def test_burst_of_small_transfers_is_throttled_and_refused_ones_move_nothing(
    settings: Settings,
):
    async with tight_client(settings, rate_limit=0.01, rate_burst=BURST) as http:
        tenant = await make_tenant(http.app)
        source = await open_account(http, tenant, overdraft_limit=None)
        sink = await open_account(http, tenant)  # two requests of the budget spent
        headers = tenant.headers()
        responses = await asyncio.gather(
            *(
                http.post("/api/transfers", json=_body(source, sink, 1), headers=headers)
                for _ in range(50)
            )
        )
        accepted = [r for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code != 201]
        counts = await row_counts(http.app, tenant)
        # Read back as another client of the tenant: this one's budget is spent.
        auditor = await client_service.create_client(
            http.app.state.db, tenant.tenant_id, scopes.ALL, "auditor"
        )
        token = http.app.state.tokens.issue(auditor.client_id, tenant.tenant_id, scopes.ALL)
        r = await http.get(f"/api/accounts/{sink}", headers={"Authorization": f"Bearer {token}"})
    assert len(accepted) == BURST - 2, [r.status_code for r in responses]
    for refusal in refused:
        assert_rate_limited(refusal, assert_error)
    assert counts["transfers"] == len(accepted)
    assert r.json()["data"]["balance"]["posted"] == len(accepted)


@needs_rate_limiting
async def test_throttled_client_cannot_spread_transfers_over_batches_of_requests(
    settings: Settings,
):
    """Many one-item batches are requests like any other: the same bucket throttles them."""
    async with tight_client(settings, rate_limit=0.01, rate_burst=BURST) as http:
        tenant = await make_tenant(http.app)
        source = await open_account(http, tenant, overdraft_limit=None)
        sink = await open_account(http, tenant)
        batch = {"atomic": True, "transfers": [_body(source, sink, 1)]}
        statuses = [
            (
                await http.post("/api/transfers/batch", json=batch, headers=tenant.headers())
            ).status_code
            for _ in range(BURST + 4)
        ]
        counts = await row_counts(http.app, tenant)
    assert statuses.count(201) == BURST - 2, statuses
    assert statuses.count(429) == 6, statuses
    assert counts["transfers"] == BURST - 2


@needs_rate_limiting
async def test_new_tokens_do_not_reset_the_budget(settings: Settings):
    """The bucket is the client's, not the token's: minting tokens buys no more requests."""
    async with tight_client(settings, rate_limit=0.01, rate_burst=BURST) as http:
        tenant = await make_tenant(http.app)
        statuses = [
            (await http.get("/api/accounts", headers=tenant.headers())).status_code
            for _ in range(BURST + 3)
        ]
    assert statuses == [200] * BURST + [429] * 3


# --- double spending ------------------------------------------------------------------


async def test_replaying_one_idempotency_key_moves_money_once(client, tenant: Tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    headers = {**tenant.headers(), "Idempotency-Key": f"pay-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *(
            client.post("/api/transfers", json=_body(source, sink, 100), headers=headers)
            for _ in range(20)
        )
    )
    created = {r.json()["data"]["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1, [r.status_code for r in responses]
    for r in responses:
        assert r.status_code in (201, 409), r.text
    assert (await account(client, tenant, sink))["balance"]["posted"] == 100


async def test_same_key_with_a_bigger_amount_is_refused(client, app: Starlette, tenant: Tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    headers = {**tenant.headers(), "Idempotency-Key": f"pay-{uuid.uuid4()}"}
    first = await client.post("/api/transfers", json=_body(source, sink, 1), headers=headers)
    assert first.status_code == 201, first.text
    before = await row_counts(app, tenant)
    r = await client.post("/api/transfers", json=_body(source, sink, 10**6), headers=headers)
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await row_counts(app, tenant) == before
    assert (await account(client, tenant, sink))["balance"]["posted"] == 1


async def test_racing_debits_never_break_the_floor(client, tenant: Tenant):
    funder = await open_account(client, tenant, overdraft_limit=None)
    wallet = await open_account(client, tenant)  # floor 0
    sink = await open_account(client, tenant)
    await transfer(client, tenant, funder, wallet, 100)
    headers = tenant.headers()
    responses = await asyncio.gather(
        *(
            client.post("/api/transfers", json=_body(wallet, sink, 10), headers=headers)
            for _ in range(25)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 10, statuses
    for r in responses:
        if r.status_code != 201:
            assert_error(r, 422, "INSUFFICIENT_FUNDS")
    balance = (await account(client, tenant, wallet))["balance"]
    assert balance == {"posted": 0, "pending": 0, "available": 0}


async def test_racing_holds_never_reserve_more_than_available(client, tenant: Tenant):
    funder = await open_account(client, tenant, overdraft_limit=None)
    wallet = await open_account(client, tenant)
    sink = await open_account(client, tenant)
    await transfer(client, tenant, funder, wallet, 50)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/transfers",
                json=_body(wallet, sink, 10, pending=True),
                headers=tenant.headers(),
            )
            for _ in range(12)
        )
    )
    assert [r.status_code for r in responses].count(201) == 5
    assert (await account(client, tenant, wallet))["balance"]["available"] == 0


@pytest.mark.parametrize("second", ["post", "void"])
async def test_settling_one_hold_twice_settles_it_once(client, tenant: Tenant, second: str):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    hold = await transfer(client, tenant, source, sink, 70, pending=True)
    headers = tenant.headers()
    url = f"/api/transfers/{hold['id']}"
    responses = await asyncio.gather(
        client.post(f"{url}/post", json={}, headers=headers),
        client.post(f"{url}/{second}", json={}, headers=headers),
        client.post(f"{url}/post", json={}, headers=headers),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 422, 422], [r.text for r in responses]
    for r in responses:
        if r.status_code == 422:
            assert_error(r, 422, "TRANSFER_NOT_PENDING")
    sink_balance = (await account(client, tenant, sink))["balance"]
    assert sink_balance["posted"] in (0, 70)
    assert sink_balance["pending"] == 0


async def test_posting_more_than_the_hold_is_refused(client, app: Starlette, tenant: Tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    hold = await transfer(client, tenant, source, sink, 70, pending=True)
    before = await row_counts(app, tenant)
    r = await client.post(
        f"/api/transfers/{hold['id']}/post", json={"amount": 71}, headers=tenant.headers()
    )
    assert_error(r, 422, "AMOUNT_EXCEEDS_PENDING")
    assert await row_counts(app, tenant) == before


async def test_money_is_conserved_after_the_abuse_attempts(client, tenant: Tenant):
    """Whatever was accepted above, the tenant's posted balances still sum to zero."""
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    await asyncio.gather(
        *(
            client.post("/api/transfers", json=_body(source, sink, 3), headers=tenant.headers())
            for _ in range(10)
        )
    )
    r = await client.get("/api/accounts?limit=1000", headers=tenant.headers())
    assert sum(a["balance"]["posted"] for a in r.json()["data"]) == 0
