"""JSON to and from PostgreSQL through msgspec (datetimes, UUIDs included)."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

_encode = msgspec.json.Encoder().encode


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_encode)


async def decode_with_msgspec(conn: psycopg.AsyncConnection) -> None:
    """Pool `configure` hook: json/jsonb columns are parsed by msgspec, not the
    standard library (every account and transfer row carries its metadata)."""
    set_json_loads(msgspec.json.decode, conn)
