"""SQL for the key ring and for re-sealing account holders."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
from psycopg import sql

from service import crypto

# Serialises key creation (two workers starting at once create one key).
_LOCK_ID = 0x7A11_0002


async def load(conn: psycopg.AsyncConnection, purpose: str) -> list[tuple[str, bytes]]:
    """(key id, sealed key), oldest first: the last one is the active one."""
    cur = await conn.execute(
        "SELECT id, sealed FROM keys WHERE purpose = %s ORDER BY created_at, id", (purpose,)
    )
    return [(r[0], bytes(r[1])) for r in await cur.fetchall()]


async def add(
    conn: psycopg.AsyncConnection,
    kid: str,
    purpose: str,
    sealed: bytes,
    algorithm: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO keys (id, purpose, sealed, algorithm) VALUES (%s, %s, %s, %s)",
        (kid, purpose, sealed, algorithm),
    )


async def load_signing(
    conn: psycopg.AsyncConnection,
) -> list[tuple[str, str, bytes, datetime, datetime | None]]:
    """Token signing keys, oldest first: (id, algorithm, sealed, created_at, retired_at)."""
    cur = await conn.execute(
        "SELECT id, algorithm, sealed, created_at, retired_at FROM keys"
        " WHERE purpose = 'jwt' ORDER BY created_at, id"
    )
    return [(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in await cur.fetchall()]


async def retire(conn: psycopg.AsyncConnection, kid: str) -> bool:
    """Retire a signing key that is not the newest; False if there is no such key."""
    cur = await conn.execute(
        "UPDATE keys SET retired_at = clock_timestamp()"
        " WHERE id = %s AND purpose = 'jwt' AND retired_at IS NULL"
        "   AND created_at < (SELECT max(created_at) FROM keys WHERE purpose = 'jwt')",
        (kid,),
    )
    return cur.rowcount == 1


async def all_sealed(conn: psycopg.AsyncConnection) -> list[tuple[str, bytes]]:
    """Every key of the ring, locked, for re-sealing under a new master key."""
    cur = await conn.execute("SELECT id, sealed FROM keys ORDER BY id FOR UPDATE")
    return [(r[0], bytes(r[1])) for r in await cur.fetchall()]


async def set_sealed(conn: psycopg.AsyncConnection, kid: str, sealed: bytes) -> None:
    await conn.execute("UPDATE keys SET sealed = %s WHERE id = %s", (sealed, kid))


async def lock(conn: psycopg.AsyncConnection) -> None:
    """Hold the key-creation lock until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))


async def holders_to_seal(
    conn: psycopg.AsyncConnection, active_kid: str, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, bytes | None, dict | None]]:
    """Accounts whose holder is plaintext or sealed under another key (locked)."""
    prefix = crypto.header(active_kid)
    cur = await conn.execute(
        "SELECT tenant_id, id, holder, holder_plain FROM accounts"
        " WHERE holder_plain IS NOT NULL"
        "    OR (holder IS NOT NULL AND substring(holder FROM 1 FOR %s) <> %s)"
        " LIMIT %s FOR UPDATE SKIP LOCKED",
        (len(prefix), prefix, limit),
    )
    return [
        (r[0], r[1], bytes(r[2]) if r[2] is not None else None, r[3]) for r in await cur.fetchall()
    ]


async def set_holder(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, account_id: uuid.UUID, sealed: bytes
) -> None:
    await conn.execute(
        "UPDATE accounts SET holder = %s, holder_plain = NULL WHERE tenant_id = %s AND id = %s",
        (sealed, tenant_id, account_id),
    )


async def sealed_to_reseal(
    conn: psycopg.AsyncConnection, table: str, column: str, active_kid: str, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, bytes]]:
    """Rows of `table` whose sealed `column` is under another key than the active one (locked)."""
    prefix = crypto.header(active_kid)
    query = sql.SQL(
        "SELECT tenant_id, id, {col} FROM {tbl}"
        " WHERE substring({col} FROM 1 FOR %s) <> %s"
        " LIMIT %s FOR UPDATE SKIP LOCKED"
    ).format(col=sql.Identifier(column), tbl=sql.Identifier(table))
    cur = await conn.execute(query, (len(prefix), prefix, limit))
    return [(r[0], r[1], bytes(r[2])) for r in await cur.fetchall()]


async def set_sealed_column(
    conn: psycopg.AsyncConnection,
    table: str,
    column: str,
    tenant_id: uuid.UUID,
    row_id: uuid.UUID,
    sealed: bytes,
) -> None:
    query = sql.SQL("UPDATE {tbl} SET {col} = %s WHERE tenant_id = %s AND id = %s").format(
        col=sql.Identifier(column), tbl=sql.Identifier(table)
    )
    await conn.execute(query, (sealed, tenant_id, row_id))
