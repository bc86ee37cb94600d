"""/api/webhooks: register (SSRF guard, secret once and sealed), read, change, delete."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service import crypto
from service.webhooks import endpoints
from tests.conftest import Tenant
from tests.service.api.helpers import assert_error, field_names

HOOKS = "/api/webhooks"
# A public address, never contacted: the session app runs no dispatcher.
PUBLIC = "https://93.184.215.14/tally/hooks?source=ledger"


async def register(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post(HOOKS, json={"url": PUBLIC, **body}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def test_register_returns_the_secret_once(client, app: Starlette, tenant: Tenant):
    hook = await register(client, tenant, description="orders", events=["transfer.posted"])
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["url"] == PUBLIC and hook["description"] == "orders"
    assert hook["events"] == ["transfer.posted"] and hook["status"] == "enabled"
    assert hook["circuit"] == {"state": "closed", "consecutive_failures": 0, "open_until": None}
    r = await client.get(f"{HOOKS}/{hook['id']}", headers=tenant.headers())
    assert r.status_code == 200
    assert "secret" not in r.json()["data"] and hook["secret"] not in r.text
    r = await client.get(HOOKS, headers=tenant.headers())
    assert hook["secret"] not in r.text


async def test_secret_is_sealed_at_rest_and_bound_to_its_endpoint(
    client, app: Starlette, tenant: Tenant
):
    first, second = await register(client, tenant), await register(client, tenant)
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT id, secret FROM webhook_endpoints WHERE tenant_id = %s", (tenant.tenant_id,)
        )
        sealed = {str(i): bytes(s) for i, s in await cur.fetchall()}
    assert first["secret"].encode() not in sealed[first["id"]]
    vault = app.state.vault
    opened = await endpoints.open_secret(
        vault, tenant.tenant_id, _uuid(first["id"]), sealed[first["id"]]
    )
    assert opened == first["secret"]
    # Pasted onto another row, the ciphertext does not open.
    with pytest.raises(crypto.DecryptionFailed):
        await endpoints.open_secret(
            vault, tenant.tenant_id, _uuid(second["id"]), sealed[first["id"]]
        )


def _uuid(text: str) -> Any:
    import uuid

    return uuid.UUID(text)


async def test_events_filter_is_normalised(client, tenant):
    hook = await register(
        client, tenant, events=["transfer.voided", "account.created", "transfer.voided"]
    )
    assert hook["events"] == ["account.created", "transfer.voided"]
    hook = await register(client, tenant, events=["transfer.posted", "*"])
    assert hook["events"] == ["*"]


async def test_list_is_paginated_newest_first(client, tenant):
    ids = [(await register(client, tenant))["id"] for _ in range(3)]
    r = await client.get(HOOKS, params={"limit": 2}, headers=tenant.headers())
    body = r.json()
    assert [h["id"] for h in body["data"]] == ids[::-1][:2] and body["meta"]["has_more"]
    r = await client.get(
        HOOKS, params={"limit": 2, "cursor": body["meta"]["next_cursor"]}, headers=tenant.headers()
    )
    assert [h["id"] for h in r.json()["data"]] == ids[:1]


async def test_patch_pauses_resumes_and_changes_the_filter(client, tenant):
    hook = await register(client, tenant, description="d")
    url = f"{HOOKS}/{hook['id']}"
    r = await client.patch(url, json={"status": "paused"}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["data"]["status"] == "paused"
    r = await client.patch(
        url,
        json={"status": "enabled", "events": ["transfer.expired"], "description": None},
        headers=tenant.headers(),
    )
    data = r.json()["data"]
    assert (data["status"], data["events"], data["description"]) == (
        "enabled",
        ["transfer.expired"],
        None,
    )
    assert data["updated_at"] >= hook["updated_at"]
    r = await client.patch(url, json={}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["data"] == data


async def test_delete_removes_the_endpoint(client, tenant):
    hook = await register(client, tenant)
    url = f"{HOOKS}/{hook['id']}"
    r = await client.delete(url, headers=tenant.headers())
    assert r.status_code == 204 and r.content == b""
    for method in ("GET", "PATCH", "DELETE"):
        body = {} if method == "PATCH" else None
        r = await client.request(method, url, json=body, headers=tenant.headers())
        assert_error(r, 404, "NOT_FOUND")
    assert_error(await client.get(f"{url}/deliveries", headers=tenant.headers()), 404, "NOT_FOUND")


async def test_other_tenants_endpoint_is_not_found(client, tenant, other_tenant):
    hook = await register(client, tenant)
    url = f"{HOOKS}/{hook['id']}"
    theirs = other_tenant.headers()
    assert_error(await client.get(url, headers=theirs), 404, "NOT_FOUND")
    assert_error(await client.get(f"{url}/deliveries", headers=theirs), 404, "NOT_FOUND")
    r = await client.patch(url, json={"status": "paused"}, headers=theirs)
    assert_error(r, 404, "NOT_FOUND")
    assert_error(await client.delete(url, headers=theirs), 404, "NOT_FOUND")
    r = await client.get(HOOKS, headers=theirs)
    assert r.json()["data"] == []
    r = await client.get(url, headers=tenant.headers())
    assert r.json()["data"]["status"] == "enabled"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/hook",
        "file:///etc/passwd",
        "gopher://93.184.215.14/",
        "https://user:pw@93.184.215.14/hook",
        "https://93.184.215.14@127.0.0.1/hook",
        "https:///nohost",
        "https://93.184.215.14:99999/hook",
        "https://exa mple.com/",
        "http://127.0.0.1/hook",
        "http://127.1/hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://localhost:8000/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:a9fe:a9fe]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://[fe80::1]/hook",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_unsafe_or_malformed_urls_are_refused(client, app: Starlette, tenant, url: str):
    async with app.state.db.connection() as conn:
        before = await _count(conn, tenant)
        r = await client.post(HOOKS, json={"url": url}, headers=tenant.headers())
        assert r.status_code in (400, 422), r.text
        error = r.json()["error"]
        assert error["code"] in ("BAD_REQUEST", "VALIDATION_ERROR")
        assert "url" in field_names(error)
        assert await _count(conn, tenant) == before


async def _count(conn: Any, tenant: Tenant) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = %s", (tenant.tenant_id,)
    )
    row = await cur.fetchone()
    return int(row[0])


async def test_patch_to_an_unsafe_url_is_refused_and_changes_nothing(client, tenant):
    hook = await register(client, tenant)
    url = f"{HOOKS}/{hook['id']}"
    r = await client.patch(url, json={"url": "http://169.254.169.254/"}, headers=tenant.headers())
    assert "url" in field_names(assert_error(r, 422, "VALIDATION_ERROR"))
    r = await client.get(url, headers=tenant.headers())
    assert r.json()["data"]["url"] == PUBLIC


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"status": "failing"}, 422, "status"),
        ({"status": "deleted"}, 422, "status"),
        ({"events": []}, 422, "events"),
        ({"events": ["transfer.created"]}, 422, "events[0]"),
        ({"events": "transfer.posted"}, 400, "events"),
        ({"url": "ftp://93.184.215.14/"}, 422, "url"),
        ({"url": None}, 400, "url"),
        ({"description": "x" * 501}, 422, "description"),
        ({"secret": "whsec_mine"}, 400, "secret"),
        ({"id": "01900000-0000-7000-8000-000000000000"}, 400, "id"),
    ],
)
async def test_bad_patch_bodies_are_refused(client, tenant, body, status, field):
    hook = await register(client, tenant)
    r = await client.patch(f"{HOOKS}/{hook['id']}", json=body, headers=tenant.headers())
    code = "BAD_REQUEST" if status == 400 else "VALIDATION_ERROR"
    assert field in field_names(assert_error(r, status, code))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"url": PUBLIC, "events": []}, 422),
        ({"url": PUBLIC, "secret": "whsec_x"}, 400),
        ({"url": PUBLIC, "status": "paused"}, 400),
        ({"url": 5}, 400),
    ],
)
async def test_bad_create_bodies_are_refused(client, tenant, body, status):
    r = await client.post(HOOKS, json=body, headers=tenant.headers())
    assert_error(r, status, "BAD_REQUEST" if status == 400 else "VALIDATION_ERROR")


@pytest.mark.parametrize("path", ["/api/webhooks/nope", "/api/webhooks/nope/deliveries"])
async def test_bad_ids_are_400(client, tenant, path):
    assert_error(await client.get(path, headers=tenant.headers()), 400, "BAD_REQUEST")


async def test_deliveries_parameters_are_checked(client, tenant):
    hook = await register(client, tenant)
    url = f"{HOOKS}/{hook['id']}/deliveries"
    for query in ({"status": "lost"}, {"cursor": "zzz"}, {"limit": "0"}, {"after": "1"}):
        r = await client.get(url, params=query, headers=tenant.headers())
        assert_error(r, 400, "BAD_REQUEST")
    r = await client.get(url, params={"status": "failed"}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["data"] == []


async def test_webhooks_need_webhooks_manage(client, tenant):
    r = await client.get(HOOKS, headers=tenant.headers("ledger:read", "events:read"))
    assert_error(r, 403, "FORBIDDEN")
