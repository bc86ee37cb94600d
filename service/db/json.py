"""JSON parameters for PostgreSQL, encoded by msgspec (datetimes, UUIDs included)."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg.types.json import Jsonb

_encode = msgspec.json.Encoder().encode


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_encode)
