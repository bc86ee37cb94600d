"""SQL for usage: hourly request counts (upserted) and daily transfer volume."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

# (tenant_id, client_id, hour, method, route, status) -> requests
Counts = dict[tuple[uuid.UUID, str, datetime, str, str, int], int]

_UPSERT = """
INSERT INTO api_usage AS u (tenant_id, client_id, hour, method, route, status, requests)
SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::text[], %s::text[],
                     %s::int[], %s::bigint[])
ON CONFLICT (tenant_id, hour, client_id, method, route, status)
DO UPDATE SET requests = u.requests + EXCLUDED.requests
"""


async def add_requests(conn: psycopg.AsyncConnection, counts: Counts) -> None:
    """Add `counts` to the hourly totals (one statement, whatever the number of rows)."""
    # Sorted, so two workers flushing at once lock rows in the same order.
    rows = sorted(counts.items(), key=lambda kv: (str(kv[0][0]), kv[0][2], *map(str, kv[0][1:])))
    columns: list[list[Any]] = [[] for _ in range(7)]
    for (tenant_id, client_id, hour, method, route, status), requests in rows:
        for column, value in zip(
            columns, (tenant_id, client_id, hour, method, route, status, requests), strict=True
        ):
            column.append(value)
    await conn.execute(_UPSERT, columns)


async def requests_by_hour(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT hour, client_id, method, route, status, requests FROM api_usage"
        " WHERE tenant_id = %s AND hour >= date_trunc('hour', %s::timestamptz) AND hour < %s"
        " ORDER BY hour, client_id, route, method, status",
        (tenant_id, start, end),
    )
    return await cur.fetchall()


async def transfers_by_day(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    first_id: uuid.UUID,
    last_id: uuid.UUID,
) -> list[tuple[Any, ...]]:
    """Per UTC day and currency: transfers created, their amounts, what was posted.

    Ids are UUIDv7 (time ordered), so the id range lets the primary key find
    the tenant's transfers of the period; created_at then cuts exactly.
    """
    cur = await conn.execute(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, currency, count(*),"
        " sum(amount), count(*) FILTER (WHERE status = 'posted'),"
        " coalesce(sum(posted_amount), 0)"
        " FROM transfers"
        " WHERE tenant_id = %s AND id >= %s AND id <= %s"
        " AND created_at >= %s AND created_at < %s"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (tenant_id, first_id, last_id, start, end),
    )
    return await cur.fetchall()
