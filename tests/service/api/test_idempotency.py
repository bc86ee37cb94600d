"""Idempotency-Key on every transfer write: replay, reuse, in-flight, scope, expiry.

A key belongs to one API client. The same key with the same request replays
the first reply (status and body) with `Idempotent-Replayed: true`; with
another body or route it is 409 IDEMPOTENCY_KEY_REUSED; while the first
request is in flight it is 409 IDEMPOTENCY_KEY_IN_USE. Requests rejected
before any work store nothing, so the key stays free.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from service.auth import clients as client_service
from service.auth import scopes
from service.db import idempotency as idem_sql
from service.ledger import maintenance
from service.schemas import PostPending, TransferBatch, TransferCreate
from tests.conftest import serving
from tests.service.api.helpers import ACCOUNTS, assert_error, bal, open_account

URL = "/api/transfers"
BATCH_URL = f"{URL}/batch"


# --- helpers -----------------------------------------------------------------


def keyed(headers: dict[str, str], key: str | bytes) -> dict[str, Any]:
    return {**headers, "Idempotency-Key": key}


async def balance(client, tenant, account_id: str) -> dict[str, int]:
    r = await client.get(f"{ACCOUNTS}/{account_id}", headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()["data"]["balance"]


async def setup(client, tenant, funds: int = 1000) -> tuple[str, str, str]:
    """(world, a, b): world has no floor; a holds `funds`; b is empty."""
    w = await open_account(client, tenant, name="World", overdraft_limit=None)
    a = await open_account(client, tenant, name="A")
    b = await open_account(client, tenant, name="B")
    if funds:
        r = await client.post(URL, json=body_of(w, a, funds), headers=tenant.headers())
        assert r.status_code == 201, r.text
    return w, a, b


def body_of(debit: str, credit: str, amount: Any, **fields: Any) -> dict[str, Any]:
    return {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **fields,
    }


async def create(client, tenant, body: Any, key: str | bytes, headers=None) -> httpx.Response:
    return await client.post(URL, json=body, headers=keyed(headers or tenant.headers(), key))


async def listed(client, tenant) -> list[str]:
    r = await client.get(URL, params={"limit": 1000}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["data"]]


async def sql(tenant, query: str, *args: Any) -> list[tuple]:
    async with tenant.app.state.db.connection() as conn:
        cur = await conn.execute(query, args)
        return list(await cur.fetchall()) if cur.description else []


async def key_rows(tenant) -> list[tuple]:
    return await sql(
        tenant,
        "SELECT client_id, key, state, response_status FROM idempotency_keys"
        " WHERE tenant_id = %s ORDER BY key",
        tenant.tenant_id,
    )


async def event_count(tenant) -> int:
    rows = await sql(tenant, "SELECT count(*) FROM events WHERE tenant_id = %s", tenant.tenant_id)
    return rows[0][0]


def fingerprint(path: str, body: dict[str, Any], kind: type = TransferCreate) -> bytes:
    """The request hash the service stores (service/api/idempotency.py:_fingerprint)."""
    decoded = msgspec.json.decode(json.dumps(body).encode(), type=kind)
    return hashlib.sha256(path.encode() + b"\0" + msgspec.json.encode(decoded)).digest()


async def insert_claim(
    tenant, key: str, request_hash: bytes, lease: str = "60 seconds", age: str = "0 seconds"
) -> None:
    """An in-flight claim, as left by a request still running (or one that died)."""
    await sql(
        tenant,
        "INSERT INTO idempotency_keys"
        " (tenant_id, client_id, key, request_hash, state, locked_until, created_at)"
        " VALUES (%s, %s, %s, %s, 'in_flight', now() + %s::interval, now() - %s::interval)",
        tenant.tenant_id,
        tenant.client_id,
        key,
        request_hash,
        lease,
        age,
    )


def split_repeats(
    results: list[httpx.Response], status: int
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Concurrent repeats of one keyed request: (the one answer that did the work,
    the replays of it). Every other answer must be 409 IDEMPOTENCY_KEY_IN_USE."""
    originals = [
        r for r in results if r.status_code == status and "idempotent-replayed" not in r.headers
    ]
    assert len(originals) == 1, [r.status_code for r in results]
    replays = []
    for r in results:
        if r.status_code != status:
            assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
        elif r is not originals[0]:
            replays.append(r)
    return originals[0], replays


async def second_client(tenant) -> dict[str, str]:
    """Bearer headers of another API client of the same tenant."""
    new = await client_service.create_client(
        tenant.app.state.db, tenant.tenant_id, scopes.ALL, "second"
    )
    token = tenant.app.state.tokens.issue(new.client_id, tenant.tenant_id, scopes.ALL)
    return {"Authorization": f"Bearer {token}"}


# --- replay ---------------------------------------------------------------------


async def test_same_key_and_body_replays_the_original(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100, description="order 1")
    first = await create(client, tenant, body, "order-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await create(client, tenant, body, "order-1")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"].startswith("application/json")
    assert again.json() == first.json()
    assert again.content == first.content


async def test_replay_moves_money_once(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    events_before = await event_count(tenant)
    for _ in range(3):
        r = await create(client, tenant, body, "k")
        assert r.status_code == 201
    assert await balance(client, tenant, a) == bal(900, 0, 900)
    assert await balance(client, tenant, b) == bal(100, 0, 100)
    assert len(await listed(client, tenant)) == 2
    assert await event_count(tenant) == events_before + 1


async def test_completed_key_is_stored_as_done(client, tenant):
    _w, a, b = await setup(client, tenant)
    assert (await create(client, tenant, body_of(a, b, 1), "stored")).status_code == 201
    assert await key_rows(tenant) == [(tenant.client_id, "stored", "done", 201)]


async def test_replay_with_keys_in_another_order(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100, description="x")
    first = await create(client, tenant, body, "k")
    reordered = dict(reversed(list(body.items())))
    again = await create(client, tenant, reordered, "k")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_replay_returns_the_original_even_after_the_transfer_changed(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100, pending=True)
    first = await create(client, tenant, body, "hold-1")
    transfer_id = first.json()["data"]["id"]
    r = await client.post(f"{URL}/{transfer_id}/void", headers=tenant.headers())
    assert r.status_code == 200
    again = await create(client, tenant, body, "hold-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.json()["data"]["status"] == "pending"
    assert await balance(client, tenant, a) == bal(1000, 0, 1000)


async def test_business_rule_422_is_replayed(client, tenant):
    w, a, b = await setup(client, tenant, funds=50)
    body = body_of(a, b, 100)
    first = await create(client, tenant, body, "too-much")
    assert_error(first, 422, "INSUFFICIENT_FUNDS")
    assert "idempotent-replayed" not in first.headers
    # Even once the funds are there, the key keeps its first answer.
    r = await client.post(URL, json=body_of(w, a, 100), headers=tenant.headers())
    assert r.status_code == 201
    again = await create(client, tenant, body, "too-much")
    assert_error(again, 422, "INSUFFICIENT_FUNDS")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await balance(client, tenant, a) == bal(150, 0, 150)
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_post_of_a_hold_is_replayed_not_reapplied(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    url = f"{URL}/{held['id']}/post"
    first = await client.post(url, json={"amount": 100}, headers=keyed(tenant.headers(), "p"))
    assert first.status_code == 200, first.text
    again = await client.post(url, json={"amount": 100}, headers=keyed(tenant.headers(), "p"))
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await balance(client, tenant, a) == bal(900, 0, 900)
    assert await balance(client, tenant, b) == bal(100, 0, 100)


async def test_void_is_replayed(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    url = f"{URL}/{held['id']}/void"
    first = await client.post(url, headers=keyed(tenant.headers(), "v"))
    assert first.status_code == 200, first.text
    again = await client.post(url, headers=keyed(tenant.headers(), "v"))
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    # Without the key, a second void is refused as usual.
    assert_error(await client.post(url, headers=tenant.headers()), 422, "TRANSFER_NOT_PENDING")


async def test_404_of_an_unknown_hold_is_replayed(client, tenant):
    url = f"{URL}/{uuid.uuid4()}/post"
    first = await client.post(url, headers=keyed(tenant.headers(), "ghost"))
    assert_error(first, 404, "NOT_FOUND")
    again = await client.post(url, headers=keyed(tenant.headers(), "ghost"))
    assert_error(again, 404, "NOT_FOUND")
    assert again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("atomic", [True, False])
async def test_batch_is_replayed(client, tenant, atomic):
    _w, a, b = await setup(client, tenant)
    body = {"atomic": atomic, "transfers": [body_of(a, b, 10), body_of(a, b, 20)]}
    first = await client.post(BATCH_URL, json=body, headers=keyed(tenant.headers(), "batch"))
    assert first.status_code == (201 if atomic else 200), first.text
    again = await client.post(BATCH_URL, json=body, headers=keyed(tenant.headers(), "batch"))
    assert again.status_code == first.status_code
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await balance(client, tenant, b) == bal(30, 0, 30)


async def test_failed_atomic_batch_is_replayed(client, tenant):
    _w, a, b = await setup(client, tenant, funds=10)
    body = {"transfers": [body_of(a, b, 5), body_of(a, b, 6)]}
    first = await client.post(BATCH_URL, json=body, headers=keyed(tenant.headers(), "fb"))
    assert assert_error(first, 422, "INSUFFICIENT_FUNDS")["details"]["index"] == 1
    again = await client.post(BATCH_URL, json=body, headers=keyed(tenant.headers(), "fb"))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await balance(client, tenant, b) == bal(0, 0, 0)


# --- reuse with another request -------------------------------------------------


async def test_same_key_with_another_body_is_409_reused(client, tenant):
    _w, a, b = await setup(client, tenant)
    first = await create(client, tenant, body_of(a, b, 100), "k")
    assert first.status_code == 201
    r = await create(client, tenant, body_of(a, b, 101), "k")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert "idempotent-replayed" not in r.headers
    assert await balance(client, tenant, b) == bal(100, 0, 100)
    assert len(await listed(client, tenant)) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 1},
        {"description": "other"},
        {"metadata": {"k": "v"}},
        {"pending": True},
        {"currency": "EUR"},
    ],
)
async def test_any_change_of_the_body_is_409_reused(client, tenant, change):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    assert (await create(client, tenant, body, "k")).status_code == 201
    r = await create(client, tenant, {**body, **change}, "k")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, tenant, b) == bal(100, 0, 100)


async def test_same_key_on_another_route_is_409_reused(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "k")).json()["data"]
    r = await client.post(f"{URL}/{held['id']}/void", headers=keyed(tenant.headers(), "k"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    r = await client.post(f"{URL}/{held['id']}/post", headers=keyed(tenant.headers(), "k"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    r = await client.post(
        BATCH_URL,
        json={"transfers": [body_of(a, b, 300, pending=True)]},
        headers=keyed(tenant.headers(), "k"),
    )
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, tenant, a) == bal(1000, -300, 700)
    assert await balance(client, tenant, b) == bal(0, 300, 0)


async def test_same_key_for_another_hold_is_409_reused(client, tenant):
    _w, a, b = await setup(client, tenant)
    h1 = (await create(client, tenant, body_of(a, b, 1, pending=True), "h1")).json()["data"]
    h2 = (await create(client, tenant, body_of(a, b, 2, pending=True), "h2")).json()["data"]
    assert (
        await client.post(f"{URL}/{h1['id']}/void", headers=keyed(tenant.headers(), "v"))
    ).status_code == 200
    r = await client.post(f"{URL}/{h2['id']}/void", headers=keyed(tenant.headers(), "v"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, tenant, a) == bal(1000, -2, 998)


# --- scope of a key -----------------------------------------------------------------


async def test_another_client_of_the_tenant_may_reuse_the_key(client, tenant):
    _w, a, b = await setup(client, tenant)
    other = await second_client(tenant)
    assert (await create(client, tenant, body_of(a, b, 100), "shared")).status_code == 201
    r = await create(client, tenant, body_of(a, b, 5), "shared", headers=other)
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert await balance(client, tenant, b) == bal(105, 0, 105)


async def test_another_client_with_the_same_body_is_not_a_replay(client, tenant):
    _w, a, b = await setup(client, tenant)
    other = await second_client(tenant)
    body = body_of(a, b, 100)
    first = await create(client, tenant, body, "shared")
    second = await create(client, tenant, body, "shared", headers=other)
    assert second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.json()["data"]["id"] != first.json()["data"]["id"]
    assert await balance(client, tenant, b) == bal(200, 0, 200)


async def test_another_tenant_may_use_the_same_key(client, tenant, other_tenant):
    _w, a, b = await setup(client, tenant)
    _ow, oa, ob = await setup(client, other_tenant)
    assert (await create(client, tenant, body_of(a, b, 100), "k")).status_code == 201
    r = await create(client, other_tenant, body_of(oa, ob, 7), "k")
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert await balance(client, other_tenant, ob) == bal(7, 0, 7)


async def test_another_tenant_sending_my_key_and_body_gets_no_replay(client, tenant, other_tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    assert (await create(client, tenant, body, "k")).status_code == 201
    r = await create(client, other_tenant, body, "k")
    assert_error(r, 422, "ACCOUNT_NOT_FOUND")
    assert "idempotent-replayed" not in r.headers
    assert a not in r.text


# --- in flight ------------------------------------------------------------------------


async def test_in_flight_key_is_409_in_use(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    await insert_claim(tenant, "busy", fingerprint(URL, body))
    r = await create(client, tenant, body, "busy")
    assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert r.headers["retry-after"]
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    assert await key_rows(tenant) == [(tenant.client_id, "busy", "in_flight", None)]


async def test_in_flight_key_with_another_body_is_409_reused(client, tenant):
    _w, a, b = await setup(client, tenant)
    await insert_claim(tenant, "busy", fingerprint(URL, body_of(a, b, 1)))
    r = await create(client, tenant, body_of(a, b, 2), "busy")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_expired_claim_of_the_same_request_is_taken_over(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    await insert_claim(tenant, "stale", fingerprint(URL, body), lease="-1 seconds")
    r = await create(client, tenant, body, "stale")
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert await balance(client, tenant, b) == bal(100, 0, 100)
    assert await key_rows(tenant) == [(tenant.client_id, "stale", "done", 201)]
    again = await create(client, tenant, body, "stale")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == r.json()


async def test_expired_claim_of_another_request_is_409_reused(client, tenant):
    _w, a, b = await setup(client, tenant)
    await insert_claim(tenant, "stale", fingerprint(URL, body_of(a, b, 1)), lease="-1 seconds")
    r = await create(client, tenant, body_of(a, b, 2), "stale")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_in_flight_claim_of_a_post_is_409_in_use(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    path = f"{URL}/{held['id']}/post"
    await insert_claim(tenant, "posting", fingerprint(path, {"amount": 5}, PostPending))
    r = await client.post(path, json={"amount": 5}, headers=keyed(tenant.headers(), "posting"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert await balance(client, tenant, a) == bal(1000, -300, 700)


async def test_in_flight_claim_of_a_batch_is_409_in_use(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = {"atomic": True, "transfers": [body_of(a, b, 1)]}
    await insert_claim(tenant, "batching", fingerprint(BATCH_URL, body, TransferBatch))
    r = await client.post(BATCH_URL, json=body, headers=keyed(tenant.headers(), "batching"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_concurrent_duplicates_create_one_transfer(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    results = await asyncio.gather(*(create(client, tenant, body, "race") for _ in range(20)))
    originals = []
    for r in results:
        if r.status_code == 201:
            if r.headers.get("idempotent-replayed") != "true":
                originals.append(r)
        else:
            assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert len(originals) == 1
    created = originals[0].json()
    for r in results:
        if r.status_code == 201:
            assert r.json() == created
    assert await balance(client, tenant, a) == bal(900, 0, 900)
    assert await balance(client, tenant, b) == bal(100, 0, 100)
    assert len(await listed(client, tenant)) == 2


async def test_concurrent_duplicates_on_two_workers_create_one_transfer(client, tenant, settings):
    """Each worker has its own group commit: the key's advisory lock is what keeps
    a second worker from applying the same request while the first runs."""
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    async with serving(settings) as (_, other_worker):
        results = await asyncio.gather(*(
            create(http, tenant, body, "two-workers")
            for _ in range(10) for http in (client, other_worker)
        ))  # fmt: skip
    original, replays = split_repeats(results, 201)
    assert all(r.json() == original.json() for r in replays)
    assert await balance(client, tenant, b) == bal(100, 0, 100)
    assert await key_rows(tenant) == [(tenant.client_id, "two-workers", "done", 201)]


async def test_concurrent_posts_with_one_key_post_once(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    url = f"{URL}/{held['id']}/post"
    results = await asyncio.gather(
        *(client.post(url, headers=keyed(tenant.headers(), "p")) for _ in range(10))
    )
    split_repeats(results, 200)
    assert await balance(client, tenant, a) == bal(700, 0, 700)
    assert await balance(client, tenant, b) == bal(300, 0, 300)


# --- requests rejected before any work -----------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda b: {**b, "amount": 0}, 422, "VALIDATION_ERROR"),
        (lambda b: {**b, "amount": "100"}, 400, "BAD_REQUEST"),
        (lambda b: {**b, "timeout_seconds": 10}, 422, "VALIDATION_ERROR"),
        (lambda b: {**b, "surprise": 1}, 400, "BAD_REQUEST"),
        (lambda b: {k: v for k, v in b.items() if k != "currency"}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_invalid_request_stores_nothing_and_frees_the_key(
    client, tenant, mutate, status, code
):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 100)
    assert_error(await create(client, tenant, mutate(body), "k"), status, code)
    assert await key_rows(tenant) == []
    r = await create(client, tenant, body, "k")
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers


async def test_malformed_json_stores_nothing(client, tenant):
    _w, a, b = await setup(client, tenant)
    headers = {**keyed(tenant.headers(), "k"), "Content-Type": "application/json"}
    assert_error(await client.post(URL, content=b"{", headers=headers), 400, "BAD_REQUEST")
    headers["Content-Type"] = "text/plain"
    r = await client.post(URL, content=json.dumps(body_of(a, b, 1)).encode(), headers=headers)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await key_rows(tenant) == []
    assert (await create(client, tenant, body_of(a, b, 1), "k")).status_code == 201


async def test_forbidden_request_stores_nothing(client, tenant):
    _w, a, b = await setup(client, tenant)
    r = await create(client, tenant, body_of(a, b, 1), "k", headers=tenant.headers("ledger:read"))
    assert_error(r, 403, "FORBIDDEN")
    assert await key_rows(tenant) == []


async def test_invalid_post_body_stores_nothing(client, tenant):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    url = f"{URL}/{held['id']}/post"
    r = await client.post(url, json={"amount": 0}, headers=keyed(tenant.headers(), "p"))
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await client.post(url, json={"amount": 10}, headers=keyed(tenant.headers(), "p"))
    assert r.status_code == 200, r.text
    assert "idempotent-replayed" not in r.headers


async def test_invalid_batch_stores_nothing(client, tenant):
    _w, _a, _b = await setup(client, tenant)
    r = await client.post(BATCH_URL, json={"transfers": []}, headers=keyed(tenant.headers(), "b"))
    assert_error(r, 422, "VALIDATION_ERROR")
    assert await key_rows(tenant) == []


# --- key syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "k" * 256,
        "cl\u00e9".encode(),
        "\u4e2d".encode(),
        "a\x01b",
        "\x00",
        "a\tb",
        "a\x1fb",
        "a\x7fb",
    ],
    ids=["empty", "256-chars", "latin", "cjk", "soh", "nul", "tab", "us", "del"],
)
async def test_invalid_key_is_400_and_stores_nothing(client, tenant, key):
    _w, a, b = await setup(client, tenant)
    r = await create(client, tenant, body_of(a, b, 1), key)
    error = assert_error(r, 400, "BAD_REQUEST")
    assert [f["field"] for f in error["details"]["fields"]] == ["Idempotency-Key"]
    assert await key_rows(tenant) == []
    assert await balance(client, tenant, b) == bal(0, 0, 0)


async def test_key_with_trailing_newline_is_400(client, tenant):
    _w, a, b = await setup(client, tenant)
    r = await create(client, tenant, body_of(a, b, 1), "order-1\n")
    assert_error(r, 400, "BAD_REQUEST")
    assert await key_rows(tenant) == []
    assert await balance(client, tenant, b) == bal(0, 0, 0)


@pytest.mark.parametrize("keys", [["k1", "k2"], ["k1", "k1"]], ids=["different", "same"])
async def test_a_key_header_given_twice_is_400_and_stores_nothing(client, tenant, keys):
    """Two Idempotency-Key headers: which one guards the write would be a guess."""
    _w, a, b = await setup(client, tenant)
    headers = [*tenant.headers().items(), *(("Idempotency-Key", k) for k in keys)]
    r = await client.post(URL, json=body_of(a, b, 1), headers=headers)
    error = assert_error(r, 400, "BAD_REQUEST")
    assert error["details"]["fields"] == [
        {"field": "Idempotency-Key", "message": "must be given once"}
    ]
    assert await key_rows(tenant) == []
    assert await balance(client, tenant, b) == bal(0, 0, 0)
    r = await create(client, tenant, body_of(a, b, 1), keys[0])  # not claimed: works alone
    assert r.status_code == 201, r.text
    assert "Idempotent-Replayed" not in r.headers


@pytest.mark.parametrize("action", ["post", "void"])
async def test_invalid_key_on_settle_is_400(client, tenant, action):
    _w, a, b = await setup(client, tenant)
    held = (await create(client, tenant, body_of(a, b, 300, pending=True), "h")).json()["data"]
    r = await client.post(f"{URL}/{held['id']}/{action}", headers=keyed(tenant.headers(), ""))
    assert_error(r, 400, "BAD_REQUEST")
    assert await balance(client, tenant, a) == bal(1000, -300, 700)


async def test_invalid_key_on_batch_is_400(client, tenant):
    _w, a, b = await setup(client, tenant)
    r = await client.post(
        BATCH_URL,
        json={"transfers": [body_of(a, b, 1)]},
        headers=keyed(tenant.headers(), "k" * 256),
    )
    assert_error(r, 400, "BAD_REQUEST")
    assert await balance(client, tenant, b) == bal(0, 0, 0)


@pytest.mark.parametrize(
    "key", ["k" * 255, "a", " spaced key ", "~!@#$%^&*()_+{}|:<>?`-=[]\\;',./\""]
)
async def test_printable_ascii_keys_up_to_255_chars_work(client, tenant, key):
    _w, a, b = await setup(client, tenant)
    first = await create(client, tenant, body_of(a, b, 1), key)
    assert first.status_code == 201, first.text
    again = await create(client, tenant, body_of(a, b, 1), key)
    assert again.headers["idempotent-replayed"] == "true"
    assert await balance(client, tenant, b) == bal(1, 0, 1)


async def test_keys_are_case_sensitive(client, tenant):
    _w, a, b = await setup(client, tenant)
    assert (await create(client, tenant, body_of(a, b, 1), "Key")).status_code == 201
    r = await create(client, tenant, body_of(a, b, 2), "key")
    assert r.status_code == 201
    assert "idempotent-replayed" not in r.headers


# --- retention -----------------------------------------------------------------------------


async def test_purge_deletes_keys_past_the_retention(client, tenant):
    _w, a, b = await setup(client, tenant)
    assert (await create(client, tenant, body_of(a, b, 1), "old")).status_code == 201
    assert (await create(client, tenant, body_of(a, b, 1), "fresh")).status_code == 201
    await sql(
        tenant,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
        " WHERE tenant_id = %s AND key = 'old'",
        tenant.tenant_id,
    )
    await insert_claim(tenant, "old-dead", b"x", lease="-1 hours", age="25 hours")
    await insert_claim(tenant, "old-running", b"y", lease="60 seconds", age="25 hours")
    async with tenant.app.state.db.connection() as conn:
        purged = await idem_sql.purge(conn, 24 * 3600)
    assert purged >= 2
    assert [r[1] for r in await key_rows(tenant)] == ["fresh", "old-running"]
    # The purged key is free again: a new request under it does new work.
    r = await create(client, tenant, body_of(a, b, 5), "old")
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert await balance(client, tenant, b) == bal(7, 0, 7)


async def test_keys_within_the_retention_survive_a_purge(client, tenant):
    _w, a, b = await setup(client, tenant)
    body = body_of(a, b, 1)
    assert (await create(client, tenant, body, "recent")).status_code == 201
    await sql(
        tenant,
        "UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE tenant_id = %s",
        tenant.tenant_id,
    )
    await maintenance.purge_keys(tenant.app.state.transfers, 24 * 3600)
    again = await create(client, tenant, body, "recent")
    assert again.headers["idempotent-replayed"] == "true"
    assert await balance(client, tenant, b) == bal(1, 0, 1)
