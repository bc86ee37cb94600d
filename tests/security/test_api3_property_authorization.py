"""API3:2023 Broken Object Property Level Authorization.

Mass assignment: a client may not set server-owned properties (balances,
ids, tenant, version, timestamps, status at creation, a transfer's status or
posted amount). Each is refused whole with 400 and the error envelope naming
the field, and nothing is written.

Excessive data exposure: `holder` is personal data, returned only to tokens
with `pii:read`; every route that returns an account shows it as null
otherwise.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service.auth import scopes
from tests.conftest import Tenant
from tests.security.support import HOLDER, Ledger, Unchanged, seed_ledger
from tests.service.api.helpers import assert_error, field_names

WITHOUT_PII = tuple(s for s in scopes.ALL if s != scopes.PII_READ)
SOME_UUID = "01900000-0000-7000-8000-000000000000"
SOME_TIME = "2020-01-01T00:00:00Z"

ACCOUNT_SERVER_FIELDS: dict[str, Any] = {
    "id": SOME_UUID,
    "tenant_id": SOME_UUID,
    "balance": {"posted": 1_000_000, "pending": 0, "available": 1_000_000},
    "posted": 1_000_000,
    "available": 1_000_000,
    "version": 99,
    "created_at": SOME_TIME,
    "updated_at": SOME_TIME,
}
TRANSFER_SERVER_FIELDS: dict[str, Any] = {
    "id": SOME_UUID,
    "tenant_id": SOME_UUID,
    "status": "posted",
    "posted_amount": 1,
    "expires_at": SOME_TIME,
    "created_at": SOME_TIME,
    "updated_at": SOME_TIME,
}


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def assert_refused_field(r: httpx.Response, field: str) -> None:
    error = assert_error(r, 400, "BAD_REQUEST")
    assert any(f == field or f.endswith(f".{field}") for f in field_names(error)), error


# --- mass assignment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [*ACCOUNT_SERVER_FIELDS.items(), ("status", "frozen"), ("status", "closed")],
    ids=[*ACCOUNT_SERVER_FIELDS, "status frozen", "status closed"],
)
async def test_open_account_refuses_server_owned_field(
    client, app: Starlette, tenant: Tenant, field: str, value: Any
):
    body = {"name": "Wallet", "currency": "USD", field: value}
    async with Unchanged(client, app, tenant):
        r = await client.post("/api/accounts", json=body, headers=tenant.headers())
        assert_refused_field(r, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [*ACCOUNT_SERVER_FIELDS.items(), ("currency", "EUR"), ("holder", HOLDER)],
    ids=[*ACCOUNT_SERVER_FIELDS, "currency", "holder"],
)
async def test_patch_account_refuses_server_owned_field(
    client, app: Starlette, ledger: Ledger, field: str, value: Any
):
    async with Unchanged(client, app, ledger.tenant):
        r = await client.patch(
            f"/api/accounts/{ledger.sink}",
            json={"name": "Renamed", field: value},
            headers=ledger.tenant.headers(),
        )
        assert_refused_field(r, field)


async def test_patch_cannot_smuggle_balance_inside_metadata_shape(
    client, app: Starlette, ledger: Ledger
):
    """Metadata values are strings only: no nested objects that could shadow fields."""
    async with Unchanged(client, app, ledger.tenant):
        r = await client.patch(
            f"/api/accounts/{ledger.sink}",
            json={"metadata": {"balance": {"posted": 10}}},
            headers=ledger.tenant.headers(),
        )
        assert r.status_code in (400, 422), r.text


@pytest.mark.parametrize(
    ("field", "value"), list(TRANSFER_SERVER_FIELDS.items()), ids=list(TRANSFER_SERVER_FIELDS)
)
async def test_create_transfer_refuses_server_owned_field(
    client, app: Starlette, ledger: Ledger, field: str, value: Any
):
    body = {
        "debit_account_id": ledger.source,
        "credit_account_id": ledger.sink,
        "amount": 10,
        "currency": "USD",
        "pending": True,
        field: value,
    }
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post("/api/transfers", json=body, headers=ledger.tenant.headers())
        assert_refused_field(r, field)


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize(("field", "value"), [("status", "voided"), ("posted_amount", 1)])
async def test_batch_item_refuses_server_owned_field(
    client, app: Starlette, ledger: Ledger, field: str, value: Any, atomic: bool
):
    item = {
        "debit_account_id": ledger.source,
        "credit_account_id": ledger.sink,
        "amount": 10,
        "currency": "USD",
    }
    body = {"atomic": atomic, "transfers": [item, {**item, field: value}]}
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post("/api/transfers/batch", json=body, headers=ledger.tenant.headers())
        assert_refused_field(r, field)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("post", {"status": "voided"}),
        ("post", {"posted_amount": 1}),
        ("post", {"amount": 10, "debit_account_id": SOME_UUID}),
        ("void", {"amount": 10}),
        ("void", {"status": "posted"}),
    ],
    ids=["post status", "post posted_amount", "post redirect", "void amount", "void status"],
)
async def test_settling_a_hold_refuses_extra_fields(
    client, app: Starlette, ledger: Ledger, action: str, body: dict[str, Any]
):
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            f"/api/transfers/{ledger.pending}/{action}", json=body, headers=ledger.tenant.headers()
        )
        assert_error(r, 400, "BAD_REQUEST")
    r = await client.get(f"/api/transfers/{ledger.pending}", headers=ledger.tenant.headers())
    assert r.json()["data"]["status"] == "pending"


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenant_id", SOME_UUID), ("scopes", "admin"), ("exp", 4102444800), ("sub", SOME_UUID)],
)
async def test_token_request_refuses_extra_claims(client, tenant: Tenant, field: str, value: Any):
    body = {"client_id": str(tenant.client_id), "client_secret": tenant.client_secret, field: value}
    r = await client.post("/api/auth/token", json=body)
    assert_refused_field(r, field)


# --- holder: personal data only with pii:read -----------------------------------------


async def _account_views(
    client: httpx.AsyncClient, ledger: Ledger, *granted: str
) -> dict[str, Any]:
    """The holder as each account-returning route shows it to a token with `granted`."""
    headers = ledger.tenant.headers(*granted)
    writer = ledger.tenant.headers()  # only to set up; never the token under test
    views: dict[str, Any] = {}
    r = await client.post(
        "/api/accounts",
        json={"name": "P", "currency": "USD", "holder": HOLDER},
        headers=headers if scopes.LEDGER_WRITE in granted else writer,
    )
    assert r.status_code == 201, r.text
    views["POST /api/accounts"] = r.json()["data"]["holder"]
    account_id = r.json()["data"]["id"]
    r = await client.get(f"/api/accounts/{account_id}", headers=headers)
    assert r.status_code == 200, r.text
    views["GET /api/accounts/{id}"] = r.json()["data"]["holder"]
    r = await client.get("/api/accounts?limit=1000", headers=headers)
    assert r.status_code == 200, r.text
    listed = {a["id"]: a["holder"] for a in r.json()["data"]}
    views["GET /api/accounts"] = listed[account_id]
    views["GET /api/accounts (others)"] = listed[ledger.sink]
    r = await client.patch(f"/api/accounts/{account_id}", json={"name": "Q"}, headers=headers)
    assert r.status_code == 200, r.text
    views["PATCH /api/accounts/{id}"] = r.json()["data"]["holder"]
    return views


async def test_holder_is_null_on_every_account_route_without_pii_read(client, ledger: Ledger):
    views = await _account_views(client, ledger, *WITHOUT_PII)
    assert views == dict.fromkeys(views)


async def test_holder_is_shown_on_every_account_route_with_pii_read(client, ledger: Ledger):
    views = await _account_views(client, ledger, *scopes.ALL)
    assert views == dict.fromkeys(views, HOLDER)


async def test_holder_hidden_from_a_read_only_token(client, ledger: Ledger):
    r = await client.get(
        f"/api/accounts/{ledger.sink}", headers=ledger.tenant.headers(scopes.LEDGER_READ)
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["holder"] is None
    assert HOLDER["email"] not in r.text and HOLDER["name"] not in r.text


async def test_holder_never_leaks_through_errors_or_other_resources(client, ledger: Ledger):
    headers = ledger.tenant.headers(*WITHOUT_PII)
    pages = [
        await client.get(f"/api/transfers/{ledger.posted}", headers=headers),
        await client.get("/api/transfers?limit=1000", headers=headers),
        await client.get(f"/api/accounts/{ledger.sink}/entries", headers=headers),
        await client.get(f"/api/accounts/{ledger.sink}/balance", headers=headers),
        await client.patch(f"/api/accounts/{ledger.sink}", json={"name": ""}, headers=headers),
        await client.post(
            "/api/transfers",
            json={
                "debit_account_id": ledger.sink,
                "credit_account_id": ledger.source,
                "amount": 10**9,
                "currency": "USD",
            },
            headers=headers,
        ),
    ]
    for r in pages:
        assert HOLDER["email"] not in r.text and HOLDER["name"] not in r.text, r.text
