"""Pure-Python twin of `fastpath._codec_c`: the reference the compiled module must match.

Import `fastpath.codec`, never this module directly: it picks the compiled twin when it
is available. Every public name here exists, with the same behaviour, in `_codec_c.pyx`.
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

__all__ = [
    "ACCOUNT_COLUMNS",
    "account_to_dict",
    "control_char_fields",
    "decode_cursor",
    "encode_cursor",
    "has_control_char",
]

ACCOUNT_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "currency",
    "status",
    "overdraft_limit",
    "posted",
    "pending_debits",
    "pending_credits",
    "holder",
    "metadata",
    "version",
    "created_at",
    "updated_at",
)

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# 22 characters carry 132 bits; the last one holds 2 bits of the UUID and 4 padding bits,
# which must be zero (A, Q, g, w) so that every UUID has exactly one cursor.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{21}[AQgw]")
_CURSOR_LENGTH = 22


def account_to_dict(row: tuple[Any, ...], show_holder: bool) -> dict[str, Any]:
    """Build the API representation of an account from a row of `ACCOUNT_COLUMNS`.

    The balance is derived from the stored counters: pending = pending_credits -
    pending_debits, available = posted - pending_debits. Datetimes stay datetime objects
    for msgspec to encode.
    The holder is only included when `show_holder` is true (otherwise None).
    Raises ValueError when the row does not have one value per column.
    """
    if len(row) != len(ACCOUNT_COLUMNS):
        raise ValueError(f"account row has {len(row)} values, expected {len(ACCOUNT_COLUMNS)}")
    (
        account_id,
        name,
        currency,
        status,
        overdraft_limit,
        posted,
        pending_debits,
        pending_credits,
        holder,
        metadata,
        version,
        created_at,
        updated_at,
    ) = row
    return {
        "id": str(account_id),
        "name": name,
        "currency": currency,
        "status": status,
        "overdraft_limit": overdraft_limit,
        "balance": {
            "posted": posted,
            "pending": pending_credits - pending_debits,
            "available": posted - pending_debits,
        },
        "holder": holder if show_holder else None,
        "metadata": metadata,
        "version": version,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def has_control_char(s: str) -> bool:
    """Whether `s` contains a C0 control (U+0000-U+001F), DEL (U+007F) or a C1 control."""
    return _CONTROL.search(s) is not None


def control_char_fields(obj: Any, prefix: str = "") -> list[str]:
    """Paths of every string in a decoded JSON value that holds a control character.

    Dict keys are checked as well (a bad key reports its own path). Keys are joined with
    "." after `prefix` and list items appended as "[i]", e.g. "transfers[3].description".
    Paths come in document order, each at most once; numbers, booleans and None are ignored.
    """
    # A dict keeps first-seen order and drops repeats: a bad key with a bad string value,
    # or keys such as "a.b" and "a" -> "b", name the same path twice.
    found: dict[str, None] = {}
    _walk(obj, prefix, found)
    return list(found)


def _walk(obj: Any, path: str, found: dict[str, None]) -> None:
    if isinstance(obj, str):
        if _CONTROL.search(obj) is not None:
            found[path] = None
    elif isinstance(obj, dict):
        for key, value in obj.items():
            is_str = isinstance(key, str)
            child = _join(path, key if is_str else str(key))
            if is_str and _CONTROL.search(key) is not None:
                found[child] = None
            _walk(value, child, found)
    elif isinstance(obj, list):
        for index, item in enumerate(obj):
            _walk(item, f"{path}[{index}]", found)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def encode_cursor(value: uuid.UUID) -> str:
    """The opaque pagination cursor for `value`: its 16 bytes in unpadded URL-safe base64.

    Raises TypeError when `value` is not a uuid.UUID.
    """
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"cursor value must be a uuid.UUID, not {type(value).__name__}")
    return base64.urlsafe_b64encode(value.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: Any) -> uuid.UUID | None:
    """The UUID behind a cursor made by `encode_cursor`, or None when it is not one.

    Only the exact encoding is accepted (22 URL-safe base64 characters with zero padding
    bits), so each UUID has a single cursor. Never raises.
    """
    if not isinstance(cursor, str) or len(cursor) != _CURSOR_LENGTH:
        return None
    if _CURSOR.fullmatch(cursor) is None:
        return None
    return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))
