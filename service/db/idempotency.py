"""SQL for idempotency keys: claim before work, complete inside the work's transaction."""

from __future__ import annotations

import uuid

import psycopg

# Insert an in-flight claim; take over a stale claim of the same request (its
# holder died before committing, so nothing was done for it).
_CLAIM = """
INSERT INTO idempotency_keys (tenant_id, client_id, key, request_hash, state, locked_until)
VALUES (%(tenant)s, %(client)s, %(key)s, %(hash)s, 'in_flight',
        now() + make_interval(secs => %(lease)s))
ON CONFLICT (tenant_id, client_id, key) DO UPDATE
    SET locked_until = EXCLUDED.locked_until
    WHERE idempotency_keys.state = 'in_flight'
      AND idempotency_keys.locked_until < now()
      AND idempotency_keys.request_hash = EXCLUDED.request_hash
RETURNING 1
"""

_EXISTING = """
SELECT state, request_hash, response_status, response_body FROM idempotency_keys
WHERE tenant_id = %s AND client_id = %s AND key = %s
"""


async def claim(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    key: str,
    request_hash: bytes,
    lease_seconds: float,
) -> tuple | None:
    """None when this request now owns the key; else the existing row
    (state, request_hash, response_status, response_body)."""
    params = {
        "tenant": tenant_id, "client": client_id, "key": key, "hash": request_hash,
        "lease": lease_seconds,
    }  # fmt: skip
    cur = await conn.execute(_CLAIM, params)
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(_EXISTING, (tenant_id, client_id, key))
    row = await cur.fetchone()
    if row is None:  # deleted between the two statements: claim again
        return await claim(conn, tenant_id, client_id, key, request_hash, lease_seconds)
    return row


async def release(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, client_id: uuid.UUID, key: str
) -> None:
    """Drop an in-flight claim whose work did not happen (so a retry may run)."""
    await conn.execute(
        "DELETE FROM idempotency_keys"
        " WHERE tenant_id = %s AND client_id = %s AND key = %s AND state = 'in_flight'",
        (tenant_id, client_id, key),
    )


async def purge(conn: psycopg.AsyncConnection, older_than_seconds: float) -> int:
    """Delete keys older than the retention; returns how many."""
    cur = await conn.execute(
        "DELETE FROM idempotency_keys"
        " WHERE created_at < now() - make_interval(secs => %s)"
        " AND (state = 'done' OR locked_until < now())",
        (older_than_seconds,),
    )
    return cur.rowcount
