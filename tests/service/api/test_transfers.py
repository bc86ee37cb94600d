"""The transfers API: create, hold, post, void, expire, read, list, batch; the outbox.

Every error is checked for its status, the error envelope and its code, and
that nothing changed: the accounts involved (balances, updated_at), the
tenant's transfers and its events are re-read and compared with before.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from service.ledger import maintenance
from tests.service.api.helpers import (
    ACCOUNTS,
    account,
    assert_error,
    bal,
    field_names,
    open_account,
    parse_time,
)

URL = "/api/transfers"
BATCH_URL = f"{URL}/batch"
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
TRANSFER_FIELDS = {
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency",
    "status",
    "posted_amount",
    "expires_at",
    "description",
    "metadata",
    "created_at",
    "updated_at",
}


# --- helpers -----------------------------------------------------------------


async def balance(client, tenant, account_id: str) -> dict[str, int]:
    return (await account(client, tenant, account_id))["balance"]


async def set_status(client, tenant, account_id: str, status: str) -> httpx.Response:
    return await client.patch(
        f"{ACCOUNTS}/{account_id}", json={"status": status}, headers=tenant.headers()
    )


def body_of(debit: str, credit: str, amount: Any, **fields: Any) -> dict[str, Any]:
    return {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **fields,
    }


async def move(client, tenant, debit: str, credit: str, amount: Any, **fields: Any):
    return await client.post(
        URL, json=body_of(debit, credit, amount, **fields), headers=tenant.headers()
    )


async def moved(client, tenant, debit: str, credit: str, amount: int, **fields: Any) -> dict:
    r = await move(client, tenant, debit, credit, amount, **fields)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def hold(client, tenant, debit: str, credit: str, amount: int, **fields: Any) -> dict:
    return await moved(client, tenant, debit, credit, amount, pending=True, **fields)


async def settle(client, tenant, transfer_id: str, action: str, body: Any = None):
    kwargs = {} if body is None else {"json": body}
    return await client.post(f"{URL}/{transfer_id}/{action}", headers=tenant.headers(), **kwargs)


async def settled(client, tenant, transfer_id: str, action: str, body: Any = None) -> dict:
    r = await settle(client, tenant, transfer_id, action, body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def get_transfer(client, tenant, transfer_id: str) -> dict[str, Any]:
    r = await client.get(f"{URL}/{transfer_id}", headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def listed(client, tenant, **params: Any) -> list[str]:
    r = await client.get(URL, params={"limit": 1000, **params}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["data"]]


async def events(tenant) -> list[tuple[int, str, dict[str, Any]]]:
    async with tenant.app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT sequence, type, data FROM events WHERE tenant_id = %s ORDER BY sequence",
            (tenant.tenant_id,),
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def sql(tenant, query: str, *args: Any) -> list[tuple]:
    async with tenant.app.state.db.connection() as conn:
        cur = await conn.execute(query, args)
        return list(await cur.fetchall()) if cur.description else []


async def entry_kinds(tenant, transfer_id: str) -> list[tuple[str, str]]:
    rows = await sql(
        tenant,
        "SELECT account_id, kind FROM entries WHERE tenant_id = %s AND transfer_id = %s"
        " ORDER BY id",
        tenant.tenant_id,
        uuid.UUID(transfer_id),
    )
    return [(str(a), k) for a, k in rows]


async def state(client, tenant, *account_ids: str) -> dict[str, Any]:
    """Everything a rejected request must leave alone."""
    return {
        "accounts": [await account(client, tenant, a) for a in account_ids],
        "transfers": await listed(client, tenant),
        "events": await events(tenant),
    }


async def world(client, tenant, currency: str = "USD") -> str:
    """An account with no floor, the source of funds."""
    return await open_account(client, tenant, name="World", currency=currency, overdraft_limit=None)


async def funded(client, tenant, amount: int = 1000) -> tuple[str, str, str]:
    """(world, a, b): a holds `amount`, b is empty; both have floor 0."""
    w = await world(client, tenant)
    a = await open_account(client, tenant, name="A")
    b = await open_account(client, tenant, name="B")
    if amount:
        await moved(client, tenant, w, a, amount)
    return w, a, b


async def expire_now(tenant, transfer_id: str) -> None:
    await sql(
        tenant,
        "UPDATE transfers SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE tenant_id = %s AND id = %s",
        tenant.tenant_id,
        uuid.UUID(transfer_id),
    )


# --- POST /api/transfers: posted at once ------------------------------------


async def test_transfer_returns_201_with_every_field(client, tenant):
    _w, a, b = await funded(client, tenant)
    r = await move(client, tenant, a, b, 250, description="order 8812", metadata={"o": "8812"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"data"}
    data = body["data"]
    assert set(data) == TRANSFER_FIELDS
    assert uuid.UUID(data["id"]).version == 7
    assert data["debit_account_id"] == a
    assert data["credit_account_id"] == b
    assert data["amount"] == 250
    assert data["currency"] == "USD"
    assert data["status"] == "posted"
    assert data["posted_amount"] == 250
    assert data["expires_at"] is None
    assert data["description"] == "order 8812"
    assert data["metadata"] == {"o": "8812"}
    assert parse_time(data["created_at"]) == parse_time(data["updated_at"])
    assert r.headers.get("idempotent-replayed") is None


async def test_transfer_moves_balances_on_both_accounts(client, tenant):
    w, a, b = await funded(client, tenant)
    assert await balance(client, tenant, w) == bal(-1000, 0, -1000)
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    await moved(client, tenant, a, b, 300)
    assert await balance(client, tenant, a) == bal(700, 0, 700)
    assert await balance(client, tenant, b) == bal(300, 0, 300)
    assert await balance(client, tenant, w) == bal(-1000, 0, -1000)


async def test_transfer_is_readable_by_get(client, tenant):
    _w, a, b = await funded(client, tenant)
    created = await moved(client, tenant, a, b, 5, description="d", metadata={"k": "v"})
    assert await get_transfer(client, tenant, created["id"]) == created


async def test_transfers_conserve_money(client, tenant):
    w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    await moved(client, tenant, a, b, 400)
    await moved(client, tenant, b, c, 150)
    await moved(client, tenant, c, a, 50)
    balances = [await balance(client, tenant, x) for x in (w, a, b, c)]
    assert [x["posted"] for x in balances] == [-1000, 650, 250, 100]
    assert sum(x["posted"] for x in balances) == 0


async def test_transfer_of_whole_balance_leaves_zero(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    await moved(client, tenant, a, b, 100)
    assert await balance(client, tenant, a) == bal(0, 0, 0)


async def test_transfer_with_int64_max_amount_from_unlimited_account(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    data = await moved(client, tenant, w, b, INT64_MAX)
    assert data["amount"] == INT64_MAX
    assert await balance(client, tenant, w) == bal(-INT64_MAX, 0, -INT64_MAX)
    assert await balance(client, tenant, b) == bal(INT64_MAX, 0, INT64_MAX)


async def test_transfer_in_custom_currency(client, tenant):
    w = await world(client, tenant, "POINTS")
    b = await open_account(client, tenant, currency="POINTS")
    r = await client.post(
        URL,
        json={"debit_account_id": w, "credit_account_id": b, "amount": 7, "currency": "POINTS"},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["currency"] == "POINTS"
    assert await balance(client, tenant, b) == bal(7, 0, 7)


async def test_transfer_with_explicit_pending_false_is_posted(client, tenant):
    _w, a, b = await funded(client, tenant)
    data = await moved(client, tenant, a, b, 10, pending=False)
    assert data["status"] == "posted"
    assert data["posted_amount"] == 10


# --- overdraft floor -----------------------------------------------------------


async def test_floor_zero_rejects_any_debit_of_an_empty_account(client, tenant):
    _w, a, b = await funded(client, tenant, 0)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before


async def test_floor_zero_rejects_one_more_than_the_balance(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 101), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before


async def test_floor_zero_allows_exactly_the_balance_then_rejects(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    await moved(client, tenant, a, b, 60)
    await moved(client, tenant, a, b, 40)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before
    assert await balance(client, tenant, a) == bal(0, 0, 0)


async def test_positive_floor_allows_overdraft_down_to_the_limit(client, tenant):
    a = await open_account(client, tenant, overdraft_limit=50)
    b = await open_account(client, tenant)
    await moved(client, tenant, a, b, 50)
    assert await balance(client, tenant, a) == bal(-50, 0, -50)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before


async def test_positive_floor_counts_the_funds_too(client, tenant):
    w = await world(client, tenant)
    a = await open_account(client, tenant, overdraft_limit=50)
    b = await open_account(client, tenant)
    await moved(client, tenant, w, a, 20)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 71), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before
    await moved(client, tenant, a, b, 70)
    assert await balance(client, tenant, a) == bal(-50, 0, -50)


async def test_null_floor_allows_any_debit(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    await moved(client, tenant, w, b, 10**15)
    await moved(client, tenant, w, b, 1)
    assert await balance(client, tenant, w) == bal(-(10**15) - 1, 0, -(10**15) - 1)


async def test_floor_counts_pending_holds(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    await hold(client, tenant, a, b, 70)
    assert await balance(client, tenant, a) == bal(100, -70, 30)
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 31), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before
    await moved(client, tenant, a, b, 30)
    assert await balance(client, tenant, a) == bal(70, -70, 0)


async def test_hold_beyond_the_floor_is_rejected(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 101, pending=True)
    assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b) == before


async def test_pending_credit_is_not_spendable(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    c = await open_account(client, tenant, name="C")
    await hold(client, tenant, a, b, 100)
    assert await balance(client, tenant, b) == bal(0, 100, 0)
    before = await state(client, tenant, a, b, c)
    assert_error(await move(client, tenant, b, c, 1), 422, "INSUFFICIENT_FUNDS")
    assert await state(client, tenant, a, b, c) == before


async def test_raising_the_floor_via_patch_applies_to_the_next_transfer(client, tenant):
    a = await open_account(client, tenant)
    b = await open_account(client, tenant)
    r = await client.patch(
        f"{ACCOUNTS}/{a}", json={"overdraft_limit": 25}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    await moved(client, tenant, a, b, 25)
    assert_error(await move(client, tenant, a, b, 1), 422, "INSUFFICIENT_FUNDS")


# --- frozen and closed accounts -------------------------------------------------


async def test_frozen_account_cannot_be_debited(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await set_status(client, tenant, a, "frozen")).status_code == 200
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "ACCOUNT_NOT_ACTIVE")
    assert await state(client, tenant, a, b) == before


async def test_frozen_account_cannot_place_a_hold(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await set_status(client, tenant, a, "frozen")).status_code == 200
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1, pending=True), 422, "ACCOUNT_NOT_ACTIVE")
    assert await state(client, tenant, a, b) == before


async def test_frozen_account_accepts_credits(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await set_status(client, tenant, b, "frozen")).status_code == 200
    await moved(client, tenant, a, b, 10)
    await hold(client, tenant, a, b, 5)
    assert await balance(client, tenant, b) == bal(10, 5, 10)


async def test_reactivated_account_can_be_debited_again(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await set_status(client, tenant, a, "frozen")).status_code == 200
    assert (await set_status(client, tenant, a, "active")).status_code == 200
    await moved(client, tenant, a, b, 10)
    assert await balance(client, tenant, a) == bal(990, 0, 990)


async def test_closed_account_cannot_be_credited(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await set_status(client, tenant, b, "closed")).status_code == 200
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "ACCOUNT_NOT_ACTIVE")
    assert_error(await move(client, tenant, a, b, 1, pending=True), 422, "ACCOUNT_NOT_ACTIVE")
    assert await state(client, tenant, a, b) == before


async def test_closed_account_cannot_be_debited(client, tenant):
    a = await open_account(client, tenant, overdraft_limit=None)
    b = await open_account(client, tenant)
    assert (await set_status(client, tenant, a, "closed")).status_code == 200
    before = await state(client, tenant, a, b)
    assert_error(await move(client, tenant, a, b, 1), 422, "ACCOUNT_NOT_ACTIVE")
    assert await state(client, tenant, a, b) == before


async def test_closing_an_account_with_a_balance_is_409(client, tenant):
    _w, a, _b = await funded(client, tenant)
    before = await state(client, tenant, a)
    assert_error(await set_status(client, tenant, a, "closed"), 409, "ACCOUNT_NOT_EMPTY")
    assert await state(client, tenant, a) == before


async def test_closing_an_overdrawn_account_is_409(client, tenant):
    a = await open_account(client, tenant, overdraft_limit=100)
    b = await open_account(client, tenant)
    await moved(client, tenant, a, b, 30)
    assert_error(await set_status(client, tenant, a, "closed"), 409, "ACCOUNT_NOT_EMPTY")
    assert (await account(client, tenant, a))["status"] == "active"


async def test_closing_either_side_of_a_pending_hold_is_409(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    held = await hold(client, tenant, w, b, 100)
    before = await state(client, tenant, w, b)
    assert_error(await set_status(client, tenant, w, "closed"), 409, "ACCOUNT_NOT_EMPTY")
    assert_error(await set_status(client, tenant, b, "closed"), 409, "ACCOUNT_NOT_EMPTY")
    assert await state(client, tenant, w, b) == before
    await settled(client, tenant, held["id"], "void")
    assert (await set_status(client, tenant, w, "closed")).status_code == 200
    assert (await set_status(client, tenant, b, "closed")).status_code == 200


async def test_account_emptied_by_transfers_can_be_closed(client, tenant):
    w, a, _b = await funded(client, tenant, 100)
    await moved(client, tenant, a, w, 100)
    r = await set_status(client, tenant, a, "closed")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "closed"


# --- other ledger rules ------------------------------------------------------------


async def test_currency_mismatch_between_accounts(client, tenant):
    w = await world(client, tenant)
    eur = await open_account(client, tenant, currency="EUR")
    before = await state(client, tenant, w, eur)
    assert_error(await move(client, tenant, w, eur, 1), 422, "CURRENCY_MISMATCH")
    assert await state(client, tenant, w, eur) == before


async def test_currency_mismatch_with_the_transfer_currency(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, currency="EUR")
    assert_error(r, 422, "CURRENCY_MISMATCH")
    assert await state(client, tenant, a, b) == before


async def test_same_account_is_rejected(client, tenant):
    _w, a, _b = await funded(client, tenant)
    before = await state(client, tenant, a)
    assert_error(await move(client, tenant, a, a, 1), 422, "SAME_ACCOUNT")
    assert_error(await move(client, tenant, a, a, 1, pending=True), 422, "SAME_ACCOUNT")
    assert await state(client, tenant, a) == before


@pytest.mark.parametrize("side", ["debit", "credit"])
async def test_unknown_account_is_account_not_found(client, tenant, side):
    _w, a, _b = await funded(client, tenant)
    ghost = str(uuid.uuid4())
    debit, credit = (ghost, a) if side == "debit" else (a, ghost)
    before = await state(client, tenant, a)
    assert_error(await move(client, tenant, debit, credit, 1), 422, "ACCOUNT_NOT_FOUND")
    assert await state(client, tenant, a) == before


@pytest.mark.parametrize("side", ["debit", "credit"])
async def test_other_tenants_account_is_account_not_found(client, tenant, other_tenant, side):
    _w, a, _b = await funded(client, tenant)
    theirs = await world(client, other_tenant)
    debit, credit = (theirs, a) if side == "debit" else (a, theirs)
    before = await state(client, tenant, a)
    theirs_before = await state(client, other_tenant, theirs)
    r = await move(client, tenant, debit, credit, 1)
    error = assert_error(r, 422, "ACCOUNT_NOT_FOUND")
    assert theirs not in json.dumps(error["details"])
    assert await state(client, tenant, a) == before
    assert await state(client, other_tenant, theirs) == theirs_before


async def test_other_tenant_cannot_hold_on_my_account(client, tenant, other_tenant):
    _w, a, _b = await funded(client, tenant)
    theirs = await open_account(client, other_tenant)
    before = await state(client, tenant, a)
    r = await move(client, other_tenant, a, theirs, 1, pending=True)
    assert_error(r, 422, "ACCOUNT_NOT_FOUND")
    assert await state(client, tenant, a) == before
    assert await listed(client, other_tenant) == []


# --- 64-bit overflow -----------------------------------------------------------------


async def test_credit_past_int64_max_is_balance_overflow(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    await moved(client, tenant, w, b, INT64_MAX)
    w2 = await world(client, tenant)
    before = await state(client, tenant, w2, b)
    assert_error(await move(client, tenant, w2, b, 1), 422, "BALANCE_OVERFLOW")
    assert await state(client, tenant, w2, b) == before


async def test_debit_past_int64_min_is_balance_overflow(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    c = await open_account(client, tenant)
    await moved(client, tenant, w, b, INT64_MAX)
    await moved(client, tenant, w, c, 1)
    assert await balance(client, tenant, w) == bal(INT64_MIN, 0, INT64_MIN)
    before = await state(client, tenant, w, c)
    assert_error(await move(client, tenant, w, c, 1), 422, "BALANCE_OVERFLOW")
    assert await state(client, tenant, w, c) == before


async def test_pending_credits_past_int64_max_is_balance_overflow(client, tenant):
    w = await world(client, tenant)
    w2 = await world(client, tenant)
    b = await open_account(client, tenant)
    await hold(client, tenant, w, b, INT64_MAX)
    assert await balance(client, tenant, b) == bal(0, INT64_MAX, 0)
    before = await state(client, tenant, w2, b)
    assert_error(await move(client, tenant, w2, b, 1, pending=True), 422, "BALANCE_OVERFLOW")
    assert await state(client, tenant, w2, b) == before


async def test_posting_a_hold_past_int64_max_is_balance_overflow(client, tenant):
    w = await world(client, tenant)
    w2 = await world(client, tenant)
    b = await open_account(client, tenant)
    await moved(client, tenant, w, b, INT64_MAX - 10)
    held = await hold(client, tenant, w2, b, 100)
    before = await state(client, tenant, w2, b)
    assert_error(await settle(client, tenant, held["id"], "post"), 422, "BALANCE_OVERFLOW")
    assert await state(client, tenant, w2, b) == before
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "pending"
    # Posting only what fits works; the rest is released.
    data = await settled(client, tenant, held["id"], "post", {"amount": 10})
    assert data["posted_amount"] == 10
    assert await balance(client, tenant, b) == bal(INT64_MAX, 0, INT64_MAX)


async def test_pending_debits_past_int64_max_is_balance_overflow(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    c = await open_account(client, tenant)
    await hold(client, tenant, w, b, INT64_MAX)
    assert await balance(client, tenant, w) == bal(0, -INT64_MAX, -INT64_MAX)
    before = await state(client, tenant, w, c)
    assert_error(await move(client, tenant, w, c, 1, pending=True), 422, "BALANCE_OVERFLOW")
    assert await state(client, tenant, w, c) == before


# --- POST /api/transfers: request validation ----------------------------------


@pytest.mark.parametrize("amount", [0, -1, 2**63, 10**40])
async def test_out_of_range_amount_is_422(client, tenant, amount):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, amount)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["amount"]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("amount", ["100", 1.5, True, None, [1]])
async def test_amount_of_wrong_type_is_400(client, tenant, amount):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, amount)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["amount"]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("missing", ["debit_account_id", "credit_account_id", "amount", "currency"])
async def test_missing_required_field_is_422(client, tenant, missing):
    _w, a, b = await funded(client, tenant)
    body = body_of(a, b, 1)
    del body[missing]
    before = await state(client, tenant, a, b)
    r = await client.post(URL, json=body, headers=tenant.headers())
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == [missing]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("pending", [None, False])
async def test_timeout_without_pending_is_422(client, tenant, pending):
    _w, a, b = await funded(client, tenant)
    body = body_of(a, b, 1, timeout_seconds=60)
    if pending is not None:
        body["pending"] = pending
    before = await state(client, tenant, a, b)
    r = await client.post(URL, json=body, headers=tenant.headers())
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["timeout_seconds"]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("timeout", [0, -5, 30 * 24 * 3600 + 1])
async def test_out_of_range_timeout_is_422(client, tenant, timeout):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, pending=True, timeout_seconds=timeout)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["timeout_seconds"]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("currency", ["usd", "US", "", "1USD"])
async def test_bad_currency_is_422(client, tenant, currency):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, currency=currency)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["currency"]
    assert await state(client, tenant, a, b) == before


async def test_description_over_500_chars_is_422(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, description="d" * 501)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["description"]
    assert await state(client, tenant, a, b) == before


async def test_description_of_500_chars_is_accepted(client, tenant):
    _w, a, b = await funded(client, tenant)
    assert (await moved(client, tenant, a, b, 1, description="d" * 500))["description"] == (
        "d" * 500
    )


async def test_control_character_in_description_is_422(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, description="a\u0000b")
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["description"]
    assert await state(client, tenant, a, b) == before


async def test_every_failing_field_is_reported(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 0, currency="usd", description="d" * 501)
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert sorted(field_names(error)) == ["amount", "currency", "description"]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "posted"), ("id", "x"), ("posted_amount", 1), ("nope", 1)],
)
async def test_unknown_or_server_owned_field_is_400(client, tenant, field, value):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, **{field: value})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == [field]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize(("field", "value"), [("pending", "yes"), ("debit_account_id", 5)])
async def test_wrong_json_type_is_400(client, tenant, field, value):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await move(client, tenant, a, b, 1, **{field: value})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == [field]
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("content", [b"{", b"[]", b"null", b"not json", b""])
async def test_malformed_body_is_400(client, tenant, content):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    r = await client.post(URL, content=content, headers=headers)
    assert_error(r, 400, "BAD_REQUEST")
    assert await state(client, tenant, a, b) == before


async def test_wrong_content_type_is_415(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    headers = {**tenant.headers(), "Content-Type": "text/plain"}
    r = await client.post(URL, content=json.dumps(body_of(a, b, 1)).encode(), headers=headers)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await state(client, tenant, a, b) == before


async def test_body_over_64_kib_is_413(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    body = body_of(a, b, 1, metadata={f"k{i}": "v" * 500 for i in range(50)})
    body["description"] = "d" * 500
    content = json.dumps(body).encode() + b" " * (64 * 1024)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    r = await client.post(URL, content=content, headers=headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await state(client, tenant, a, b) == before


# --- scopes and authentication ------------------------------------------------------


async def test_create_needs_ledger_write(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await client.post(
        URL, json=body_of(a, b, 1), headers=tenant.headers("ledger:read", "admin")
    )
    assert assert_error(r, 403, "FORBIDDEN")["details"]["required_scope"] == "ledger:write"
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settle_needs_ledger_write(client, tenant, action):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 5)
    before = await state(client, tenant, a, b)
    r = await client.post(f"{URL}/{held['id']}/{action}", headers=tenant.headers("ledger:read"))
    assert_error(r, 403, "FORBIDDEN")
    assert await state(client, tenant, a, b) == before


async def test_batch_needs_ledger_write(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await client.post(
        BATCH_URL, json={"transfers": [body_of(a, b, 1)]}, headers=tenant.headers("ledger:read")
    )
    assert_error(r, 403, "FORBIDDEN")
    assert await state(client, tenant, a, b) == before


async def test_reads_need_ledger_read(client, tenant):
    _w, a, b = await funded(client, tenant)
    created = await moved(client, tenant, a, b, 1)
    for path in (URL, f"{URL}/{created['id']}"):
        r = await client.get(path, headers=tenant.headers("ledger:write"))
        assert assert_error(r, 403, "FORBIDDEN")["details"]["required_scope"] == "ledger:read"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", URL),
        ("POST", BATCH_URL),
        ("GET", URL),
        ("GET", f"{URL}/{uuid.uuid4()}"),
        ("POST", f"{URL}/{uuid.uuid4()}/post"),
        ("POST", f"{URL}/{uuid.uuid4()}/void"),
    ],
)
async def test_transfer_routes_need_a_token(client, method, path):
    r = await client.request(method, path)
    assert_error(r, 401, "UNAUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Bearer")


# --- pending transfers (holds) -----------------------------------------------------


async def test_hold_returns_a_pending_transfer(client, tenant):
    _w, a, b = await funded(client, tenant)
    data = await hold(client, tenant, a, b, 300)
    assert set(data) == TRANSFER_FIELDS
    assert data["status"] == "pending"
    assert data["posted_amount"] is None
    assert data["expires_at"] is None
    assert data["amount"] == 300
    assert await get_transfer(client, tenant, data["id"]) == data


async def test_hold_reserves_without_moving_posted(client, tenant):
    _w, a, b = await funded(client, tenant)
    await hold(client, tenant, a, b, 300)
    assert await balance(client, tenant, a) == bal(1000, -300, 700)
    assert await balance(client, tenant, b) == bal(0, 300, 0)


async def test_hold_with_timeout_sets_expires_at(client, tenant):
    _w, a, b = await funded(client, tenant)
    data = await hold(client, tenant, a, b, 1, timeout_seconds=3600)
    created = parse_time(data["created_at"])
    assert parse_time(data["expires_at"]) == created + timedelta(seconds=3600)
    assert (await get_transfer(client, tenant, data["id"]))["expires_at"] == data["expires_at"]


async def test_two_holds_add_up(client, tenant):
    _w, a, b = await funded(client, tenant)
    await hold(client, tenant, a, b, 100)
    await hold(client, tenant, a, b, 250)
    assert await balance(client, tenant, a) == bal(1000, -350, 650)
    assert await balance(client, tenant, b) == bal(0, 350, 0)


async def test_post_whole_hold(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    r = await settle(client, tenant, held["id"], "post")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert set(data) == TRANSFER_FIELDS
    assert data["id"] == held["id"]
    assert data["status"] == "posted"
    assert data["amount"] == 300
    assert data["posted_amount"] == 300
    assert data["created_at"] == held["created_at"]
    assert parse_time(data["updated_at"]) > parse_time(held["updated_at"])
    assert await balance(client, tenant, a) == bal(700, 0, 700)
    assert await balance(client, tenant, b) == bal(300, 0, 300)
    assert await get_transfer(client, tenant, held["id"]) == data


async def test_post_with_empty_json_object_posts_everything(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    data = await settled(client, tenant, held["id"], "post", {})
    assert data["posted_amount"] == 300


async def test_partial_post_releases_the_rest(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    data = await settled(client, tenant, held["id"], "post", {"amount": 120})
    assert data["status"] == "posted"
    assert data["amount"] == 300
    assert data["posted_amount"] == 120
    assert await balance(client, tenant, a) == bal(880, 0, 880)
    assert await balance(client, tenant, b) == bal(120, 0, 120)


async def test_partial_post_leaves_other_holds_alone(client, tenant):
    _w, a, b = await funded(client, tenant)
    first = await hold(client, tenant, a, b, 300)
    await hold(client, tenant, a, b, 200)
    await settled(client, tenant, first["id"], "post", {"amount": 1})
    assert await balance(client, tenant, a) == bal(999, -200, 799)
    assert await balance(client, tenant, b) == bal(1, 200, 1)


async def test_post_exactly_the_pending_amount(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    data = await settled(client, tenant, held["id"], "post", {"amount": 300})
    assert data["posted_amount"] == 300
    assert await balance(client, tenant, b) == bal(300, 0, 300)


async def test_post_more_than_pending_is_amount_exceeds_pending(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    r = await settle(client, tenant, held["id"], "post", {"amount": 301})
    assert_error(r, 422, "AMOUNT_EXCEEDS_PENDING")
    assert await state(client, tenant, a, b) == before
    assert await get_transfer(client, tenant, held["id"]) == held


@pytest.mark.parametrize(("amount", "status"), [(0, 422), (-1, 422), ("5", 400), (1.5, 400)])
async def test_post_with_bad_amount_is_rejected(client, tenant, amount, status):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    r = await settle(client, tenant, held["id"], "post", {"amount": amount})
    code = "VALIDATION_ERROR" if status == 422 else "BAD_REQUEST"
    assert field_names(assert_error(r, status, code)) == ["amount"]
    assert await state(client, tenant, a, b) == before


async def test_post_with_unknown_field_is_400(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    r = await settle(client, tenant, held["id"], "post", {"posted_amount": 5})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["posted_amount"]
    assert await state(client, tenant, a, b) == before


async def test_void_with_a_body_field_is_400(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    r = await settle(client, tenant, held["id"], "void", {"amount": 5})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["amount"]
    assert await state(client, tenant, a, b) == before


async def test_post_with_body_of_wrong_content_type_is_415(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    headers = {**tenant.headers(), "Content-Type": "text/plain"}
    r = await client.post(f"{URL}/{held['id']}/post", content=b'{"amount": 1}', headers=headers)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("action", ["post", "void"])
@pytest.mark.parametrize("body", [b"\x0c", b"\x0b", b"\n\x0b "])
async def test_settling_with_a_body_of_non_json_whitespace_is_refused(client, tenant, action, body):
    """Form feed and vertical tab are not JSON whitespace, so the body is not
    empty: 400 as JSON, 415 without a JSON content type, and the hold stays."""
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    url = f"{URL}/{held['id']}/{action}"
    json_headers = {**tenant.headers(), "Content-Type": "application/json"}
    assert_error(await client.post(url, content=body, headers=json_headers), 400, "BAD_REQUEST")
    assert_error(
        await client.post(url, content=body, headers=tenant.headers()),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    assert await state(client, tenant, a, b) == before
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "pending"


async def test_a_key_given_twice_moves_nothing(client, tenant):
    """`{"amount": 1, "amount": 900}`: msgspec would take 900, a proxy that
    checked the body may have read 1. Refused with the key's path, on every
    money-moving body, and nothing changes."""
    w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, w, a, b)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    one = f'"debit_account_id": "{a}", "credit_account_id": "{b}", "currency": "USD"'
    item = f'{{{one}, "amount": 1}}'
    cases = [
        (URL, f'{{{one}, "amount": 1, "amount": 900}}', "amount"),
        (URL, f'{{{one}, "amount": 1, "metadata": {{"k": "1", "k": "2"}}}}', "metadata.k"),
        (URL, f'{{{one}, "amount": 1, "\\u0061mount": 900}}', "amount"),
        (BATCH_URL, f'{{"transfers": [{item}, {{{one}, "amount": 1, "amount": 900}}]}}',
         "transfers[1].amount"),
        (BATCH_URL, f'{{"atomic": true, "atomic": false, "transfers": [{item}]}}', "atomic"),
        (f"{URL}/{held['id']}/post", '{"amount": 1, "amount": 300}', "amount"),
    ]  # fmt: skip
    for url, body, field in cases:
        r = await client.post(url, content=body.encode(), headers=headers)
        error = assert_error(r, 400, "BAD_REQUEST")
        assert error["details"]["fields"] == [
            {"field": field, "message": "is given more than once"}
        ]
    assert await state(client, tenant, w, a, b) == before
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "pending"


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_with_a_body_of_json_whitespace_takes_the_defaults(client, tenant, action):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    r = await client.post(
        f"{URL}/{held['id']}/{action}", content=b"\r\n \t", headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == ("posted" if action == "post" else "voided")


async def test_void_releases_the_hold(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    data = await settled(client, tenant, held["id"], "void")
    assert data["status"] == "voided"
    assert data["posted_amount"] is None
    assert data["amount"] == 300
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    assert await get_transfer(client, tenant, held["id"]) == data


async def test_voided_funds_can_be_spent(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    held = await hold(client, tenant, a, b, 100)
    await settled(client, tenant, held["id"], "void")
    await moved(client, tenant, a, b, 100)
    assert await balance(client, tenant, a) == bal(0, 0, 0)


@pytest.mark.parametrize(
    ("first", "second"),
    [("post", "post"), ("post", "void"), ("void", "void"), ("void", "post")],
)
async def test_settled_hold_cannot_be_settled_again(client, tenant, first, second):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    await settled(client, tenant, held["id"], first)
    before = await state(client, tenant, a, b)
    assert_error(await settle(client, tenant, held["id"], second), 422, "TRANSFER_NOT_PENDING")
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("action", ["post", "void"])
async def test_posted_transfer_is_not_pending(client, tenant, action):
    _w, a, b = await funded(client, tenant)
    created = await moved(client, tenant, a, b, 10)
    before = await state(client, tenant, a, b)
    assert_error(await settle(client, tenant, created["id"], action), 422, "TRANSFER_NOT_PENDING")
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_an_unknown_transfer_is_404(client, tenant, action):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await settle(client, tenant, str(uuid.uuid4()), action)
    assert_error(r, 404, "NOT_FOUND")
    assert await state(client, tenant, a, b) == before


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_another_tenants_hold_is_404(client, tenant, other_tenant, action):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    before = await state(client, tenant, a, b)
    r = await settle(client, other_tenant, held["id"], action)
    assert_error(r, 404, "NOT_FOUND")
    assert await state(client, tenant, a, b) == before
    assert await events(other_tenant) == []


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_with_a_bad_id_is_400(client, tenant, action):
    r = await settle(client, tenant, "not-a-uuid", action)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["id"]


async def test_concurrent_post_and_void_exactly_one_wins(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    posted, voided = await asyncio.gather(
        settle(client, tenant, held["id"], "post"), settle(client, tenant, held["id"], "void")
    )
    assert sorted([posted.status_code, voided.status_code]) == [200, 422]
    final = await get_transfer(client, tenant, held["id"])
    if posted.status_code == 200:
        assert_error(voided, 422, "TRANSFER_NOT_PENDING")
        assert final["status"] == "posted"
        assert await balance(client, tenant, a) == bal(700, 0, 700)
        assert await balance(client, tenant, b) == bal(300, 0, 300)
    else:
        assert_error(posted, 422, "TRANSFER_NOT_PENDING")
        assert final["status"] == "voided"
        assert await balance(client, tenant, a) == bal(1000, 0, 1000)
        assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_many_concurrent_posts_post_once(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    results = await asyncio.gather(*(settle(client, tenant, held["id"], "post") for _ in range(8)))
    assert sorted(r.status_code for r in results) == [200] + [422] * 7
    assert await balance(client, tenant, a) == bal(700, 0, 700)
    assert await balance(client, tenant, b) == bal(300, 0, 300)


# --- expiry --------------------------------------------------------------------------


async def test_hold_expires_after_its_timeout(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=1)
    assert await balance(client, tenant, a) == bal(1000, -300, 700)
    await asyncio.sleep(1.2)
    await maintenance.expire_due(tenant.app.state.transfers)
    data = await get_transfer(client, tenant, held["id"])
    assert data["status"] == "expired"
    assert data["posted_amount"] is None
    assert parse_time(data["updated_at"]) >= parse_time(held["expires_at"])
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_hold_is_not_expired_before_its_time(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await maintenance.expire_due(tenant.app.state.transfers)
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "pending"
    assert await balance(client, tenant, a) == bal(1000, -300, 700)


async def test_hold_without_timeout_never_expires(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    await maintenance.expire_due(tenant.app.state.transfers)
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "pending"


async def test_expiry_releases_the_hold_exactly_once(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    engine = tenant.app.state.transfers
    await asyncio.gather(*(maintenance.expire_due(engine) for _ in range(3)))
    await maintenance.expire_due(engine)
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "expired"
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    kinds = sorted(k for _, k in await entry_kinds(tenant, held["id"]))
    assert kinds == ["expire", "expire", "pending", "pending"]
    assert [t for _, t, d in await events(tenant) if d.get("id") == held["id"]] == [
        "transfer.pending",
        "transfer.expired",
    ]


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_an_expired_hold_is_not_pending(client, tenant, action):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    await maintenance.expire_due(tenant.app.state.transfers)
    before = await state(client, tenant, a, b)
    assert_error(await settle(client, tenant, held["id"], action), 422, "TRANSFER_NOT_PENDING")
    assert await state(client, tenant, a, b) == before
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)


@pytest.mark.parametrize("action", ["post", "void"])
async def test_settling_a_due_hold_before_the_sweep_expires_it(client, tenant, action):
    # Past expires_at the hold is expired, even if no sweep has run yet.
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    assert_error(await settle(client, tenant, held["id"], action), 422, "TRANSFER_NOT_PENDING")
    await maintenance.expire_due(tenant.app.state.transfers)
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "expired"
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    kinds = sorted(k for _, k in await entry_kinds(tenant, held["id"]))
    assert kinds == ["expire", "expire", "pending", "pending"]


async def test_post_racing_a_due_expiry_loses(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    engine = tenant.app.state.transfers
    r, _, v = await asyncio.gather(
        settle(client, tenant, held["id"], "post"),
        maintenance.expire_due(engine),
        settle(client, tenant, held["id"], "void"),
    )
    assert_error(r, 422, "TRANSFER_NOT_PENDING")
    assert_error(v, 422, "TRANSFER_NOT_PENDING")
    assert (await get_transfer(client, tenant, held["id"]))["status"] == "expired"
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    assert len(await entry_kinds(tenant, held["id"])) == 4


async def test_post_racing_expiry_exactly_one_wins(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await sql(
        tenant,
        "UPDATE transfers SET expires_at = clock_timestamp() + interval '100 milliseconds'"
        " WHERE tenant_id = %s AND id = %s",
        tenant.tenant_id,
        uuid.UUID(held["id"]),
    )
    await asyncio.sleep(0.1)
    engine = tenant.app.state.transfers
    r, _ = await asyncio.gather(
        settle(client, tenant, held["id"], "post"), maintenance.expire_due(engine)
    )
    await asyncio.sleep(0.05)
    await maintenance.expire_due(engine)
    final = await get_transfer(client, tenant, held["id"])
    if r.status_code == 200:
        assert final["status"] == "posted"
        assert await balance(client, tenant, a) == bal(700, 0, 700)
        assert await balance(client, tenant, b) == bal(300, 0, 300)
    else:
        assert_error(r, 422, "TRANSFER_NOT_PENDING")
        assert final["status"] == "expired"
        assert await balance(client, tenant, a) == bal(1000, 0, 1000)
        assert await balance(client, tenant, b) == bal(0, 0, 0)
    assert len(await entry_kinds(tenant, held["id"])) == 4


async def test_expired_funds_can_be_spent(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    held = await hold(client, tenant, a, b, 100, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    await maintenance.expire_due(tenant.app.state.transfers)
    await moved(client, tenant, a, b, 100)
    assert await balance(client, tenant, a) == bal(0, 0, 0)


async def test_expired_hold_lets_the_account_close(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    held = await hold(client, tenant, w, b, 100, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    await maintenance.expire_due(tenant.app.state.transfers)
    assert (await set_status(client, tenant, b, "closed")).status_code == 200


# --- GET /api/transfers/{id} -------------------------------------------------------


async def test_get_unknown_transfer_is_404(client, tenant):
    r = await client.get(f"{URL}/{uuid.uuid4()}", headers=tenant.headers())
    assert_error(r, 404, "NOT_FOUND")


async def test_get_other_tenants_transfer_is_404(client, tenant, other_tenant):
    _w, a, b = await funded(client, tenant)
    created = await moved(client, tenant, a, b, 10, description="secret")
    r = await client.get(f"{URL}/{created['id']}", headers=other_tenant.headers())
    error = assert_error(r, 404, "NOT_FOUND")
    assert error["details"] == {}
    assert "secret" not in r.text


@pytest.mark.parametrize("bad_id", ["abc", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
async def test_get_with_bad_id_is_400(client, tenant, bad_id):
    r = await client.get(f"{URL}/{bad_id}", headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["id"]


# --- GET /api/transfers ---------------------------------------------------------------


async def test_list_is_newest_first_with_meta(client, tenant):
    _w, a, b = await funded(client, tenant)
    ids = [(await moved(client, tenant, a, b, i + 1))["id"] for i in range(3)]
    r = await client.get(URL, headers=tenant.headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "meta"}
    assert body["meta"] == {"limit": 50, "has_more": False, "next_cursor": None}
    listed_ids = [t["id"] for t in body["data"]]
    assert listed_ids[:3] == ids[::-1]
    assert len(listed_ids) == 4  # and the funding transfer
    assert body["data"][0] == await get_transfer(client, tenant, ids[-1])


async def test_list_of_a_new_tenant_is_empty(client, tenant):
    r = await client.get(URL, headers=tenant.headers())
    assert r.status_code == 200
    assert r.json() == {"data": [], "meta": {"limit": 50, "has_more": False, "next_cursor": None}}


async def test_list_filters_by_account_on_either_side(client, tenant):
    w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    ab = (await moved(client, tenant, a, b, 1))["id"]
    bc = (await moved(client, tenant, b, c, 1))["id"]
    ca = (await moved(client, tenant, c, a, 1))["id"]
    funding = (await listed(client, tenant, account_id=w))[0]
    assert await listed(client, tenant, account_id=a) == [ca, ab, funding]
    assert await listed(client, tenant, account_id=b) == [bc, ab]
    assert await listed(client, tenant, account_id=c) == [ca, bc]


async def test_list_filter_by_unknown_account_is_empty(client, tenant):
    await funded(client, tenant)
    assert await listed(client, tenant, account_id=str(uuid.uuid4())) == []


async def test_list_filters_by_status(client, tenant):
    _w, a, b = await funded(client, tenant)
    p = (await hold(client, tenant, a, b, 1))["id"]
    v = (await hold(client, tenant, a, b, 1))["id"]
    e = (await hold(client, tenant, a, b, 1, timeout_seconds=3600))["id"]
    await settled(client, tenant, v, "void")
    await expire_now(tenant, e)
    await maintenance.expire_due(tenant.app.state.transfers)
    posted = await listed(client, tenant, status="posted")
    assert len(posted) == 1  # the funding transfer
    assert await listed(client, tenant, status="pending") == [p]
    assert await listed(client, tenant, status="voided") == [v]
    assert await listed(client, tenant, status="expired") == [e]


async def test_list_filters_by_status_and_account_together(client, tenant):
    _w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    hb = (await hold(client, tenant, a, b, 1))["id"]
    await hold(client, tenant, a, c, 1)
    await moved(client, tenant, a, b, 1)
    assert await listed(client, tenant, status="pending", account_id=b) == [hb]


async def test_list_filters_by_created_time(client, tenant):
    _w, a, b = await funded(client, tenant)
    made = [await moved(client, tenant, a, b, i + 1) for i in range(4)]
    ids = [t["id"] for t in made]
    middle = made[1]["created_at"]
    assert await listed(client, tenant, **{"from": middle}) == ids[:0:-1]
    later = await listed(client, tenant, to=middle)
    assert ids[0] in later and ids[1] not in later and len(later) == 2
    between = await listed(client, tenant, **{"from": middle, "to": made[3]["created_at"]})
    assert between == [ids[2], ids[1]]


async def test_list_time_filter_with_offset_is_the_same_instant(client, tenant):
    _w, a, b = await funded(client, tenant)
    made = [await moved(client, tenant, a, b, i + 1) for i in range(2)]
    instant = parse_time(made[1]["created_at"]).astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+02:00").tzinfo
    )
    assert await listed(client, tenant, **{"from": instant.isoformat()}) == [made[1]["id"]]


async def test_list_pagination_walks_every_transfer_once(client, tenant):
    _w, a, b = await funded(client, tenant)
    for i in range(6):
        await moved(client, tenant, a, b, i + 1)
    everything = await listed(client, tenant)
    assert len(everything) == 7
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(URL, params=params, headers=tenant.headers())
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += [t["id"] for t in body["data"]]
        assert body["meta"]["limit"] == 2
        if not body["meta"]["has_more"]:
            assert body["meta"]["next_cursor"] is None
            break
        assert len(body["data"]) == 2
        cursor = body["meta"]["next_cursor"]
        assert isinstance(cursor, str) and cursor
    assert seen == everything
    assert pages == 4


async def test_list_pagination_with_account_filter(client, tenant):
    _w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    for i in range(5):
        await moved(client, tenant, a, b if i % 2 else c, 1)
    everything = await listed(client, tenant, account_id=b)
    assert len(everything) == 2
    r = await client.get(URL, params={"limit": 1, "account_id": b}, headers=tenant.headers())
    first = r.json()
    assert first["meta"]["has_more"] is True
    r = await client.get(
        URL,
        params={"limit": 1, "account_id": b, "cursor": first["meta"]["next_cursor"]},
        headers=tenant.headers(),
    )
    second = r.json()
    assert second["meta"]["has_more"] is False
    assert [t["id"] for t in first["data"] + second["data"]] == everything


async def test_list_exact_page_has_no_more(client, tenant):
    _w, a, b = await funded(client, tenant)
    await moved(client, tenant, a, b, 1)
    r = await client.get(URL, params={"limit": 2}, headers=tenant.headers())
    assert r.json()["meta"] == {"limit": 2, "has_more": False, "next_cursor": None}


async def test_list_shows_only_my_tenants_transfers(client, tenant, other_tenant):
    _w, a, _b = await funded(client, tenant)
    _ow, _oa, _ob = await funded(client, other_tenant)
    mine = await listed(client, tenant)
    theirs = await listed(client, other_tenant)
    assert len(mine) == len(theirs) == 1
    assert not set(mine) & set(theirs)
    assert await listed(client, other_tenant, account_id=a) == []


async def test_cursor_of_other_tenant_reveals_nothing(client, tenant, other_tenant):
    _w, a, b = await funded(client, tenant)
    await moved(client, tenant, a, b, 1)
    r = await client.get(URL, params={"limit": 1}, headers=tenant.headers())
    cursor = r.json()["meta"]["next_cursor"]
    r = await client.get(URL, params={"cursor": cursor}, headers=other_tenant.headers())
    assert r.status_code == 200
    assert r.json()["data"] == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "done"),
        ("status", "POSTED"),
        ("account_id", "nope"),
        ("from", "yesterday"),
        ("from", "2026-01-01T00:00:00"),
        ("to", "2026-13-01T00:00:00Z"),
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "x"),
        ("cursor", "bogus"),
    ],
)
async def test_list_bad_parameter_is_400(client, tenant, name, value):
    r = await client.get(URL, params={name: value}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == [name]


async def test_list_unknown_parameter_is_400(client, tenant):
    r = await client.get(URL, params={"currency": "USD"}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["currency"]


# --- POST /api/transfers/batch --------------------------------------------------------


async def batch(client, tenant, items: list[dict], atomic: bool | None = None):
    body: dict[str, Any] = {"transfers": items}
    if atomic is not None:
        body["atomic"] = atomic
    return await client.post(BATCH_URL, json=body, headers=tenant.headers())


async def test_atomic_batch_applies_every_transfer(client, tenant):
    _w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    items = [body_of(a, b, 100), body_of(a, c, 200, pending=True), body_of(b, c, 50)]
    r = await batch(client, tenant, items, atomic=True)
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert [t["status"] for t in data] == ["posted", "pending", "posted"]
    assert [(t["debit_account_id"], t["credit_account_id"], t["amount"]) for t in data] == [
        (a, b, 100),
        (a, c, 200),
        (b, c, 50),
    ]
    assert len({t["id"] for t in data}) == 3
    for t in data:
        assert set(t) == TRANSFER_FIELDS
        assert await get_transfer(client, tenant, t["id"]) == t
    assert await balance(client, tenant, a) == bal(900, -200, 700)
    assert await balance(client, tenant, b) == bal(50, 0, 50)
    assert await balance(client, tenant, c) == bal(50, 200, 50)


async def test_batch_is_atomic_by_default(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    before = await state(client, tenant, a, b)
    r = await batch(client, tenant, [body_of(a, b, 60), body_of(a, b, 60)])
    error = assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert error["details"]["index"] == 1
    assert await state(client, tenant, a, b) == before


async def test_atomic_batch_items_see_earlier_items(client, tenant):
    w, a, b = await funded(client, tenant, 0)
    r = await batch(client, tenant, [body_of(w, a, 100), body_of(a, b, 100)], atomic=True)
    assert r.status_code == 201, r.text
    assert await balance(client, tenant, a) == bal(0, 0, 0)
    assert await balance(client, tenant, b) == bal(100, 0, 100)


@pytest.mark.parametrize(
    ("index", "code"),
    [(0, "INSUFFICIENT_FUNDS"), (2, "INSUFFICIENT_FUNDS"), (1, "ACCOUNT_NOT_FOUND")],
)
async def test_atomic_batch_failure_names_the_index_and_applies_nothing(
    client, tenant, index, code
):
    w, a, b = await funded(client, tenant, 100)
    items = [body_of(w, b, 5), body_of(w, b, 6), body_of(w, b, 7)]
    if code == "INSUFFICIENT_FUNDS":
        items[index] = body_of(a, b, 101)
    else:
        items[index] = body_of(w, str(uuid.uuid4()), 1)
    before = await state(client, tenant, w, a, b)
    r = await batch(client, tenant, items, atomic=True)
    error = assert_error(r, 422, code)
    assert error["details"]["index"] == index
    assert await state(client, tenant, w, a, b) == before


@pytest.mark.parametrize(
    "code", ["CURRENCY_MISMATCH", "ACCOUNT_NOT_ACTIVE", "ACCOUNT_NOT_FOUND", "BALANCE_OVERFLOW"]
)
async def test_atomic_batch_reports_each_rule(client, tenant, other_tenant, code):
    w, a, b = await funded(client, tenant)
    bad = {
        "CURRENCY_MISMATCH": lambda: body_of(a, b, 1, currency="EUR"),
        "ACCOUNT_NOT_FOUND": lambda: body_of(a, other, 1),
        "ACCOUNT_NOT_ACTIVE": lambda: body_of(a, closed, 1),
        "BALANCE_OVERFLOW": lambda: body_of(w, b, INT64_MAX),
    }
    other = await open_account(client, other_tenant)
    closed = await open_account(client, tenant, name="closed")
    assert (await set_status(client, tenant, closed, "closed")).status_code == 200
    before = await state(client, tenant, w, a, b)
    r = await batch(client, tenant, [body_of(a, b, 1), bad[code]()], atomic=True)
    assert assert_error(r, 422, code)["details"]["index"] == 1
    assert await state(client, tenant, w, a, b) == before


async def test_atomic_batch_with_same_account_names_the_index(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = await state(client, tenant, a, b)
    r = await batch(client, tenant, [body_of(a, b, 1), body_of(a, a, 1)], atomic=True)
    error = assert_error(r, 422, "SAME_ACCOUNT")
    assert error["details"].get("index") == 1, error
    assert await state(client, tenant, a, b) == before


async def test_non_atomic_batch_reports_each_item_in_order(client, tenant):
    _w, a, b = await funded(client, tenant, 100)
    items = [body_of(a, b, 60), body_of(a, b, 60), body_of(a, b, 40, pending=True)]
    r = await batch(client, tenant, items, atomic=False)
    assert r.status_code == 200, r.text
    results = r.json()["data"]
    assert [x["status"] for x in results] == [201, 422, 201]
    assert set(results[0]) == {"status", "data"}
    assert set(results[1]) == {"status", "error"}
    error = results[1]["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "INSUFFICIENT_FUNDS"
    assert results[0]["data"]["status"] == "posted"
    assert results[2]["data"]["status"] == "pending"
    for x in (results[0], results[2]):
        assert await get_transfer(client, tenant, x["data"]["id"]) == x["data"]
    assert await balance(client, tenant, a) == bal(40, -40, 0)
    assert await balance(client, tenant, b) == bal(60, 40, 60)
    assert len(await listed(client, tenant)) == 3


async def test_non_atomic_batch_with_every_item_failing_changes_nothing(client, tenant):
    _w, a, b = await funded(client, tenant, 0)
    before = await state(client, tenant, a, b)
    items = [body_of(a, b, 1), body_of(a, str(uuid.uuid4()), 1), body_of(a, b, 1, currency="EUR")]
    r = await batch(client, tenant, items, atomic=False)
    assert r.status_code == 200, r.text
    codes = [(x["status"], x["error"]["code"]) for x in r.json()["data"]]
    assert codes == [
        (422, "INSUFFICIENT_FUNDS"),
        (422, "ACCOUNT_NOT_FOUND"),
        (422, "CURRENCY_MISMATCH"),
    ]
    assert await state(client, tenant, a, b) == before


async def test_non_atomic_batch_with_same_account_item_applies_the_others(client, tenant):
    _w, a, b = await funded(client, tenant)
    items = [body_of(a, b, 1), body_of(a, a, 1), body_of(a, b, 2)]
    r = await batch(client, tenant, items, atomic=False)
    assert r.status_code == 200, r.text
    results = r.json()["data"]
    assert [x["status"] for x in results] == [201, 422, 201]
    assert results[1]["error"]["code"] == "SAME_ACCOUNT"
    assert await balance(client, tenant, b) == bal(3, 0, 3)


async def test_batch_of_1000_over_64_kib_is_accepted(client, tenant):
    w = await world(client, tenant)
    b = await open_account(client, tenant)
    items = [body_of(w, b, 1, description="x" * 80) for _ in range(1000)]
    content = json.dumps({"transfers": items, "atomic": True}).encode()
    assert 64 * 1024 < len(content) < 2 * 1024 * 1024
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    r = await client.post(BATCH_URL, content=content, headers=headers)
    assert r.status_code == 201, r.text
    assert len(r.json()["data"]) == 1000
    assert await balance(client, tenant, b) == bal(1000, 0, 1000)
    assert await balance(client, tenant, w) == bal(-1000, 0, -1000)


async def test_batch_of_1001_is_422(client, tenant):
    w, _a, b = await funded(client, tenant)
    before = await state(client, tenant, w, b)
    r = await batch(client, tenant, [body_of(w, b, 1)] * 1001)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["transfers"]
    assert await state(client, tenant, w, b) == before


async def test_empty_batch_is_422(client, tenant):
    r = await batch(client, tenant, [])
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["transfers"]
    assert await listed(client, tenant) == []


async def test_batch_without_transfers_is_422(client, tenant):
    r = await client.post(BATCH_URL, json={"atomic": True}, headers=tenant.headers())
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["transfers"]


async def test_batch_over_2_mib_is_413(client, tenant):
    w, _a, b = await funded(client, tenant)
    before = await state(client, tenant, w, b)
    content = json.dumps({"transfers": [body_of(w, b, 1)]}).encode() + b" " * (2 * 1024 * 1024)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    r = await client.post(BATCH_URL, content=content, headers=headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await state(client, tenant, w, b) == before


@pytest.mark.parametrize("atomic", [True, False])
async def test_batch_item_failing_validation_rejects_the_whole_batch(client, tenant, atomic):
    w, _a, b = await funded(client, tenant)
    before = await state(client, tenant, w, b)
    r = await batch(client, tenant, [body_of(w, b, 1), body_of(w, b, 0)], atomic=atomic)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["transfers[1].amount"]
    assert await state(client, tenant, w, b) == before


async def test_batch_reports_every_failing_item(client, tenant):
    w, _a, b = await funded(client, tenant)
    before = await state(client, tenant, w, b)
    items = [body_of(w, b, 0), body_of(w, b, 1), body_of(w, b, -1)]
    r = await batch(client, tenant, items)
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert sorted(field_names(error)) == ["transfers[0].amount", "transfers[2].amount"]
    assert await state(client, tenant, w, b) == before


async def test_batch_item_timeout_without_pending_is_422(client, tenant):
    w, _a, b = await funded(client, tenant)
    before = await state(client, tenant, w, b)
    r = await batch(client, tenant, [body_of(w, b, 1, timeout_seconds=5)], atomic=False)
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert field_names(error) == ["transfers[0].timeout_seconds"]
    assert await state(client, tenant, w, b) == before


@pytest.mark.parametrize("body", [{"transfers": [], "extra": 1}, {"transfers": {}}, []])
async def test_malformed_batch_is_400(client, tenant, body):
    r = await client.post(BATCH_URL, json=body, headers=tenant.headers())
    assert_error(r, 400, "BAD_REQUEST")


async def test_failed_atomic_batch_does_not_disturb_requests_committed_with_it(
    client, tenant, other_tenant
):
    """A failed atomic batch in the same group commit as other requests leaves
    their outcomes alone (each request is decided on its own)."""
    w, a, b = await funded(client, tenant, 100)
    ow = await world(client, other_tenant)
    ob = await open_account(client, other_tenant)
    db = tenant.app.state.db
    # Hold the other tenant's counter so its transfer's batch waits in the
    # database while ours queue up behind it and commit together.
    async with db.connection() as locker, locker.transaction():
        await locker.execute(
            "SELECT 1 FROM tenants WHERE id = %s FOR UPDATE", (other_tenant.tenant_id,)
        )
        blocker = asyncio.ensure_future(moved(client, other_tenant, ow, ob, 1))
        for _ in range(200):
            await asyncio.sleep(0.01)
            cur = await locker.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if (await cur.fetchone())[0]:
                break
        failing = asyncio.ensure_future(
            batch(client, tenant, [body_of(w, b, 5), body_of(a, b, 101)], atomic=True)
        )
        await asyncio.sleep(0.05)
        mixed = asyncio.ensure_future(
            batch(
                client,
                tenant,
                [body_of(w, b, 7), body_of(a, b, 1000), body_of(w, b, 11)],
                atomic=False,
            )
        )
        await asyncio.sleep(0.1)
    await blocker
    r_failing, r_mixed = await failing, await mixed
    error = assert_error(r_failing, 422, "INSUFFICIENT_FUNDS")
    assert error["details"]["index"] == 1
    assert r_mixed.status_code == 200, r_mixed.text
    results = r_mixed.json()["data"]
    assert [x["status"] for x in results] == [201, 422, 201], results
    assert results[1]["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert await balance(client, tenant, b) == bal(18, 0, 18)
    assert await balance(client, tenant, a) == bal(100, 0, 100)


# --- events (the outbox) ---------------------------------------------------------------


async def test_events_for_a_transfer_lifecycle(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300)
    posted = await settled(client, tenant, held["id"], "post", {"amount": 100})
    held2 = await hold(client, tenant, a, b, 5)
    voided = await settled(client, tenant, held2["id"], "void")
    got = await events(tenant)
    assert [seq for seq, _, _ in got] == list(range(1, len(got) + 1))
    assert [kind for _, kind, _ in got] == [
        "account.created",
        "account.created",
        "account.created",
        "transfer.posted",
        "transfer.pending",
        "transfer.posted",
        "transfer.pending",
        "transfer.voided",
    ]
    assert got[4][2] == held
    assert got[5][2] == posted
    assert got[6][2] == held2
    assert got[7][2] == voided


async def test_account_created_event_carries_the_account(client, tenant):
    r = await client.post(
        ACCOUNTS,
        json={"name": "Evented", "currency": "EUR", "overdraft_limit": 5, "metadata": {"k": "v"}},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    [(seq, kind, data)] = await events(tenant)
    assert (seq, kind) == (1, "account.created")
    assert data == r.json()["data"]


async def test_transfer_event_carries_the_transfer(client, tenant):
    w, a, _b = await funded(client, tenant, 0)
    created = await moved(client, tenant, w, a, 42, description="d", metadata={"k": "v"})
    _seq, kind, data = (await events(tenant))[-1]
    assert kind == "transfer.posted"
    assert data == created


async def test_expiry_event_carries_the_expired_transfer(client, tenant):
    _w, a, b = await funded(client, tenant)
    held = await hold(client, tenant, a, b, 300, timeout_seconds=3600)
    await expire_now(tenant, held["id"])
    await maintenance.expire_due(tenant.app.state.transfers)
    _seq, kind, data = (await events(tenant))[-1]
    assert kind == "transfer.expired"
    assert data == await get_transfer(client, tenant, held["id"])
    assert data["status"] == "expired"


async def test_account_events_and_transfer_events_share_one_sequence(client, tenant):
    _w, a, b = await funded(client, tenant)
    r = await client.patch(f"{ACCOUNTS}/{a}", json={"name": "renamed"}, headers=tenant.headers())
    assert r.status_code == 200
    await moved(client, tenant, a, b, 1)
    got = await events(tenant)
    assert [seq for seq, _, _ in got] == list(range(1, 7))
    assert [kind for _, kind, _ in got][-3:] == [
        "transfer.posted",
        "account.updated",
        "transfer.posted",
    ]
    assert got[4][2]["name"] == "renamed"


async def test_rejected_transfers_write_no_events(client, tenant):
    _w, a, b = await funded(client, tenant, 10)
    before = await events(tenant)
    assert_error(await move(client, tenant, a, b, 11), 422, "INSUFFICIENT_FUNDS")
    assert_error(await settle(client, tenant, str(uuid.uuid4()), "post"), 404, "NOT_FOUND")
    r = await batch(client, tenant, [body_of(a, b, 5), body_of(a, b, 6)], atomic=True)
    assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert await events(tenant) == before


async def test_batch_writes_one_event_per_transfer(client, tenant):
    _w, a, b = await funded(client, tenant)
    before = len(await events(tenant))
    r = await batch(client, tenant, [body_of(a, b, 1), body_of(a, b, 2, pending=True)])
    assert r.status_code == 201
    got = await events(tenant)
    assert [kind for _, kind, _ in got[before:]] == ["transfer.posted", "transfer.pending"]
    assert [d for _, _, d in got[before:]] == r.json()["data"]


async def test_concurrent_writes_keep_the_sequence_gapless_and_in_commit_order(client, tenant):
    w, _a, b = await funded(client, tenant)
    writes = [moved(client, tenant, w, b, i + 1) for i in range(20)]
    writes += [
        client.patch(f"{ACCOUNTS}/{b}", json={"metadata": {f"k{i}": "v"}}, headers=tenant.headers())
        for i in range(5)
    ]
    writes += [open_account(client, tenant) for _ in range(5)]
    await asyncio.gather(*writes)
    got = await events(tenant)
    assert [seq for seq, _, _ in got] == list(range(1, 4 + 30 + 1))
    # Changes to one account are serialised by its row lock, so their commit
    # order shows in the account's version and in its entries' order.
    versions = [d["version"] for _, kind, d in got if kind == "account.updated"]
    assert versions == [2, 3, 4, 5, 6]
    posted = [d["id"] for _, kind, d in got[4:] if kind == "transfer.posted"]
    rows = await sql(
        tenant,
        "SELECT transfer_id FROM entries WHERE tenant_id = %s AND account_id = %s ORDER BY id",
        tenant.tenant_id,
        uuid.UUID(b),
    )
    assert posted == [str(r[0]) for r in rows]
    assert len(posted) == 20


async def test_events_of_tenants_are_numbered_independently(client, tenant, other_tenant):
    await funded(client, tenant)
    await funded(client, other_tenant)
    for t in (tenant, other_tenant):
        assert [seq for seq, _, _ in await events(t)] == [1, 2, 3, 4]
