"""TransferEngine failure handling: retries after deadlocks, nothing half-written."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from service.ledger import transfers as engine_module
from service.ledger.transfers import NewTransfer, NotCommitted, Request, TransferEngine


async def accounts_of(client, tenant):
    ids = []
    for limit in (None, 0):
        r = await client.post(
            "/api/accounts",
            json={"name": "x", "currency": "USD", "overdraft_limit": limit},
            headers=tenant.headers(),
        )
        ids.append(r.json()["data"]["id"])
    return ids


def _of(tenant_id: uuid.UUID, requests) -> bool:
    # The session's app shares the patched module: its own batches (the expiry
    # sweep of other tests' holds, say) must go through untouched and uncounted.
    return any(r.tenant_id == tenant_id for r in requests)


def deadlock_first_batch(monkeypatch, tenant_id: uuid.UUID) -> list[int]:
    """The tenant's first batch writes everything, then dies in a deadlock; the
    list returned counts the tenant's batches applied."""
    real_apply = engine_module._apply
    calls: list[int] = []

    async def deadlock_once(conn, requests):
        if not _of(tenant_id, requests):
            return await real_apply(conn, requests)
        calls.append(1)
        outcomes = await real_apply(conn, requests)  # writes, then the tx dies
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("simulated")
        return outcomes

    monkeypatch.setattr(engine_module, "_apply", deadlock_once)
    return calls


def fail_after_writing(monkeypatch, tenant_id: uuid.UUID) -> None:
    """Every batch of the tenant writes everything, then fails before COMMIT."""
    real_apply = engine_module._apply

    async def fail(conn, requests):
        outcomes = await real_apply(conn, requests)
        if not _of(tenant_id, requests):
            return outcomes
        raise RuntimeError("boom")

    monkeypatch.setattr(engine_module, "_apply", fail)


async def test_deadlock_is_retried_and_applied_once(app, client, tenant, monkeypatch):

    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    calls = deadlock_first_batch(monkeypatch, tenant.tenant_id)
    engine = TransferEngine(app.state.db)
    [[(code, _)]] = await engine._flush(
        [Request(tenant.tenant_id, [NewTransfer(debit, credit, 7, "USD")])]
    )
    assert code is None and len(calls) == 2
    r = await client.get(f"/api/accounts/{credit}", headers=tenant.headers())
    assert r.json()["data"]["balance"]["posted"] == 7  # applied once, not twice


async def test_failure_before_commit_is_not_committed_and_writes_nothing(
    app, client, tenant, monkeypatch
):

    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    fail_after_writing(monkeypatch, tenant.tenant_id)
    engine = TransferEngine(app.state.db)
    with pytest.raises(NotCommitted):
        await engine._flush([Request(tenant.tenant_id, [NewTransfer(debit, credit, 7, "USD")])])
    r = await client.get(f"/api/accounts/{credit}", headers=tenant.headers())
    assert r.json()["data"]["balance"]["posted"] == 0
    r = await client.get("/api/transfers", headers=tenant.headers())
    assert r.json()["data"] == []


async def test_one_bad_request_does_not_fail_its_batch_neighbours(app, client, tenant, monkeypatch):

    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    real_apply = engine_module._apply

    async def poison(conn, requests):
        if any(op.amount == 13 for r in requests for op in r.ops):
            raise psycopg.errors.CheckViolation("simulated constraint failure")
        return await real_apply(conn, requests)

    monkeypatch.setattr(engine_module, "_apply", poison)
    engine = TransferEngine(app.state.db)
    results = await engine._flush([
        Request(tenant.tenant_id, [NewTransfer(debit, credit, 5, "USD")]),
        Request(tenant.tenant_id, [NewTransfer(debit, credit, 13, "USD")]),
        Request(tenant.tenant_id, [NewTransfer(debit, credit, 6, "USD")]),
    ])  # fmt: skip
    assert results[0][0][0] is None and results[2][0][0] is None
    assert isinstance(results[1], NotCommitted)
    r = await client.get(f"/api/accounts/{credit}", headers=tenant.headers())
    assert r.json()["data"]["balance"]["posted"] == 11
