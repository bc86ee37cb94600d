"""Webhook signatures: `Tally-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

The key is the endpoint's whole secret string (`whsec_...`) as UTF-8. Receivers
verify with `verify` (or the recipe in docs/webhooks.md): recompute the HMAC
over the raw body, compare in constant time, and refuse old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Tally-Signature"
PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds


class InvalidSignature(Exception):
    """The signature header is missing, malformed, wrong or too old."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header(
    secret: str, body: bytes, timestamp: int | None = None, previous: str | None = None
) -> str:
    """The Tally-Signature value for `body`, signed now (or at `timestamp`); with
    `previous` (a rotated-out secret still in its grace period), a second v1."""
    t = int(time.time()) if timestamp is None else timestamp
    value = f"t={t},v1={signature(secret, t, body)}"
    if previous is not None:
        value += f",v1={signature(previous, t, body)}"
    return value


def verify(
    secret: str,
    body: bytes,
    value: str | None,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a Tally-Signature header; returns its timestamp or raises InvalidSignature."""
    if not value:
        raise InvalidSignature("no signature header")
    timestamp: int | None = None
    candidates = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isascii() and item.isdigit():
            timestamp = int(item)
        elif key == "v1":
            candidates.append(item)
    if timestamp is None or not candidates:
        raise InvalidSignature("malformed signature header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise InvalidSignature("signature does not match")
    return timestamp
