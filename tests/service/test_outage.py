"""With PostgreSQL or Redis unreachable: 503 with Retry-After, quickly, never a hang."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import serving


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def db_down_client(settings, tenant):
    port = _closed_port()
    broken = settings.with_overrides(
        database_url=f"postgresql://postgres@127.0.0.1:{port}/tally", db_timeout_seconds=0.5
    )
    async with serving(broken) as (application, http):
        yield http, application


async def test_requests_get_503_quickly_when_database_is_down(db_down_client, tenant, caplog):
    http, application = db_down_client
    token = application.state.tokens.issue(
        tenant.client_id, tenant.tenant_id, ("ledger:read", "ledger:write")
    )
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(3):
        started = time.monotonic()
        r = await http.get(f"/api/accounts/{tenant.client_id}", headers=headers)
        assert time.monotonic() - started < 5  # a hang guard, not a performance check
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    r = await http.post("/api/accounts", json={"name": "a", "currency": "USD"}, headers=headers)
    assert r.status_code == 503
    # Logged once for the outage, not once per request.
    # (The app's start-up, which loads the signing keys, may be the first to notice.)
    records = caplog.get_records("setup") + caplog.records
    outage_logs = [r for r in records if r.getMessage().startswith("database unavailable")]
    assert len(outage_logs) == 1


async def test_token_endpoint_gets_503_when_database_is_down(db_down_client, tenant):
    http, _ = db_down_client
    r = await http.post(
        "/api/auth/token",
        json={"client_id": str(tenant.client_id), "client_secret": tenant.client_secret},
    )
    assert r.status_code == 503
    assert "retry-after" in r.headers


async def test_readyz_reports_database_down(db_down_client):
    http, _ = db_down_client
    r = await http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["details"]["checks"] == {"postgres": "down", "redis": "ok"}
    assert "retry-after" in r.headers
    assert (await http.get("/healthz")).status_code == 200


async def test_readyz_reports_redis_down(settings):
    broken = settings.with_overrides(redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    async with serving(broken) as (_, http):
        r = await http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["details"]["checks"] == {"postgres": "ok", "redis": "down"}


async def test_readyz_ok_when_both_are_up(client):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
