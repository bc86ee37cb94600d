"""SQL for accounts. Rows come back in `codec.ACCOUNT_COLUMNS` order."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from fastpath.codec import ACCOUNT_COLUMNS
from service.db.json import KEY_RECORDS, rows_by_key

_COLUMNS = ", ".join(ACCOUNT_COLUMNS)
_INSERT = (
    "INSERT INTO accounts (tenant_id, id, name, currency, overdraft_limit, holder, metadata)"
    f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}"
)
_GET = f"SELECT {_COLUMNS} FROM accounts WHERE tenant_id = %s AND id = %s"
_LOCK = _GET + " FOR UPDATE"
# Many reads in one query; `n` says which requested key each row answers.
_GET_MANY = (
    f"SELECT k.n, {', '.join('a.' + c for c in ACCOUNT_COLUMNS)} FROM {KEY_RECORDS}"
    " JOIN accounts a ON a.tenant_id = k.t AND a.id = k.i"
)

# Columns PATCH may set; the value is bound as a parameter, never spliced in.
_SETTABLE = {
    "name": "name = %s",
    "status": "status = %s",
    "overdraft_limit": "overdraft_limit = %s",
    "metadata": "metadata = %s",
}


async def insert(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    name: str,
    currency: str,
    overdraft_limit: int | None,
    holder: bytes | None,
    metadata: dict[str, str],
) -> tuple:
    cur = await conn.execute(
        _INSERT,
        (
            tenant_id,
            account_id,
            name,
            currency,
            overdraft_limit,
            holder,
            Jsonb(metadata),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def get(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    lock: bool = False,
) -> tuple | None:
    cur = await conn.execute(_LOCK if lock else _GET, (tenant_id, account_id))
    return await cur.fetchone()


async def get_many(
    conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple | None]:
    """The rows of the accounts named by (tenant_id, id), in that order (None: no such)."""
    return await rows_by_key(conn, _GET_MANY, keys)


async def page(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    before: uuid.UUID | None = None,
    currency: str | None = None,
    status: str | None = None,
) -> list[tuple]:
    """Up to `limit` accounts, newest first (UUIDv7 ids sort by creation time)."""
    where = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if before is not None:
        where.append("id < %s")
        params.append(before)
    if currency is not None:
        where.append("currency = %s")
        params.append(currency)
    if status is not None:
        where.append("status = %s")
        params.append(status)
    params.append(limit)
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM accounts WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
        params,
    )
    return list(await cur.fetchall())


async def update(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    changes: dict[str, Any],
) -> tuple:
    """Apply `changes` (keys of _SETTABLE), bump the version, return the new row."""
    sets = [_SETTABLE[key] for key in changes]
    params: list[Any] = [Jsonb(v) if k == "metadata" else v for k, v in changes.items()]
    sets += ["version = version + 1", "updated_at = now()"]
    cur = await conn.execute(
        f"UPDATE accounts SET {', '.join(sets)} WHERE tenant_id = %s AND id = %s"
        f" RETURNING {_COLUMNS}",
        [*params, tenant_id, account_id],
    )
    row = await cur.fetchone()
    assert row is not None
    return row
