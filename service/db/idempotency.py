"""SQL for idempotency keys: claimed and completed inside the work's own transaction.

A batch claims the keys of its requests first. Each key is guarded by a
transaction-scoped advisory lock taken with `pg_try_advisory_xact_lock`: a
key whose lock another transaction holds belongs to a request still in
flight, so its repeat is refused at once instead of waiting. The claim row
is inserted as `in_flight` and set to `done` (with the reply) by the same
transaction, so no other session ever sees it in flight. Rows left
`in_flight` by an earlier version, whose holder died, are taken over by the
same request once their lease has passed.
"""

from __future__ import annotations

import uuid

import psycopg

# Per key: did we get its lock, and did we claim it (insert, or take over a
# stale claim of the same request)? Keys come in one JSON array; the lock
# CTE is materialised once (it calls a volatile function), before the insert.
_CLAIM_BATCH = """
WITH keys AS (
    SELECT v.n, v.t, v.c, v.k, decode(v.h, 'hex') AS h
    FROM json_to_recordset(%(keys)s::json) AS v(n int, t uuid, c uuid, k text, h text)
),
locked AS MATERIALIZED (
    SELECT keys.*, pg_try_advisory_xact_lock(
        hashtextextended(keys.t::text || keys.c::text || keys.k, 0)) AS got
    FROM keys
),
claimed AS (
    INSERT INTO idempotency_keys AS x
        (tenant_id, client_id, key, request_hash, state, locked_until)
    SELECT l.t, l.c, l.k, l.h, 'in_flight', now() + make_interval(secs => %(lease)s)
    FROM locked l WHERE l.got
    ON CONFLICT (tenant_id, client_id, key) DO UPDATE
        SET locked_until = EXCLUDED.locked_until
        WHERE x.state = 'in_flight' AND x.locked_until < now()
          AND x.request_hash = EXCLUDED.request_hash
    RETURNING x.tenant_id, x.client_id, x.key
)
SELECT l.n, l.got, c.key IS NOT NULL
FROM locked l
LEFT JOIN claimed c ON (c.tenant_id, c.client_id, c.key) = (l.t, l.c, l.k)
"""

# Read in a statement of its own, after the locks: it sees every reply
# committed before them.
_EXISTING = """
SELECT v.n, x.state, x.request_hash, x.response_status, x.response_body
FROM json_to_recordset(%s::json) AS v(n int, t uuid, c uuid, k text)
JOIN idempotency_keys x ON (x.tenant_id, x.client_id, x.key) = (v.t, v.c, v.k)
"""

IN_FLIGHT = "in_flight"
"""The state of a key whose request is still running."""


async def claim_batch(
    conn: psycopg.AsyncConnection, keys: str, lease_seconds: float
) -> dict[int, tuple]:
    """Claim keys for the current transaction.

    `keys` is a JSON array of {n, t (tenant), c (client), k (key), h (request
    hash, hex)}. Returns, for each key NOT claimed, its number `n` mapped to
    (state, request_hash, response_status, response_body): the stored row,
    or (IN_FLIGHT, None, None, None) when another transaction holds the key.
    """
    cur = await conn.execute(_CLAIM_BATCH, {"keys": keys, "lease": lease_seconds})
    held = (IN_FLIGHT, None, None, None)
    refused: dict[int, tuple] = {}
    taken: set[int] = set()  # locked, yet not claimed: the key has its row
    for n, got, claimed in await cur.fetchall():
        if not got:
            refused[n] = held
        elif not claimed:
            taken.add(n)
    if taken:
        cur = await conn.execute(_EXISTING, (keys,))
        rows = {n: tuple(row) for n, *row in await cur.fetchall()}
        for n in taken:
            # Not inserted, yet gone: purged since. Only a retry can claim it now.
            refused[n] = rows.get(n, held)
    return refused


async def complete(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    key: str,
    status: int,
    body: str,
) -> None:
    """Store the reply of a key claimed in this transaction (one key; a batch
    stores its replies in its write statement)."""
    cur = await conn.execute(
        "UPDATE idempotency_keys SET state = 'done', response_status = %s, response_body = %s"
        " WHERE tenant_id = %s AND client_id = %s AND key = %s",
        (status, body, tenant_id, client_id, key),
    )
    if cur.rowcount != 1:
        raise RuntimeError(f"idempotency key {key!r} was not claimed in this transaction")


async def purge(conn: psycopg.AsyncConnection, older_than_seconds: float) -> int:
    """Delete keys older than the retention; returns how many."""
    cur = await conn.execute(
        "DELETE FROM idempotency_keys"
        " WHERE created_at < now() - make_interval(secs => %s)"
        " AND (state = 'done' OR locked_until < now())",
        (older_than_seconds,),
    )
    return cur.rowcount
