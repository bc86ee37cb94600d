"""The `Idempotency-Key` header: a write's claim, and the answer to a repeat.

A key is scoped to the API client. The same key with the same request (route
and body) gets the first answer again, marked `Idempotent-Replayed: true`;
with another request, 409 IDEMPOTENCY_KEY_REUSED; while the first still runs,
409 IDEMPOTENCY_KEY_IN_USE. The ledger claims the key, and stores the answer,
in the work's own transaction (service.ledger.idempotency).
"""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec
from starlette.requests import Request

from service.api.params import single_header
from service.auth.tokens import Principal
from service.errors import ApiError, bad_request, unauthenticated
from service.ledger.idempotency import IdempotencyClaim

REPLAYED = {"Idempotent-Replayed": "true"}
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_KEY_RULE = "must be 1 to 255 printable ASCII characters"


def claim_of(
    request: Request, principal: Principal, body: msgspec.Struct
) -> IdempotencyClaim | None:
    """The request's claim on its Idempotency-Key; None without the header.

    400 BAD_REQUEST when the key is not 1 to 255 printable ASCII characters,
    or when the header comes more than once: which of two keys would guard the
    write is a guess, and a guess may let a retry move money twice.
    """
    key = single_header(request, "Idempotency-Key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise bad_request(
            "Invalid Idempotency-Key.",
            [{"field": "Idempotency-Key", "message": _KEY_RULE}],
        )
    try:
        client_id = uuid.UUID(principal.client_id)
    except ValueError:
        raise unauthenticated() from None
    return IdempotencyClaim(client_id, key, _fingerprint(request, body))


def _fingerprint(request: Request, body: msgspec.Struct) -> bytes:
    """Same key with another route or another body is a different request.

    The path is the scope's: for these routes (fixed text and a UUID) it is
    what `request.url.path` gives, without building a URL for each request.
    """
    canonical = msgspec.json.encode(body)
    return hashlib.sha256(request.scope["path"].encode() + b"\0" + canonical).digest()


def stored_answer(existing: tuple, claim: IdempotencyClaim) -> tuple[int, str]:
    """(status, body) stored for the key's first request, when this is a repeat of
    it; 409 when the key belongs to another request or its request still runs."""
    state, stored_digest, status, body = existing
    if stored_digest is not None and bytes(stored_digest) != claim.request_hash:
        raise ApiError(
            409, "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was used with a different request.",
        )  # fmt: skip
    if state != "done":
        raise ApiError(
            409, "IDEMPOTENCY_KEY_IN_USE",
            "A request with this Idempotency-Key is still in flight; retry shortly.",
            headers={"Retry-After": "1"},
        )  # fmt: skip
    return status, body
