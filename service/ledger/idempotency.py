"""Idempotency keys in the ledger's words: a write claims its key in its own
transaction and stores its reply there, so a key never does the work twice.

The transfer batcher claims many keys per transaction (service.ledger.transfers);
opening an account claims one (`claim_one`, `store_reply`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec
import psycopg

from service.db import idempotency as sql

# How long a key claimed by a server of an earlier version (which committed
# the claim before its work) waits before a retry of the same request may take
# it over. This version's claims commit with the work, so never linger.
LEASE_SECONDS = 60.0

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class IdempotencyClaim:
    client_id: uuid.UUID
    key: str
    request_hash: bytes


@dataclass(slots=True)
class Claimed:
    """A request not applied because its key was taken: the key's row
    (state, request_hash, response_status, response_body), to replay or refuse."""

    existing: tuple


async def claim_many(
    conn: psycopg.AsyncConnection, claims: list[tuple[int, uuid.UUID, IdempotencyClaim]]
) -> dict[int, tuple]:
    """Claim keys for the current transaction, each given as (n, tenant_id, claim);
    for each key NOT claimed, n mapped to its row (see db.idempotency.claim_batch)."""
    keys = [
        {"n": n, "t": tenant_id, "c": claim.client_id, "k": claim.key,
         "h": claim.request_hash.hex()}
        for n, tenant_id, claim in claims
    ]  # fmt: skip
    return await sql.claim_batch(conn, _encode(keys).decode(), LEASE_SECONDS)


async def claim_one(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID, claim: IdempotencyClaim
) -> Claimed | None:
    """Claim `claim`'s key for the current transaction; None when claimed, else
    the key's row (its request still running, or already answered)."""
    refused = await claim_many(conn, [(0, tenant_id, claim)])
    return Claimed(refused[0]) if 0 in refused else None


async def store_reply(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    claim: IdempotencyClaim,
    status: int,
    body: str,
) -> None:
    """Mark the claimed key answered, in the same transaction as the work."""
    await sql.complete(conn, tenant_id, claim.client_id, claim.key, status, body)
