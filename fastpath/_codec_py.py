"""Pure-Python twin of `fastpath._codec_c`: the reference the compiled module must match.

Import `fastpath.codec`, never this module directly: it picks the compiled twin when it
is available. Every public name here exists, with the same behaviour, in `_codec_c.pyx`.
"""

from __future__ import annotations

import base64
import json
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
    "repeated_key",
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


def repeated_key(body: bytes) -> str | None:
    """The path of the first key that one object of the JSON text `body` holds twice, or None.

    RFC 8259 leaves a repeated name's meaning open (most decoders, msgspec included, keep
    the last value; others the first, or refuse), so a body that repeats one means
    different things to different readers. Keys are compared as decoded ("a" and
    "\\u0061" are the same key) and named as `control_char_fields` names paths, e.g.
    "transfers[3].amount". `body` must be valid JSON (decode it first): this is a scan,
    not a parser.
    """
    if not isinstance(body, bytes):
        raise TypeError(f"expected bytes, not {type(body).__name__}")
    # A frame per open container: [keys seen (None: an array), the frame around it,
    # the key being read (an object) or the item's index (an array), whether a key
    # comes next]. Paths are built only for the answer.
    top: list[Any] | None = None
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == 0x22:  # '"'
            start = i + 1
            i = start
            escaped = False
            while i < n and body[i] != 0x22:
                if body[i] == 0x5C:  # a backslash: skip the escaped character
                    escaped = True
                    i += 1
                i += 1
            if top is not None and top[3]:
                raw = body[start:i]
                key = json.loads(b'"' + raw + b'"') if escaped else raw.decode()
                if key in top[0]:
                    return _join(_path(top[1]), key)
                top[0].add(key)
                top[2], top[3] = key, False
        elif c == 0x7B:  # '{'
            top = [set(), top, None, True]
        elif c == 0x5B:  # '['
            top = [None, top, 0, False]
        elif c == 0x7D or c == 0x5D:  # '}' or ']'
            if top is None:
                raise ValueError("not JSON: a bracket closes nothing")
            top = top[1]
        elif c == 0x2C:  # ','
            if top is None:
                raise ValueError("not JSON: a comma outside any container")
            if top[0] is None:
                top[2] += 1
            else:
                top[3] = True
        i += 1
    return None


def _path(frame: list[Any] | None) -> str:
    """The path of the container inside `frame`'s (None: the document itself)."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame[1]
    path = ""
    for frame in reversed(frames):
        path = f"{path}[{frame[2]}]" if frame[0] is None else _join(path, frame[2])
    return path


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
