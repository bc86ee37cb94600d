"""SQL for the outbox: events numbered per tenant in commit order."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from service.db.ids import new_id
from service.db.json import jsonb

# The counter row stays locked until commit, so sequence order is commit order.
_APPEND = """
WITH s AS (
    UPDATE tenants SET event_seq = event_seq + 1 WHERE id = %(tenant)s RETURNING event_seq
)
INSERT INTO events (tenant_id, id, sequence, type, data, created_at)
SELECT %(tenant)s, %(id)s, s.event_seq, %(type)s, %(data)s, clock_timestamp() FROM s
"""


async def append(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, kind: str, data: dict[str, Any]
) -> None:
    """Add one event in the caller's transaction."""
    await conn.execute(
        _APPEND, {"tenant": tenant_id, "id": new_id(), "type": kind, "data": jsonb(data)}
    )


# Reading the feed needs no gap handling: a tenant's counter row is locked
# from the increment until commit, so an event becomes visible only after
# every lower sequence has committed, and a rolled-back write hands its
# numbers back to the next writer. `sequence > after` therefore never skips.
EVENT_COLUMNS = "id, sequence, type, created_at, data::text"

_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE tenant_id = %(tenant)s AND sequence > %(after)s
ORDER BY sequence LIMIT %(limit)s
"""

_PAGE_OF_TYPES = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE tenant_id = %(tenant)s AND sequence > %(after)s AND type = ANY(%(types)s)
ORDER BY sequence LIMIT %(limit)s
"""


async def page(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    after: int,
    limit: int,
    types: list[str] | None = None,
) -> list[tuple[Any, ...]]:
    """Up to `limit` events with sequence > `after`, oldest first (rows of EVENT_COLUMNS)."""
    query = _PAGE if types is None else _PAGE_OF_TYPES
    cur = await conn.execute(
        query, {"tenant": tenant_id, "after": after, "limit": limit, "types": types}
    )
    return list(await cur.fetchall())


async def last_sequence(conn: psycopg.AsyncConnection, tenant_id: uuid.UUID) -> int:
    """The tenant's last committed event sequence (0 before any event)."""
    cur = await conn.execute("SELECT event_seq FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0
