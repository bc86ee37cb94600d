"""SQL for transfers, entries, and the group-commit batch (lock, then one write)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

TRANSFER_COLUMNS = (
    "id", "debit_account_id", "credit_account_id", "amount", "currency", "status",
    "posted_amount", "expires_at", "description", "metadata", "created_at", "updated_at",
)  # fmt: skip
_T_COLS = ", ".join(TRANSFER_COLUMNS)
_T_COLS_QUALIFIED = ", ".join(f"t.{c}" for c in TRANSFER_COLUMNS)

_LOCK_HOLDS = f"""
SELECT t.tenant_id, {_T_COLS_QUALIFIED}
FROM transfers t
JOIN unnest(%s::uuid[], %s::uuid[]) AS k(tenant_id, id) USING (tenant_id, id)
ORDER BY t.tenant_id, t.id
FOR UPDATE OF t
"""

_LOCK_ACCOUNTS = """
SELECT a.tenant_id, a.id, a.posted, a.pending_debits, a.pending_credits,
       a.overdraft_limit, a.status, a.currency
FROM accounts a
JOIN unnest(%s::uuid[], %s::uuid[]) AS k(tenant_id, id) USING (tenant_id, id)
ORDER BY a.tenant_id, a.id
FOR UPDATE OF a
"""

# Taken after the account locks, so the clock read here orders every change to
# an account the same way as the locks did.
_LOCK_TENANTS = """
SELECT id, event_seq, clock_timestamp() FROM tenants
WHERE id = ANY(%s::uuid[]) ORDER BY id FOR NO KEY UPDATE
"""

# Every write of a batch in one statement (data-modifying CTEs), one round trip.
_WRITE = """
WITH new_transfers AS (
    INSERT INTO transfers (tenant_id, id, debit_account_id, credit_account_id, amount,
        currency, status, posted_amount, expires_at, description, metadata,
        debit_balance_after, credit_balance_after, created_at, updated_at)
    SELECT v.tenant_id, v.id, v.debit, v.credit, v.amount, v.currency, v.status,
        v.posted_amount, v.expires_at, v.description, v.metadata, v.debit_after,
        v.credit_after, %(ts)s, %(ts)s
    FROM unnest(%(nt_tenant)s::uuid[], %(nt_id)s::uuid[], %(nt_debit)s::uuid[],
        %(nt_credit)s::uuid[], %(nt_amount)s::bigint[], %(nt_currency)s::text[],
        %(nt_status)s::text[], %(nt_posted)s::bigint[], %(nt_expires)s::timestamptz[],
        %(nt_description)s::text[], %(nt_metadata)s::jsonb[], %(nt_debit_after)s::bigint[],
        %(nt_credit_after)s::bigint[])
        AS v(tenant_id, id, debit, credit, amount, currency, status, posted_amount,
             expires_at, description, metadata, debit_after, credit_after)
),
settled AS (
    UPDATE transfers t SET status = v.status, posted_amount = v.posted_amount,
        updated_at = %(ts)s
    FROM unnest(%(st_tenant)s::uuid[], %(st_id)s::uuid[], %(st_status)s::text[],
        %(st_posted)s::bigint[]) AS v(tenant_id, id, status, posted_amount)
    WHERE t.tenant_id = v.tenant_id AND t.id = v.id
),
new_entries AS (
    INSERT INTO entries (tenant_id, account_id, transfer_id, kind, amount, pending_amount,
        posted_after, pending_debits_after, pending_credits_after, created_at)
    SELECT v.*, %(ts)s
    FROM unnest(%(en_tenant)s::uuid[], %(en_account)s::uuid[], %(en_transfer)s::uuid[],
        %(en_kind)s::text[], %(en_amount)s::bigint[], %(en_pending)s::bigint[],
        %(en_posted_after)s::bigint[], %(en_pd_after)s::bigint[], %(en_pc_after)s::bigint[])
        AS v
),
balances AS (
    UPDATE accounts a SET posted = v.posted, pending_debits = v.pd,
        pending_credits = v.pc, updated_at = %(ts)s
    FROM unnest(%(ac_tenant)s::uuid[], %(ac_id)s::uuid[], %(ac_posted)s::bigint[],
        %(ac_pd)s::bigint[], %(ac_pc)s::bigint[]) AS v(tenant_id, id, posted, pd, pc)
    WHERE a.tenant_id = v.tenant_id AND a.id = v.id
),
sequences AS (
    UPDATE tenants t SET event_seq = v.seq
    FROM unnest(%(sq_tenant)s::uuid[], %(sq_seq)s::bigint[]) AS v(id, seq)
    WHERE t.id = v.id
),
new_events AS (
    INSERT INTO events (tenant_id, id, sequence, type, data, created_at)
    SELECT v.*, %(ts)s
    FROM unnest(%(ev_tenant)s::uuid[], %(ev_id)s::uuid[], %(ev_seq)s::bigint[],
        %(ev_type)s::text[], %(ev_data)s::jsonb[]) AS v
),
replies AS (
    UPDATE idempotency_keys k SET state = 'done', response_status = v.status,
        response_body = v.body
    FROM unnest(%(ik_tenant)s::uuid[], %(ik_client)s::uuid[], %(ik_key)s::text[],
        %(ik_status)s::int[], %(ik_body)s::bytea[]) AS v(tenant_id, client_id, key, status, body)
    WHERE k.tenant_id = v.tenant_id AND k.client_id = v.client_id AND k.key = v.key
)
SELECT 1
"""


async def lock_holds(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple]:
    """Lock the transfers named by (tenant_id, id), in key order; rows are
    (tenant_id, *TRANSFER_COLUMNS)."""
    cur = await conn.execute(_LOCK_HOLDS, ([k[0] for k in keys], [k[1] for k in keys]))
    return list(await cur.fetchall())


async def lock_accounts(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple]:
    cur = await conn.execute(_LOCK_ACCOUNTS, ([k[0] for k in keys], [k[1] for k in keys]))
    return list(await cur.fetchall())


async def lock_tenants(
    conn: psycopg.AsyncConnection, tenant_ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, int], datetime]:
    """Lock tenants' event counters (in id order); returns them and the batch time."""
    cur = await conn.execute(_LOCK_TENANTS, (sorted(tenant_ids),))
    rows = await cur.fetchall()
    if not rows:
        cur = await conn.execute("SELECT clock_timestamp()")
        row = await cur.fetchone()
        assert row is not None
        return {}, row[0]
    return {r[0]: r[1] for r in rows}, rows[-1][2]


async def write_batch(conn: psycopg.AsyncConnection, params: dict[str, Any]) -> None:
    await conn.execute(_WRITE, params)


async def get(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, transfer_id: uuid.UUID
) -> tuple | None:
    cur = await conn.execute(
        f"SELECT {_T_COLS} FROM transfers WHERE tenant_id = %s AND id = %s",
        (tenant_id, transfer_id),
    )
    return await cur.fetchone()


async def page(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    before: uuid.UUID | None,
    account_id: uuid.UUID | None,
    status: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> list[tuple]:
    """Newest first; with account_id, the transfers on either side of it."""
    where = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    for clause, value in (
        ("id < %s", before),
        ("status = %s", status),
        ("created_at >= %s", created_from),
        ("created_at < %s", created_to),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    cond = " AND ".join(where)
    if account_id is None:
        sql = f"SELECT {_T_COLS} FROM transfers WHERE {cond} ORDER BY id DESC LIMIT %s"
        params.append(limit)
    else:
        # Two index range scans (one per side) merged, instead of an OR.
        sql = (
            f"SELECT {_T_COLS} FROM ("
            f" (SELECT * FROM transfers WHERE {cond} AND debit_account_id = %s"
            f"  ORDER BY id DESC LIMIT %s)"
            f" UNION ALL"
            f" (SELECT * FROM transfers WHERE {cond} AND credit_account_id = %s"
            f"  ORDER BY id DESC LIMIT %s)) t ORDER BY id DESC LIMIT %s"
        )
        params = [*params, account_id, limit, *params, account_id, limit, limit]
    cur = await conn.execute(sql, params)
    return list(await cur.fetchall())


async def due_holds(conn: psycopg.AsyncConnection, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    cur = await conn.execute(
        "SELECT tenant_id, id FROM transfers"
        " WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()"
        " ORDER BY expires_at LIMIT %s",
        (limit,),
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


ENTRY_COLUMNS = (
    "id", "transfer_id", "kind", "amount", "pending_amount", "posted_after",
    "pending_debits_after", "pending_credits_after", "created_at",
)  # fmt: skip


async def entries(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> list[tuple]:
    where = ["tenant_id = %s", "account_id = %s"]
    params: list[Any] = [tenant_id, account_id]
    for clause, value in (
        ("id < %s", before),
        ("created_at >= %s", created_from),
        ("created_at < %s", created_to),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    params.append(limit)
    cur = await conn.execute(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE {' AND '.join(where)}"
        " ORDER BY id DESC LIMIT %s",
        params,
    )
    return list(await cur.fetchall())


async def balance_at(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, account_id: uuid.UUID, at: datetime
) -> tuple[int, int, int] | None:
    """(posted, pending_debits, pending_credits) after the last change at or before `at`."""
    cur = await conn.execute(
        "SELECT posted_after, pending_debits_after, pending_credits_after FROM entries"
        " WHERE tenant_id = %s AND account_id = %s AND created_at <= %s"
        " ORDER BY id DESC LIMIT 1",
        (tenant_id, account_id, at),
    )
    return await cur.fetchone()
