"""GET /api/usage: own tenant only, admin scope, hourly requests, daily transfer volume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import Tenant
from tests.service.api.helpers import assert_error, field_names, open_account

USAGE = "/api/usage"


async def _transfer(client, tenant, debit, credit, amount, currency="USD", **extra):
    body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount,
            "currency": currency, **extra}  # fmt: skip
    r = await client.post("/api/transfers", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def test_requests_and_transfers_of_the_own_tenant(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
):
    usd_a = await open_account(client, tenant, overdraft_limit=None)
    usd_b = await open_account(client, tenant)
    eur_a = await open_account(client, tenant, currency="EUR", overdraft_limit=None)
    eur_b = await open_account(client, tenant, currency="EUR")
    await _transfer(client, tenant, usd_a, usd_b, 100)
    await _transfer(client, tenant, usd_a, usd_b, 250)
    await _transfer(client, tenant, usd_a, usd_b, 7, pending=True)
    await _transfer(client, tenant, eur_a, eur_b, 40, currency="EUR")
    for _ in range(3):
        r = await client.get(f"/api/accounts/{usd_a}", headers=tenant.headers())
        assert r.status_code == 200
    r = await client.get("/api/accounts/nope", headers=tenant.headers())
    assert r.status_code == 400
    # The other tenant's traffic and transfers never show up.
    other_src = await open_account(client, other_tenant, overdraft_limit=None)
    other_dst = await open_account(client, other_tenant)
    await _transfer(client, other_tenant, other_src, other_dst, 999)

    r = await client.get(USAGE, headers=tenant.headers("admin"))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = {(u["method"], u["route"], u["status"]): u for u in data["requests"]}
    assert {u["client_id"] for u in data["requests"]} == {str(tenant.client_id)}
    assert rows[("GET", "/api/accounts/{id}", 200)]["requests"] == 3
    assert rows[("GET", "/api/accounts/{id}", 400)]["requests"] == 1
    assert rows[("POST", "/api/transfers", 201)]["requests"] == 4
    assert rows[("POST", "/api/accounts", 201)]["requests"] == 4
    assert {u["hour"] for u in data["requests"]} <= {
        hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (hour - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    today = datetime.now(UTC).date().isoformat()
    volume = {(t["day"], t["currency"]): t for t in data["transfers"]}
    assert set(volume) <= {(today, "USD"), (today, "EUR")} | {
        ((datetime.now(UTC) - timedelta(days=1)).date().isoformat(), c) for c in ("USD", "EUR")
    }
    usd = volume[(today, "USD")]
    assert (usd["count"], usd["volume"], usd["posted_count"], usd["posted_volume"]) == (
        3, 357, 2, 350
    )  # fmt: skip
    eur = volume[(today, "EUR")]
    assert (eur["count"], eur["volume"]) == (1, 40)


async def test_period_is_validated(client, tenant: Tenant):
    h = tenant.headers("admin")
    r = await client.get(USAGE, params={"from": "yesterday"}, headers=h)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["from"]
    r = await client.get(USAGE, params={"from": "2026-01-01T00:00:00"}, headers=h)
    assert_error(r, 400, "BAD_REQUEST")  # no time zone
    r = await client.get(
        USAGE, params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, headers=h
    )
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["from"]
    r = await client.get(
        USAGE, params={"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, headers=h
    )
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["to"]
    r = await client.get(USAGE, params={"tenant_id": str(tenant.tenant_id)}, headers=h)
    assert_error(r, 400, "BAD_REQUEST")  # no way to name another tenant


async def test_a_past_period_is_empty(client, tenant: Tenant):
    r = await client.get(
        USAGE,
        params={"from": "2020-01-01T00:00:00Z", "to": "2020-01-31T00:00:00Z"},
        headers=tenant.headers("admin"),
    )
    assert r.status_code == 200
    assert r.json()["data"]["requests"] == [] and r.json()["data"]["transfers"] == []


async def test_needs_the_admin_scope(client, tenant: Tenant):
    r = await client.get(USAGE, headers=tenant.headers("ledger:read"))
    assert_error(r, 403, "FORBIDDEN")
    assert_error(await client.get(USAGE), 401, "UNAUTHENTICATED")


async def test_counts_survive_a_failed_flush_and_are_written_once(app, tenant: Tenant):
    """Counts a flush could not write are kept for the next one, never doubled."""
    from service.db.pool import Database
    from service.usage import UsageRecorder

    class Who:
        tenant_id = tenant.tenant_id
        client_id = str(tenant.client_id)

    recorder = UsageRecorder()
    for _ in range(5):
        recorder.record({"principal": Who()}, "GET", "/x/{id}", 200)
    recorder.record({}, "GET", "/x/{id}", 200)  # unauthenticated: not counted
    down = Database("postgresql://postgres@127.0.0.1:1/none", timeout=0.5)
    await down.open()
    try:
        try:
            await recorder.flush(down)
        except Exception:
            pass
        else:
            raise AssertionError("a flush to a closed port cannot succeed")
    finally:
        await down.close()
    assert recorder.pending == 5
    assert await recorder.flush(app.state.db) == 5
    assert recorder.pending == 0
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(requests) FROM api_usage WHERE tenant_id = %s AND route = '/x/{id}'",
            (tenant.tenant_id,),
        )
        assert (await cur.fetchone())[0] == 5
