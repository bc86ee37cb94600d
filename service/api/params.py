"""Parsing path and query parameters and single-valued headers; each failure is a 400
naming the parameter or header."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from starlette.requests import Request

from fastpath import codec
from service.db.ids import parse_id
from service.errors import bad_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_CURRENCY = re.compile(r"^[A-Z][A-Z0-9_]{2,11}$")
_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)
# Cursors are 16 bytes of URL-safe base64 (the last character carries 2 bits).
CURSOR_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{21}[AQgw]$"}
# Entry cursors carry a non-negative 63-bit integer.
ENTRY_CURSOR_SCHEMA = {"type": "string", "pattern": "^A{10}[AB][A-Za-z0-9_-]{10}[AQgw]$"}


def _bad(name: str, message: str) -> Exception:
    return bad_request(f"Invalid parameter {name!r}.", [{"field": name, "message": message}])


def single_header(request: Request, name: str) -> str | None:
    """Header `name`'s value (None without it); 400 when it comes more than once:
    which of two values a proxy in front went by is a guess."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise bad_request(
            f"{name} given more than once.", [{"field": name, "message": "must be given once"}]
        )
    return values[0] if values else None


def path_id(request: Request, name: str = "id") -> uuid.UUID:
    value = parse_id(request.path_params[name])
    if value is None:
        raise _bad(name, "must be a UUID")
    return value


def limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # The length first: int() raises ValueError past 4,300 digits (that was a 500).
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def cursor(request: Request) -> uuid.UUID | None:
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    value = codec.decode_cursor(raw)
    if value is None:
        raise _bad("cursor", "is not a cursor this API returned")
    return value


def currency(request: Request) -> str | None:
    raw = request.query_params.get("currency")
    if raw is not None and not _CURRENCY.match(raw):
        raise _bad("currency", "must match ^[A-Z][A-Z0-9_]{2,11}$")
    return raw


def choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and raw not in allowed:
        raise _bad(name, f"must be one of {', '.join(allowed)}")
    return raw


def uuid_param(request: Request, name: str) -> uuid.UUID | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = parse_id(raw)
    if value is None:
        raise _bad(name, "must be a UUID")
    return value


def timestamp(request: Request, name: str) -> datetime | None:
    """An ISO 8601 instant with a time zone (e.g. 2026-01-01T00:00:00Z)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(name, "must be an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise _bad(name, "must include a time zone, e.g. Z")
    # Nothing happened before 1970 or after 9999: clamp rather than refuse.
    return min(max(value, _MIN_TIME), _MAX_TIME)


def int_cursor(request: Request) -> int | None:
    """Cursor of a list keyed by an integer id (opaque to clients)."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    value = codec.decode_cursor(raw)
    if value is None or value.int >= 2**63:
        raise _bad("cursor", "is not a cursor this API returned")
    return value.int
