"""SQL for webhook endpoints and their deliveries (the dispatcher's work queue)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from service.db.json import jsonb

ENDPOINT_COLUMNS = (
    "id, url, description, event_types, status, consecutive_failures, circuit_open_until, "
    "created_at, updated_at, previous_secret_expires_at"
)
DELIVERY_COLUMNS = (
    "id, event_id, event_type, sequence, status, attempt_count, attempts, next_attempt_at, "
    "delivered_at, created_at"
)
# A UUIDv7 made in SQL (for deliveries created by a set-based statement):
# 48 bits of Unix milliseconds over a random UUID, version bits set to 7.
_UUID7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
    "FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)
_TENANTS = "(%(tenants)s::uuid[] IS NULL OR e.tenant_id = ANY(%(tenants)s::uuid[]))"


async def create_endpoint(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    url: str,
    description: str | None,
    event_types: list[str],
    sealed_secret: bytes,
) -> tuple[Any, ...]:
    """Insert an endpoint; it receives events committed after this one's snapshot."""
    cur = await conn.execute(
        f"""
        INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, secret,
            fanned_out_seq)
        SELECT %s, %s, %s, %s, %s, %s, t.event_seq FROM tenants t WHERE t.id = %s
        RETURNING {ENDPOINT_COLUMNS}
        """,
        (tenant_id, endpoint_id, url, description, event_types, sealed_secret, tenant_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def get_endpoint(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> tuple[Any, ...] | None:
    cur = await conn.execute(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
        (tenant_id, endpoint_id),
    )
    return await cur.fetchone()


async def list_endpoints(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, limit: int, before: uuid.UUID | None
) -> list[tuple[Any, ...]]:
    """Newest first; `limit + 1` rows are asked for by the caller to learn has_more."""
    cur = await conn.execute(
        f"""
        SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
        WHERE tenant_id = %(tenant)s AND (%(before)s::uuid IS NULL OR id < %(before)s::uuid)
        ORDER BY id DESC LIMIT %(limit)s
        """,
        {"tenant": tenant_id, "before": before, "limit": limit},
    )
    return list(await cur.fetchall())


async def update_endpoint(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
) -> tuple[Any, ...] | None:
    """Set the given columns (names come from the caller, never from the client)."""
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    if changes.get("status") == "enabled":
        # Resuming (from paused or failing) starts with a closed circuit.
        assignments += ", consecutive_failures = 0, circuit_open_until = NULL"
    cur = await conn.execute(
        f"""
        UPDATE webhook_endpoints SET {assignments}, updated_at = clock_timestamp()
        WHERE tenant_id = %(tenant)s AND id = %(id)s
        RETURNING {ENDPOINT_COLUMNS}
        """,
        {**changes, "tenant": tenant_id, "id": endpoint_id},
    )
    return await cur.fetchone()


async def rotate_secret(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    sealed_secret: bytes,
    keep_previous_seconds: int,
) -> tuple[Any, ...] | None:
    """Make `sealed_secret` the signing secret; the replaced one also signs for
    `keep_previous_seconds` (0: not at all, and neither does any earlier one).

    Rotated again within a grace period, the secret from before the first
    rotation is the one kept (the one receivers may still hold) and the
    intermediate one is dropped: a rotation retried because its answer was
    lost must not lock out a receiver that never saw that answer."""
    cur = await conn.execute(
        f"""
        UPDATE webhook_endpoints SET
            previous_secret = CASE WHEN %(keep)s > 0 THEN
                CASE WHEN previous_secret_expires_at > clock_timestamp()
                    THEN previous_secret ELSE secret END
            END,
            previous_secret_expires_at = CASE WHEN %(keep)s > 0
                THEN clock_timestamp() + make_interval(secs => %(keep)s) END,
            secret = %(sealed)s,
            updated_at = clock_timestamp()
        WHERE tenant_id = %(tenant)s AND id = %(id)s
        RETURNING {ENDPOINT_COLUMNS}
        """,
        {"keep": keep_previous_seconds, "sealed": sealed_secret, "tenant": tenant_id,
         "id": endpoint_id},
    )  # fmt: skip
    return await cur.fetchone()


async def delete_endpoint(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> bool:
    cur = await conn.execute(
        "DELETE FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
        (tenant_id, endpoint_id),
    )
    return cur.rowcount == 1


async def list_deliveries(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    limit: int,
    before: int | None,
    status: str | None,
) -> list[tuple[Any, ...]]:
    """An endpoint's deliveries, newest event first."""
    cur = await conn.execute(
        f"""
        SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
        WHERE tenant_id = %(tenant)s AND endpoint_id = %(endpoint)s
          AND (%(before)s::bigint IS NULL OR sequence < %(before)s::bigint)
          AND (%(status)s::text IS NULL OR status = %(status)s::text)
        ORDER BY sequence DESC LIMIT %(limit)s
        """,
        {
            "tenant": tenant_id,
            "endpoint": endpoint_id,
            "before": before,
            "status": status,
            "limit": limit,
        },
    )
    return list(await cur.fetchall())


# --- the dispatcher's queue -----------------------------------------------------------

# Fan-out: for endpoints behind their tenant's event counter, turn the next
# events into delivery rows and move the endpoint's cursor past every event
# read (matching or not). The endpoint rows are locked (SKIP LOCKED), so two
# workers never fan out the same endpoint at once; the unique (endpoint,
# sequence) key makes a repeat harmless anyway.
_FAN_OUT = f"""
WITH behind AS (
    SELECT e.tenant_id, e.id, e.event_types, e.fanned_out_seq
    FROM webhook_endpoints e JOIN tenants t ON t.id = e.tenant_id
    WHERE e.fanned_out_seq < t.event_seq AND {_TENANTS}
    LIMIT %(endpoints)s
    FOR UPDATE OF e SKIP LOCKED
),
batch AS (
    SELECT b.tenant_id, b.id AS endpoint_id, b.event_types, ev.id AS event_id, ev.sequence,
        ev.type
    FROM behind b CROSS JOIN LATERAL (
        SELECT id, sequence, type FROM events
        WHERE tenant_id = b.tenant_id AND sequence > b.fanned_out_seq
        ORDER BY sequence LIMIT %(events)s
    ) ev
),
inserted AS (
    INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, sequence, event_type,
        next_attempt_at)
    SELECT tenant_id, {_UUID7}, endpoint_id, event_id, sequence, type, clock_timestamp()
    FROM batch WHERE '*' = ANY(event_types) OR type = ANY(event_types)
    ON CONFLICT (tenant_id, endpoint_id, sequence) DO NOTHING
    RETURNING 1
),
moved AS (
    UPDATE webhook_endpoints e SET fanned_out_seq = m.last
    FROM (SELECT tenant_id, endpoint_id, max(sequence) AS last FROM batch GROUP BY 1, 2) m
    WHERE e.tenant_id = m.tenant_id AND e.id = m.endpoint_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM moved)
"""


async def fan_out(
    conn: psycopg.AsyncConnection,
    tenants: list[uuid.UUID] | None,
    endpoints: int = 100,
    events: int = 500,
) -> tuple[int, int]:
    """(deliveries created, endpoints advanced) by one fan-out pass."""
    cur = await conn.execute(
        _FAN_OUT, {"tenants": tenants, "endpoints": endpoints, "events": events}
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# Retention: settled deliveries (delivered or given up) older than the
# retention, oldest first, a bounded number per statement. Pending ones are
# never deleted, and the endpoints' fan-out cursors do not depend on these
# rows, so a deleted delivery is never made again. The cutoff uses now(), not
# the volatile clock_timestamp(), so that it bounds the index scan.
_PURGE = f"""
DELETE FROM webhook_deliveries d
USING (
    SELECT e.tenant_id, e.id FROM webhook_deliveries e
    WHERE e.status <> 'pending'
      AND e.created_at < now() - make_interval(secs => %(retention)s)
      AND {_TENANTS}
    ORDER BY e.created_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) old
WHERE d.tenant_id = old.tenant_id AND d.id = old.id
"""


async def purge_deliveries(
    conn: psycopg.AsyncConnection,
    tenants: list[uuid.UUID] | None,
    retention_seconds: float,
    limit: int,
) -> int:
    """Delete up to `limit` settled deliveries older than the retention; how many."""
    cur = await conn.execute(
        _PURGE, {"tenants": tenants, "retention": retention_seconds, "limit": limit}
    )
    return cur.rowcount


async def forget_expired_secrets(
    conn: psycopg.AsyncConnection, tenants: list[uuid.UUID] | None
) -> int:
    """Erase rotated-out secrets whose grace period is over; how many. Endpoints
    locked at the moment (being changed, fanned out) are left for the next pass."""
    cur = await conn.execute(
        f"""
        UPDATE webhook_endpoints w SET previous_secret = NULL, previous_secret_expires_at = NULL
        FROM (
            SELECT e.tenant_id, e.id FROM webhook_endpoints e
            WHERE e.previous_secret_expires_at <= now() AND {_TENANTS}
            FOR UPDATE SKIP LOCKED
        ) expired
        WHERE w.tenant_id = expired.tenant_id AND w.id = expired.id
        """,
        {"tenants": tenants},
    )
    return cur.rowcount


# Claim: each enabled endpoint whose circuit lets it through offers only its
# head (its lowest pending sequence), so an endpoint's events go out one at a
# time in sequence order. The head is locked with SKIP LOCKED (two workers
# never claim the same row) and leased: only the lease holder may record the
# outcome, and a lease that runs out (its worker died) makes the row due again.
_CLAIM = f"""
WITH heads AS (
    SELECT h.tenant_id, h.id
    FROM webhook_endpoints e CROSS JOIN LATERAL (
        SELECT d.tenant_id, d.id, d.next_attempt_at, d.locked_until
        FROM webhook_deliveries d
        WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id AND d.status = 'pending'
        ORDER BY d.sequence LIMIT 1
    ) h
    WHERE e.status = 'enabled'
      AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= now())
      AND h.next_attempt_at <= now()
      AND (h.locked_until IS NULL OR h.locked_until <= now())
      AND {_TENANTS}
    ORDER BY h.next_attempt_at
    LIMIT %(limit)s
),
claimed AS (
    SELECT d.tenant_id, d.id FROM webhook_deliveries d JOIN heads USING (tenant_id, id)
    WHERE d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= now())
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET lease = %(lease)s, locked_until = now() + make_interval(secs => %(lease_seconds)s)
FROM claimed c, webhook_endpoints e, events ev
WHERE d.tenant_id = c.tenant_id AND d.id = c.id
  AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
  AND ev.tenant_id = d.tenant_id AND ev.id = d.event_id
RETURNING d.tenant_id, d.id, d.endpoint_id, d.attempt_count, e.url, e.secret,
    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,
    ev.id, ev.sequence, ev.type, ev.created_at, ev.data::text
"""


async def claim(
    conn: psycopg.AsyncConnection,
    tenants: list[uuid.UUID] | None,
    limit: int,
    lease: uuid.UUID,
    lease_seconds: float,
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        _CLAIM,
        {"tenants": tenants, "limit": limit, "lease": lease, "lease_seconds": lease_seconds},
    )
    return list(await cur.fetchall())


_DELIVERED = """
WITH d AS (
    UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),
        attempt_count = attempt_count + 1, attempts = attempts || %(attempt)s,
        next_attempt_at = NULL, lease = NULL, locked_until = NULL
    WHERE tenant_id = %(tenant)s AND id = %(id)s AND lease = %(lease)s AND status = 'pending'
    RETURNING tenant_id, endpoint_id
),
ep AS (
    UPDATE webhook_endpoints e SET consecutive_failures = 0, circuit_open_until = NULL
    FROM d WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
      AND (e.consecutive_failures <> 0 OR e.circuit_open_until IS NOT NULL)
)
SELECT count(*) FROM d
"""

# A failed attempt: schedule the retry, or give up (the endpoint is then
# `failing` and waits to be resumed); count it against the endpoint's circuit.
_FAILED = """
WITH d AS (
    UPDATE webhook_deliveries SET
        status = CASE WHEN %(give_up)s THEN 'failed' ELSE 'pending' END,
        attempt_count = attempt_count + 1, attempts = attempts || %(attempt)s,
        next_attempt_at = CASE WHEN %(give_up)s THEN NULL
            ELSE now() + make_interval(secs => %(retry_in)s) END,
        lease = NULL, locked_until = NULL
    WHERE tenant_id = %(tenant)s AND id = %(id)s AND lease = %(lease)s AND status = 'pending'
    RETURNING tenant_id, endpoint_id
),
ep AS (
    UPDATE webhook_endpoints e SET
        consecutive_failures = e.consecutive_failures + 1,
        circuit_open_until = CASE WHEN e.consecutive_failures + 1 >= %(threshold)s
            THEN now() + make_interval(secs => %(cooldown)s) ELSE e.circuit_open_until END,
        status = CASE WHEN %(give_up)s AND e.status = 'enabled' THEN 'failing' ELSE e.status END,
        updated_at = CASE WHEN %(give_up)s THEN clock_timestamp() ELSE e.updated_at END
    FROM d WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
)
SELECT count(*) FROM d
"""


async def record_delivered(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    lease: uuid.UUID,
    attempt: dict[str, Any],
) -> bool:
    """False when the lease was lost (another worker took the delivery over)."""
    cur = await conn.execute(
        _DELIVERED,
        {"tenant": tenant_id, "id": delivery_id, "lease": lease, "attempt": jsonb([attempt])},
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def record_failed(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    lease: uuid.UUID,
    attempt: dict[str, Any],
    *,
    retry_in: float | None,
    threshold: int,
    cooldown: float,
) -> bool:
    """Record a failed attempt; `retry_in` None means the retry budget is spent."""
    cur = await conn.execute(
        _FAILED,
        {
            "tenant": tenant_id,
            "id": delivery_id,
            "lease": lease,
            "attempt": jsonb([attempt]),
            "give_up": retry_in is None,
            "retry_in": retry_in or 0.0,
            "threshold": threshold,
            "cooldown": cooldown,
        },
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def now(conn: psycopg.AsyncConnection) -> datetime:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    value: datetime = row[0]
    return value
