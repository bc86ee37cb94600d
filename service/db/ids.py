"""Server-generated ids: UUIDv7, so primary keys arrive in time order."""

from __future__ import annotations

import uuid

import msgspec
from uuid_utils.compat import uuid7

# msgspec parses the canonical and the 32-digit hex forms in C, several times
# faster than uuid.UUID's Python; anything it refuses goes to uuid.UUID.
_decode_uuid = msgspec.json.Decoder(uuid.UUID).decode


def new_id() -> uuid.UUID:
    return uuid7()


def parse_id(text: str) -> uuid.UUID | None:
    """The UUID in `text`, or None when it is not one (in canonical or hex form)."""
    if len(text) not in (32, 36):
        return None
    if "\\" not in text:  # no JSON escapes: msgspec reads exactly `text`
        try:
            return _decode_uuid(f'"{text}"'.encode())
        except (msgspec.DecodeError, UnicodeEncodeError):
            pass
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
