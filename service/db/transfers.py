"""SQL for transfers, entries, and the group-commit batch (lock, then one write)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from service.db.json import KEY_RECORDS, key_records, records, rows_by_key

TRANSFER_COLUMNS = (
    "id", "debit_account_id", "credit_account_id", "amount", "currency", "status",
    "posted_amount", "expires_at", "description", "metadata", "created_at", "updated_at",
)  # fmt: skip
_T_COLS = ", ".join(TRANSFER_COLUMNS)
_T_COLS_QUALIFIED = ", ".join(f"t.{c}" for c in TRANSFER_COLUMNS)

_LOCK_HOLDS = f"""
SELECT t.tenant_id, {_T_COLS_QUALIFIED}
FROM transfers t
JOIN {KEY_RECORDS} ON t.tenant_id = k.t AND t.id = k.i
ORDER BY t.tenant_id, t.id
FOR UPDATE OF t
"""

_LOCK_ACCOUNTS = f"""
SELECT a.tenant_id, a.id, a.posted, a.pending_debits, a.pending_credits,
       a.overdraft_limit, a.status, a.currency
FROM accounts a
JOIN {KEY_RECORDS} ON a.tenant_id = k.t AND a.id = k.i
ORDER BY a.tenant_id, a.id
FOR UPDATE OF a
"""

# Every write of a batch in one statement (data-modifying CTEs): one round
# trip, and each table's rows arrive as one JSON array (msgspec encodes it far
# faster than per-element array parameters). The tenants' event counters are
# locked here, as late as possible: they serialise a tenant's batches. Event
# times are read after that lock, so they follow the sequence.
_WRITE = """
WITH new_transfers AS (
    INSERT INTO transfers (tenant_id, id, debit_account_id, credit_account_id, amount,
        currency, status, posted_amount, expires_at, description, metadata,
        debit_balance_after, credit_balance_after, created_at, updated_at)
    SELECT v.t, v.i, v.d, v.c, v.a, v.cu, v.s, v.p, v.e, v.de, coalesce(v.m, '{}'),
        v.da, v.ca, %(ts)s, %(ts)s
    FROM json_to_recordset(%(transfers)s::json) AS v(t uuid, i uuid, d uuid, c uuid,
        a bigint, cu text, s text, p bigint, e timestamptz, de text, m jsonb, da bigint,
        ca bigint)
),
settled AS (
    UPDATE transfers x SET status = v.s, posted_amount = v.p, updated_at = %(ts)s
    FROM json_to_recordset(%(settled)s::json) AS v(t uuid, i uuid, s text, p bigint)
    WHERE x.tenant_id = v.t AND x.id = v.i
),
new_entries AS (
    INSERT INTO entries (tenant_id, account_id, transfer_id, kind, amount, pending_amount,
        posted_after, pending_debits_after, pending_credits_after, created_at)
    SELECT v.t, v.ac, v.i, v.k, v.a, v.pa, v.po, v.pd, v.pc, %(ts)s
    FROM json_to_recordset(%(entries)s::json) AS v(t uuid, ac uuid, i uuid, k text,
        a bigint, pa bigint, po bigint, pd bigint, pc bigint)
),
balances AS (
    UPDATE accounts x SET posted = v.po, pending_debits = v.pd, pending_credits = v.pc,
        updated_at = %(ts)s
    FROM json_to_recordset(%(accounts)s::json) AS v(t uuid, i uuid, po bigint, pd bigint,
        pc bigint)
    WHERE x.tenant_id = v.t AND x.id = v.i
),
sequences AS (
    UPDATE tenants x SET event_seq = x.event_seq + v.n
    FROM json_to_recordset(%(counts)s::json) AS v(t uuid, n bigint)
    WHERE x.id = v.t
    RETURNING x.id, x.event_seq - v.n AS base
),
new_events AS (
    INSERT INTO events (tenant_id, id, sequence, type, data, created_at)
    SELECT v.t, v.i, s.base + v.n, v.k, v.d, clock_timestamp()
    FROM json_to_recordset(%(events)s::json) AS v(t uuid, i uuid, n bigint, k text, d jsonb)
    JOIN sequences s ON s.id = v.t
),
replies AS (
    UPDATE idempotency_keys x SET state = 'done', response_status = v.s,
        response_body = v.b
    FROM json_to_recordset(%(replies)s::json) AS v(t uuid, c uuid, k text, s int, b text)
    WHERE x.tenant_id = v.t AND x.client_id = v.c AND x.key = v.k
)
SELECT 1
"""


async def lock_holds(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple]:
    """Lock the transfers named by (tenant_id, id), in key order; rows are
    (tenant_id, *TRANSFER_COLUMNS)."""
    cur = await conn.execute(_LOCK_HOLDS, (key_records(keys),))
    return list(await cur.fetchall())


async def lock_accounts(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple]:
    cur = await conn.execute(_LOCK_ACCOUNTS, (key_records(keys),))
    return list(await cur.fetchall())


async def clock(conn: psycopg.AsyncConnection) -> datetime:
    """The batch's time, read after its locks, so it orders each account's changes
    the same way the locks did."""
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def write_batch(
    conn: psycopg.AsyncConnection, ts: datetime, tables: dict[str, bytes]
) -> None:
    """`tables`: each CTE's rows as a JSON array (see _WRITE for the fields)."""
    await conn.execute(_WRITE, {"ts": ts, **{k: v.decode() for k, v in tables.items()}})


_GET_MANY = f"SELECT k.n, {_T_COLS_QUALIFIED} FROM {KEY_RECORDS}" + (
    " JOIN transfers t ON t.tenant_id = k.t AND t.id = k.i"
)


async def get_many(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple | None]:
    """The transfers named by (tenant_id, id), in that order (None: no such)."""
    return await rows_by_key(conn, _GET_MANY, keys)


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


# Pages of several accounts' transfers in one statement (see page() for one):
# per key, its two sides' newest rows below the cursor, merged. The cursor is
# always bound (the largest uuid when there is none) so that it stays an index
# condition of both range scans.
_ACCOUNT_PAGES = f"""
SELECT k.n, {_T_COLS_QUALIFIED}
FROM json_to_recordset(%s::json) AS k(n int, t uuid, a uuid, l int, b uuid)
CROSS JOIN LATERAL (
    SELECT * FROM (
        (SELECT * FROM transfers WHERE tenant_id = k.t AND debit_account_id = k.a
            AND id < k.b ORDER BY id DESC LIMIT k.l)
        UNION ALL
        (SELECT * FROM transfers WHERE tenant_id = k.t AND credit_account_id = k.a
            AND id < k.b ORDER BY id DESC LIMIT k.l)
    ) u ORDER BY id DESC LIMIT k.l
) t
ORDER BY k.n, t.id DESC
"""
_NO_CURSOR = "ffffffff-ffff-ffff-ffff-ffffffffffff"

AccountPage = tuple[uuid.UUID, uuid.UUID, int, uuid.UUID | None]
"""(tenant_id, account_id, limit, before): one account's page, as page() reads it."""


async def account_pages(
    conn: psycopg.AsyncConnection, pages: list[AccountPage]
) -> list[list[tuple]]:
    """For each page, what page(conn, tenant_id, limit=, before=, account_id=) with
    no other filter returns, in that order, all in one round trip."""
    cur = await conn.execute(_ACCOUNT_PAGES, (_page_records(pages, _NO_CURSOR),))
    found: list[list[tuple]] = [[] for _ in pages]
    for n, *row in await cur.fetchall():
        found[n].append(tuple(row))
    return found


def _page_records(pages: list[tuple[uuid.UUID, uuid.UUID, int, Any]], no_cursor: Any) -> str:
    """(tenant_id, account_id, limit, before) pages as the k(n, t, a, l, b) records of
    the page statements; `no_cursor` (above every id) stands for no `before`."""
    return records([
        {"n": n, "t": t, "a": a, "l": limit, "b": no_cursor if before is None else before}
        for n, (t, a, limit, before) in enumerate(pages)
    ])  # fmt: skip


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


_ENTRY_COLS = ", ".join(f"e.{c}" for c in ENTRY_COLUMNS)
# Pages of several accounts' entries in one statement (see entries() for one),
# with whether each account exists. The cursor is always bound (the largest
# bigint when there is none) so that it stays an index condition.
_ENTRY_PAGES = f"""
SELECT k.n, acc.id IS NOT NULL, {_ENTRY_COLS}
FROM json_to_recordset(%s::json) AS k(n int, t uuid, a uuid, l int, b bigint)
LEFT JOIN accounts acc ON acc.tenant_id = k.t AND acc.id = k.a
LEFT JOIN LATERAL (
    SELECT * FROM entries WHERE tenant_id = k.t AND account_id = k.a AND id < k.b
    ORDER BY id DESC LIMIT k.l
) e ON true
ORDER BY k.n, e.id DESC
"""
_NO_ENTRY_CURSOR = 2**63 - 1

EntryPage = tuple[uuid.UUID, uuid.UUID, int, int | None]
"""(tenant_id, account_id, limit, before): one account's entries, as entries() reads them."""


async def entry_pages(
    conn: psycopg.AsyncConnection, pages: list[EntryPage]
) -> list[list[tuple] | None]:
    """For each page, what entries(conn, tenant_id, account_id, limit=, before=)
    with no time filter returns, or None when there is no such account; in
    that order, all in one round trip."""
    cur = await conn.execute(_ENTRY_PAGES, (_page_records(pages, _NO_ENTRY_CURSOR),))
    found: list[list[tuple] | None] = [None] * len(pages)
    for n, exists, *row in await cur.fetchall():
        rows = found[n]
        if rows is None and exists:
            rows = found[n] = []
        if rows is not None and row[0] is not None:  # an account with no entries: none
            rows.append(tuple(row))
    return found


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
