"""An event as the feed lists it and a webhook delivers it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


def event(
    event_id: uuid.UUID, sequence: int, kind: str, created_at: datetime, data_json: str
) -> dict[str, Any]:
    """`{"id", "sequence", "type", "created_at", "data"}`; `data` is spliced in unparsed."""
    return {
        "id": str(event_id),
        "sequence": sequence,
        "type": kind,
        "created_at": created_at.astimezone(UTC),
        "data": msgspec.Raw(data_json.encode()),
    }


def event_body(
    event_id: uuid.UUID, sequence: int, kind: str, created_at: datetime, data_json: str
) -> bytes:
    return _encode(event(event_id, sequence, kind, created_at, data_json))
