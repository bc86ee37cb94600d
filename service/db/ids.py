"""Server-generated ids: UUIDv7, so primary keys arrive in time order."""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_id() -> uuid.UUID:
    return uuid7()


def parse_id(text: str) -> uuid.UUID | None:
    """The UUID in `text`, or None when it is not one (in canonical or hex form)."""
    if len(text) not in (32, 36):
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
