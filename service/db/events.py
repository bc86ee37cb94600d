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
