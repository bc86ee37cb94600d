"""JSON to and from PostgreSQL through msgspec (datetimes, UUIDs included)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

_encode = msgspec.json.Encoder().encode


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_encode)


# A list of keys for `json_to_recordset(%s::json) AS k(t uuid, i uuid, n int)`:
# one text parameter encoded by msgspec costs a third of what psycopg's
# per-element dumping of two uuid[] arrays does.
KEY_RECORDS = "json_to_recordset(%s::json) AS k(t uuid, i uuid, n int)"


def records(rows: list[dict[str, Any]]) -> str:
    """Rows for a `json_to_recordset(%s::json)` parameter."""
    return _encode(rows).decode()


async def rows_by_key(
    conn: psycopg.AsyncConnection, query: str, keys: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[tuple | None]:
    """Run `query` (it joins KEY_RECORDS and selects k.n first) for `keys`: the
    row of each key, in the keys' order (None: no such row)."""
    cur = await conn.execute(query, (key_records(keys),))
    rows: list[tuple | None] = [None] * len(keys)
    for n, *row in await cur.fetchall():
        rows[n - 1] = tuple(row)
    return rows


def key_records(keys: list[tuple[uuid.UUID, uuid.UUID]]) -> str:
    """(tenant_id, id) pairs as KEY_RECORDS rows; `n` numbers them from 1."""
    return records([{"t": t, "i": i, "n": n} for n, (t, i) in enumerate(keys, 1)])


async def decode_with_msgspec(conn: psycopg.AsyncConnection) -> None:
    """Pool `configure` hook: json/jsonb columns are parsed by msgspec, not the
    standard library (every account and transfer row carries its metadata)."""
    set_json_loads(msgspec.json.decode, conn)
