"""Idempotency-Key on POST /api/accounts: a retried open never opens a second account.

The same key with the same request answers 201 with the account the key
opened, as it is now, with `Idempotent-Replayed: true`; another body or route
is 409 IDEMPOTENCY_KEY_REUSED; a key whose request still runs is 409
IDEMPOTENCY_KEY_IN_USE. What the key stores names the account and never
carries the holder's personal data.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from service.auth import scopes
from service.schemas import AccountCreate
from tests.conftest import serving
from tests.service.api.helpers import ACCOUNTS, assert_error
from tests.service.api.test_idempotency import (
    fingerprint,
    insert_claim,
    key_rows,
    keyed,
    second_client,
    split_repeats,
    sql,
)

HOLDER = {"name": "Ada Lovelace", "email": "ada@example.com"}


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "Wallet", "currency": "USD", **fields}


async def open_keyed(client, tenant, body: Any, key: str, headers=None) -> httpx.Response:
    return await client.post(ACCOUNTS, json=body, headers=keyed(headers or tenant.headers(), key))


async def account_ids(tenant) -> list[str]:
    rows = await sql(tenant, "SELECT id FROM accounts WHERE tenant_id = %s", tenant.tenant_id)
    return sorted(str(r[0]) for r in rows)


async def opened_events(tenant) -> int:
    rows = await sql(
        tenant,
        "SELECT count(*) FROM events WHERE tenant_id = %s AND type = 'account.created'",
        tenant.tenant_id,
    )
    return rows[0][0]


async def test_a_retry_answers_the_same_account_and_opens_nothing(client, tenant):
    first = await open_keyed(client, tenant, spec(metadata={"ref": "u-1"}), "open-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await open_keyed(client, tenant, spec(metadata={"ref": "u-1"}), "open-1")
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"]
    assert await account_ids(tenant) == [first.json()["data"]["id"]]
    assert await opened_events(tenant) == 1
    assert await key_rows(tenant) == [(tenant.client_id, "open-1", "done", 201)]


async def test_without_a_key_every_post_opens_an_account(client, tenant):
    for _ in range(2):
        r = await client.post(ACCOUNTS, json=spec(), headers=tenant.headers())
        assert r.status_code == 201, r.text
    assert len(await account_ids(tenant)) == 2
    assert await key_rows(tenant) == []


async def test_a_retry_shows_the_account_as_it_is_now(client, tenant):
    first = (await open_keyed(client, tenant, spec(), "open-2")).json()["data"]
    r = await client.patch(
        f"{ACCOUNTS}/{first['id']}", json={"name": "Renamed"}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    again = await open_keyed(client, tenant, spec(), "open-2")
    assert again.status_code == 201
    assert again.json()["data"]["id"] == first["id"]
    assert again.json()["data"]["name"] == "Renamed"
    assert again.headers["etag"] == f'"{first["version"] + 1}"'


async def test_the_stored_answer_never_holds_the_holder(client, tenant):
    body = spec(holder=HOLDER)
    first = await open_keyed(client, tenant, body, "pii-1")
    assert first.status_code == 201
    assert first.json()["data"]["holder"] == HOLDER  # every scope, pii:read included
    stored = await sql(
        tenant,
        "SELECT response_body FROM idempotency_keys WHERE tenant_id = %s AND key = 'pii-1'",
        tenant.tenant_id,
    )
    assert stored == [(f'{{"id":"{first.json()["data"]["id"]}"}}',)]
    # The replay reveals the holder to a token that may see it, and only to one.
    again = await open_keyed(client, tenant, body, "pii-1")
    assert again.json()["data"]["holder"] == HOLDER
    no_pii = tenant.headers(scopes.LEDGER_READ, scopes.LEDGER_WRITE)
    hidden = await open_keyed(client, tenant, body, "pii-1", no_pii)
    assert hidden.status_code == 201 and hidden.json()["data"]["holder"] is None
    assert len(await account_ids(tenant)) == 1


async def test_the_same_key_with_another_body_is_409_reused(client, tenant):
    first = await open_keyed(client, tenant, spec(), "open-3")
    assert first.status_code == 201
    r = await open_keyed(client, tenant, spec(currency="EUR"), "open-3")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert await account_ids(tenant) == [first.json()["data"]["id"]]


async def test_a_key_used_for_a_transfer_is_409_reused_on_accounts(client, tenant):
    w = (await open_keyed(client, tenant, spec(overdraft_limit=None), "w")).json()["data"]["id"]
    a = (await open_keyed(client, tenant, spec(), "a")).json()["data"]["id"]
    body = {"debit_account_id": w, "credit_account_id": a, "amount": 5, "currency": "USD"}
    moved = await client.post("/api/transfers", json=body, headers=keyed(tenant.headers(), "x"))
    assert moved.status_code == 201, moved.text
    r = await open_keyed(client, tenant, spec(), "x")
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    # And the other way round.
    r = await client.post("/api/transfers", json=body, headers=keyed(tenant.headers(), "a"))
    assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert len(await account_ids(tenant)) == 2


async def test_a_key_whose_request_still_runs_is_409_in_use(client, tenant):
    body = spec()
    await insert_claim(tenant, "busy", fingerprint(ACCOUNTS, body, AccountCreate))
    r = await open_keyed(client, tenant, body, "busy")
    assert_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert r.headers["retry-after"] == "1"
    assert await account_ids(tenant) == []
    assert await opened_events(tenant) == 0


async def test_keys_belong_to_one_api_client(client, tenant):
    mine = await open_keyed(client, tenant, spec(), "shared")
    theirs = await open_keyed(client, tenant, spec(), "shared", await second_client(tenant))
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["data"]["id"] != theirs.json()["data"]["id"]


async def test_a_bad_key_is_400_and_opens_nothing(client, tenant):
    for key in ("", "x" * 256, "tab\there"):
        r = await open_keyed(client, tenant, spec(), key)
        assert_error(r, 400, "BAD_REQUEST")
    assert await account_ids(tenant) == []
    assert await key_rows(tenant) == []


async def test_an_invalid_body_claims_nothing_so_a_fixed_retry_opens(client, tenant):
    r = await open_keyed(client, tenant, spec(currency="usd"), "fix-me")
    assert_error(r, 422, "VALIDATION_ERROR")
    assert await key_rows(tenant) == []
    r = await open_keyed(client, tenant, spec(), "fix-me")
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


async def test_a_failed_open_leaves_the_key_free(client, tenant):
    """The claim commits with the account or not at all: when the account's
    insert fails, a retry with the key runs anew."""
    await sql(tenant, "UPDATE tenants SET event_seq = 9223372036854775807 WHERE id = %s",
              tenant.tenant_id)  # fmt: skip
    failed = await open_keyed(client, tenant, spec(), "retry-me")
    assert failed.status_code >= 500, failed.text
    assert await key_rows(tenant) == [] and await account_ids(tenant) == []
    await sql(tenant, "UPDATE tenants SET event_seq = 0 WHERE id = %s", tenant.tenant_id)
    r = await open_keyed(client, tenant, spec(), "retry-me")
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert await account_ids(tenant) == [r.json()["data"]["id"]]


async def test_concurrent_retries_on_two_workers_open_one_account(client, tenant, settings):
    body = spec(holder=HOLDER)
    async with serving(settings) as (_, other_worker):
        results = await asyncio.gather(*(
            open_keyed(http, tenant, body, "race") for _ in range(8)
            for http in (client, other_worker)
        ))  # fmt: skip
    original, replays = split_repeats(results, 201)
    assert all(r.json()["data"]["id"] == original.json()["data"]["id"] for r in replays)
    assert len(await account_ids(tenant)) == 1
    assert await opened_events(tenant) == 1
