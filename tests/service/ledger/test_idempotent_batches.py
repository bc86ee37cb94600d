"""Idempotency keys claimed inside the batch transaction.

The claim commits with the work or not at all: a repeat in the same batch,
or while another transaction holds the key, is refused at once (never
applied, never waited for); a key whose reply is committed is replayed; a
batch that fails before COMMIT leaves the key free.
"""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import psycopg
import pytest

from service.db import idempotency as idem_sql
from service.ledger.transfers import (
    Claimed,
    IdempotencyClaim,
    NewTransfer,
    NotCommitted,
    Request,
    TransferEngine,
)
from tests.service.ledger.test_engine import (
    accounts_of,
    deadlock_first_batch,
    fail_after_writing,
)

HASH_A = hashlib.sha256(b"a").digest()
HASH_B = hashlib.sha256(b"b").digest()


def _render(outcomes):
    code, data = outcomes[0]
    return (201, msgspec.json.encode({"data": data})) if code is None else (422, b"{}")


def keyed(tenant, debit, credit, key: str, request_hash: bytes = HASH_A) -> Request:
    claim = IdempotencyClaim(tenant.client_id, key, request_hash)
    ops = [NewTransfer(debit, credit, 7, "USD")]
    return Request(tenant.tenant_id, ops, claim=claim, render=_render)  # type: ignore[arg-type]


async def posted(client, tenant, account) -> int:
    r = await client.get(f"/api/accounts/{account}", headers=tenant.headers())
    return r.json()["data"]["balance"]["posted"]


async def key_rows(app, tenant) -> list[tuple]:
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT key, state, response_status FROM idempotency_keys WHERE tenant_id = %s",
            (tenant.tenant_id,),
        )
        return list(await cur.fetchall())


def claim_json(tenant, key: str, request_hash: bytes = HASH_A) -> str:
    return msgspec.json.encode([{
        "n": 0, "t": tenant.tenant_id, "c": tenant.client_id, "k": key,
        "h": request_hash.hex(),
    }]).decode()  # fmt: skip


@pytest.mark.parametrize("second_hash", [HASH_A, HASH_B], ids=["same-request", "another-body"])
async def test_a_repeat_in_the_same_batch_is_refused_as_in_flight(app, client, tenant, second_hash):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    engine = TransferEngine(app.state.db)
    first, second = await engine._flush([
        keyed(tenant, debit, credit, "k"), keyed(tenant, debit, credit, "k", second_hash),
    ])  # fmt: skip
    assert isinstance(first, list) and first[0][0] is None
    # The first's hash comes back, so the API tells IN_USE from REUSED.
    assert second == Claimed((idem_sql.IN_FLIGHT, HASH_A, None, None))
    assert await posted(client, tenant, credit) == 7
    assert await key_rows(app, tenant) == [("k", "done", 201)]


async def test_a_key_held_by_another_transaction_is_refused_without_waiting(
    app, client, tenant, database_url
):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    engine = TransferEngine(app.state.db)
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another worker's batch has claimed the key and not committed yet.
        assert await idem_sql.claim_batch(other, claim_json(tenant, "busy"), 60) == {}
        [result] = await engine._flush([keyed(tenant, debit, credit, "busy")])
        assert result == Claimed((idem_sql.IN_FLIGHT, None, None, None))
        assert await posted(client, tenant, credit) == 0
        await other.rollback()
    # Its work failed: the key is free again, and the retry is applied.
    [result] = await engine._flush([keyed(tenant, debit, credit, "busy")])
    assert isinstance(result, list) and result[0][0] is None
    assert await posted(client, tenant, credit) == 7


async def test_a_key_answered_by_another_transaction_is_replayed(app, client, tenant, database_url):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    engine = TransferEngine(app.state.db)
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        assert await idem_sql.claim_batch(other, claim_json(tenant, "done"), 60) == {}
        await other.execute(
            "UPDATE idempotency_keys SET state = 'done', response_status = 201,"
            " response_body = '{\"data\":1}' WHERE tenant_id = %s AND key = 'done'",
            (tenant.tenant_id,),
        )
        await other.commit()
    [result] = await engine._flush([keyed(tenant, debit, credit, "done")])
    assert result == Claimed(("done", HASH_A, 201, '{"data":1}'))
    assert await posted(client, tenant, credit) == 0


async def test_a_batch_that_fails_before_commit_leaves_its_keys_free(
    app, client, tenant, monkeypatch
):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    fail_after_writing(monkeypatch, tenant.tenant_id)
    engine = TransferEngine(app.state.db)
    with pytest.raises(NotCommitted):
        await engine._flush([keyed(tenant, debit, credit, "k")])
    assert await key_rows(app, tenant) == []
    monkeypatch.undo()
    [result] = await engine._flush([keyed(tenant, debit, credit, "k")])
    assert isinstance(result, list) and result[0][0] is None
    assert await posted(client, tenant, credit) == 7


async def test_a_batch_retried_after_a_deadlock_claims_its_keys_again(
    app, client, tenant, monkeypatch
):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    calls = deadlock_first_batch(monkeypatch, tenant.tenant_id)
    engine = TransferEngine(app.state.db)
    [result] = await engine._flush([keyed(tenant, debit, credit, "k")])
    assert isinstance(result, list) and result[0][0] is None and len(calls) == 2
    assert await key_rows(app, tenant) == [("k", "done", 201)]
    assert await posted(client, tenant, credit) == 7


async def test_refused_requests_do_not_stop_their_batch_neighbours(app, client, tenant):
    debit, credit = map(uuid.UUID, await accounts_of(client, tenant))
    engine = TransferEngine(app.state.db)
    await engine._flush([keyed(tenant, debit, credit, "old")])
    results = await engine._flush([
        keyed(tenant, debit, credit, "old"),
        keyed(tenant, debit, credit, "new"),
        Request(tenant.tenant_id, [NewTransfer(debit, credit, 7, "USD")]),
    ])  # fmt: skip
    assert isinstance(results[0], Claimed) and results[0].existing[0] == "done"
    assert results[1][0][0] is None and results[2][0][0] is None  # type: ignore[index]
    assert await posted(client, tenant, credit) == 21
