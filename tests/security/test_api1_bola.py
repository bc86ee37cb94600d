"""API1:2023 Broken Object Level Authorization.

Tenant B holds a valid token with every scope and names tenant A's objects:
in the path of every route that takes an id, and in every body reference
(transfer and batch-item accounts). Each attempt must look exactly like a
request for an object that does not exist (404, or 422 ACCOUNT_NOT_FOUND for
a body reference), and nothing of A (nor of B) may change. Lists and cursors
never show B anything of A's.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import Tenant
from tests.security.support import (
    WITH_PATH_ID,
    Ledger,
    Unchanged,
    call,
    name,
    random_id,
    seed_ledger,
    transfer,
)
from tests.service.api.helpers import assert_error, open_account


@pytest.fixture
async def victim(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


@pytest.fixture
async def attacker(client: httpx.AsyncClient, other_tenant: Tenant) -> Ledger:
    return await seed_ledger(client, other_tenant)


def _without_request_id(r: httpx.Response) -> tuple[int, Any]:
    return r.status_code, r.json()


# --- ids in the path ------------------------------------------------------------------


@pytest.mark.parametrize("ep", WITH_PATH_ID, ids=name)
async def test_other_tenants_object_in_path_is_not_found_and_untouched(
    client, app: Starlette, victim: Ledger, attacker: Ledger, ep
):
    body = attacker.body(ep)
    async with Unchanged(client, app, victim.tenant, attacker.tenant):
        r = await call(client, ep.method, victim.path(ep), attacker.tenant.headers(), body)
        assert_error(r, 404, "NOT_FOUND")


@pytest.mark.parametrize("ep", WITH_PATH_ID, ids=name)
async def test_other_tenants_object_answers_like_a_missing_one(
    client, victim: Ledger, attacker: Ledger, ep
):
    """No existence oracle: same status and body as for an id nobody has."""
    headers = attacker.tenant.headers()
    body = attacker.body(ep)
    theirs = await call(client, ep.method, victim.path(ep), headers, body)
    missing = await call(client, ep.method, ep.path.replace("{id}", random_id()), headers, body)
    assert _without_request_id(theirs) == _without_request_id(missing)
    assert "etag" not in theirs.headers


async def test_patch_with_if_match_of_other_tenant_changes_nothing(
    client, app: Starlette, victim: Ledger, attacker: Ledger
):
    url = f"/api/accounts/{victim.sink}"
    headers = {**attacker.tenant.headers(), "If-Match": '"1"'}
    async with Unchanged(client, app, victim.tenant):
        r = await client.patch(url, json={"status": "closed"}, headers=headers)
        assert_error(r, 404, "NOT_FOUND")


async def test_posting_part_of_other_tenants_hold_changes_nothing(
    client, app: Starlette, victim: Ledger, attacker: Ledger
):
    url = f"/api/transfers/{victim.pending}/post"
    async with Unchanged(client, app, victim.tenant, attacker.tenant):
        r = await client.post(url, json={"amount": 1}, headers=attacker.tenant.headers())
        assert_error(r, 404, "NOT_FOUND")
    r = await client.get(f"/api/transfers/{victim.pending}", headers=victim.tenant.headers())
    assert r.json()["data"]["status"] == "pending"


async def test_other_tenants_idempotency_key_replays_nothing(
    client, app: Starlette, victim: Ledger, attacker: Ledger
):
    """A key A used is not a key B can use to read A's stored answer."""
    key = f"order-{random_id()}"
    body = {
        "debit_account_id": victim.source,
        "credit_account_id": victim.sink,
        "amount": 7,
        "currency": "USD",
    }
    first = await client.post(
        "/api/transfers", json=body, headers={**victim.tenant.headers(), "Idempotency-Key": key}
    )
    assert first.status_code == 201, first.text
    # B's own key row may be written (its 422 is kept for replays); A's data may not change.
    async with Unchanged(client, app, victim.tenant):
        r = await client.post(
            "/api/transfers",
            json=body,
            headers={**attacker.tenant.headers(), "Idempotency-Key": key},
        )
        assert_error(r, 422, "ACCOUNT_NOT_FOUND")
        assert "idempotent-replayed" not in r.headers
        assert first.json()["data"]["id"] not in r.text


# --- ids in the body ------------------------------------------------------------------


def _pairs(victim: Ledger, attacker: Ledger) -> dict[str, tuple[str, str]]:
    return {
        "debit theirs": (victim.source, attacker.sink),
        "credit theirs": (attacker.source, victim.sink),
        "both theirs": (victim.source, victim.sink),
    }


@pytest.mark.parametrize("which", ["debit theirs", "credit theirs", "both theirs"])
@pytest.mark.parametrize("pending", [False, True], ids=["posted", "pending"])
async def test_transfer_naming_other_tenants_account_is_account_not_found(
    client, app: Starlette, victim: Ledger, attacker: Ledger, which: str, pending: bool
):
    debit, credit = _pairs(victim, attacker)[which]
    body = {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": 5,
        "currency": "USD",
        "pending": pending,
    }
    async with Unchanged(client, app, victim.tenant, attacker.tenant):
        r = await client.post("/api/transfers", json=body, headers=attacker.tenant.headers())
        assert_error(r, 422, "ACCOUNT_NOT_FOUND")


async def test_body_reference_to_other_tenant_answers_like_a_missing_account(
    client, victim: Ledger, attacker: Ledger
):
    headers = attacker.tenant.headers()

    def body(debit: str) -> dict[str, Any]:
        return {
            "debit_account_id": debit,
            "credit_account_id": attacker.sink,
            "amount": 5,
            "currency": "USD",
        }

    theirs = await client.post("/api/transfers", json=body(victim.source), headers=headers)
    missing = await client.post("/api/transfers", json=body(random_id()), headers=headers)
    assert _without_request_id(theirs) == _without_request_id(missing)


@pytest.mark.parametrize("which", ["debit theirs", "credit theirs", "both theirs"])
async def test_atomic_batch_item_naming_other_tenants_account_applies_nothing(
    client, app: Starlette, victim: Ledger, attacker: Ledger, which: str
):
    debit, credit = _pairs(victim, attacker)[which]
    own = {
        "debit_account_id": attacker.source,
        "credit_account_id": attacker.sink,
        "amount": 3,
        "currency": "USD",
    }
    bad = {**own, "debit_account_id": debit, "credit_account_id": credit}
    body = {"atomic": True, "transfers": [own, bad, own]}
    async with Unchanged(client, app, victim.tenant, attacker.tenant):
        r = await client.post("/api/transfers/batch", json=body, headers=attacker.tenant.headers())
        error = assert_error(r, 422, "ACCOUNT_NOT_FOUND")
        assert error["details"].get("index") == 1


async def test_non_atomic_batch_item_naming_other_tenants_account_fails_alone(
    client, app: Starlette, victim: Ledger, attacker: Ledger
):
    own = {
        "debit_account_id": attacker.source,
        "credit_account_id": attacker.sink,
        "amount": 3,
        "currency": "USD",
    }
    items = [
        own,
        {**own, "credit_account_id": victim.sink},
        {**own, "debit_account_id": victim.source},
    ]
    async with Unchanged(client, app, victim.tenant):
        r = await client.post(
            "/api/transfers/batch",
            json={"atomic": False, "transfers": items},
            headers=attacker.tenant.headers(),
        )
        assert r.status_code == 200, r.text
    results = r.json()["data"]
    assert [item["status"] for item in results] == [201, 422, 422]
    assert [item["error"]["code"] for item in results[1:]] == ["ACCOUNT_NOT_FOUND"] * 2
    assert victim.sink not in r.text and victim.source not in r.text


# --- lists and cursors ----------------------------------------------------------------


def _ids(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {item["id"] for item in r.json()["data"]}


async def test_account_list_shows_only_own_accounts(client, victim: Ledger, attacker: Ledger):
    seen = _ids(await client.get("/api/accounts?limit=1000", headers=attacker.tenant.headers()))
    assert seen == set(attacker.accounts)


async def test_transfer_list_shows_only_own_transfers(client, victim: Ledger, attacker: Ledger):
    seen = _ids(await client.get("/api/transfers?limit=1000", headers=attacker.tenant.headers()))
    assert seen == {attacker.posted, attacker.pending}


@pytest.mark.parametrize("status", ["posted", "pending"])
async def test_transfer_list_filtered_by_other_tenants_account_is_empty(
    client, victim: Ledger, attacker: Ledger, status: str
):
    url = f"/api/transfers?account_id={victim.source}&status={status}"
    assert _ids(await client.get(url, headers=attacker.tenant.headers())) == set()


async def test_account_list_filters_never_reach_other_tenant(
    client, victim: Ledger, attacker: Ledger
):
    theirs = await open_account(client, victim.tenant, currency="EUR")
    r = await client.get("/api/accounts?currency=EUR", headers=attacker.tenant.headers())
    assert _ids(r) == set()
    assert theirs not in r.text


async def _first_page_cursor(client, tenant: Tenant, url: str) -> str:
    r = await client.get(url, headers=tenant.headers())
    assert r.status_code == 200, r.text
    cursor = r.json()["meta"]["next_cursor"]
    assert cursor, r.json()
    return str(cursor)


@pytest.mark.parametrize("resource", ["accounts", "transfers"])
async def test_other_tenants_cursor_reveals_nothing(
    client, victim: Ledger, attacker: Ledger, resource: str
):
    # A page of one from the victim's newest object on: the cursor points into A's data.
    for _ in range(3):
        await transfer(client, victim.tenant, victim.source, victim.sink, 1)
        await open_account(client, victim.tenant)
    cursor = await _first_page_cursor(client, victim.tenant, f"/api/{resource}?limit=1")
    r = await client.get(
        f"/api/{resource}?limit=1000&cursor={cursor}", headers=attacker.tenant.headers()
    )
    own = set(attacker.accounts) if resource == "accounts" else {attacker.posted, attacker.pending}
    assert _ids(r) <= own


async def test_other_tenants_statement_cursor_reveals_nothing(
    client, victim: Ledger, attacker: Ledger
):
    for _ in range(3):
        await transfer(client, victim.tenant, victim.source, victim.sink, 1)
    cursor = await _first_page_cursor(
        client, victim.tenant, f"/api/accounts/{victim.source}/entries?limit=1"
    )
    headers = attacker.tenant.headers()
    theirs = await client.get(
        f"/api/accounts/{victim.source}/entries?cursor={cursor}", headers=headers
    )
    assert_error(theirs, 404, "NOT_FOUND")
    r = await client.get(
        f"/api/accounts/{attacker.source}/entries?cursor={cursor}", headers=headers
    )
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        transfers = {entry["transfer_id"] for entry in r.json()["data"]}
        assert transfers <= {attacker.posted, attacker.pending}


async def test_balance_at_of_other_tenants_account_is_not_found(
    client, victim: Ledger, attacker: Ledger
):
    r = await client.get(
        f"/api/accounts/{victim.source}/balance?at=2030-01-01T00:00:00Z",
        headers=attacker.tenant.headers(),
    )
    assert_error(r, 404, "NOT_FOUND")
