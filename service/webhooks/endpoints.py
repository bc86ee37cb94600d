"""Webhook endpoints: register (SSRF-checked, secret sealed), read, change, rotate
the signing secret, delete.

The signing secret is sealed under the data key ring, bound to its tenant and
endpoint id, and shown to the client once, in the answer to the registration
(or to the rotation that made it). After a rotation the replaced secret goes on
signing deliveries, beside the new one, for a grace period, so that a receiver
can switch secrets without refusing a delivery.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from service import crypto
from service.db import webhooks as sql
from service.db.ids import new_id
from service.db.pool import Database
from service.ledger.vault import WEBHOOK_SECRET_AAD, Vault
from service.webhooks import policy, signing, ssrf
from service.webhooks.schemas import EVENT_TYPES, WebhookCreate, WebhookPatch


class EndpointNotFound(Exception):
    pass


def _aad(tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> bytes:
    return WEBHOOK_SECRET_AAD + tenant_id.bytes + endpoint_id.bytes


async def seal_secret(
    vault: Vault, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, secret: str
) -> bytes:
    ring = await vault.ring()
    return ring.encrypt(secret.encode(), _aad(tenant_id, endpoint_id))


async def open_secret(
    vault: Vault, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, sealed: bytes
) -> str:
    aad = _aad(tenant_id, endpoint_id)
    try:
        plain = (await vault.ring()).decrypt(sealed, aad)
    except crypto.UnknownKey:
        await vault.load()  # a key added since this process loaded the ring
        plain = (await vault.ring()).decrypt(sealed, aad)
    return plain.decode()


def normalise_events(events: list[str]) -> list[str]:
    """Distinct types in canonical order; "*" alone when it is among them."""
    if "*" in events:
        return ["*"]
    return [t for t in EVENT_TYPES if t in events]


async def create(
    db: Database,
    vault: Vault,
    tenant_id: uuid.UUID,
    spec: WebhookCreate,
    allow_private: bool,
    resolver: ssrf.Resolver | None = None,
) -> tuple[tuple[Any, ...], str]:
    """(the endpoint's row, its signing secret); raises ssrf.UnsafeUrl."""
    await ssrf.check(spec.url, allow_private, resolver)
    endpoint_id = new_id()
    secret = signing.new_secret()
    sealed = await seal_secret(vault, tenant_id, endpoint_id, secret)
    async with db.connection() as conn:
        row = await sql.create_endpoint(
            conn,
            tenant_id,
            endpoint_id,
            spec.url,
            spec.description,
            normalise_events(list(spec.events)),
            sealed,
        )
    return row, secret


async def get(db: Database, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> tuple[Any, ...]:
    async with db.connection() as conn:
        row = await sql.get_endpoint(conn, tenant_id, endpoint_id)
    if row is None:
        raise EndpointNotFound
    return row


async def update(
    db: Database,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    patch: WebhookPatch,
    allow_private: bool,
    resolver: ssrf.Resolver | None = None,
) -> tuple[Any, ...]:
    changes: dict[str, Any] = {}
    if patch.url is not msgspec.UNSET:
        changes["url"] = patch.url
    if patch.events is not msgspec.UNSET:
        changes["event_types"] = normalise_events(list(patch.events))
    if patch.description is not msgspec.UNSET:
        changes["description"] = patch.description
    if patch.status is not msgspec.UNSET:
        changes["status"] = patch.status
    # The endpoint must exist before its new URL is checked (404 before 422).
    await get(db, tenant_id, endpoint_id)
    if "url" in changes:
        await ssrf.check(changes["url"], allow_private, resolver)
    async with db.connection() as conn:
        row = (
            await sql.update_endpoint(conn, tenant_id, endpoint_id, changes)
            if changes
            else await sql.get_endpoint(conn, tenant_id, endpoint_id)
        )
    if row is None:
        raise EndpointNotFound
    return row


async def rotate_secret(
    db: Database,
    vault: Vault,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    keep_previous_seconds: int,
) -> tuple[tuple[Any, ...], str]:
    """(the endpoint's row, its new signing secret); the old one signs too for
    `keep_previous_seconds`."""
    secret = signing.new_secret()
    sealed = await seal_secret(vault, tenant_id, endpoint_id, secret)
    async with db.connection() as conn:
        row = await sql.rotate_secret(conn, tenant_id, endpoint_id, sealed, keep_previous_seconds)
    if row is None:
        raise EndpointNotFound
    return row, secret


async def delete(db: Database, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    async with db.connection() as conn:
        if not await sql.delete_endpoint(conn, tenant_id, endpoint_id):
            raise EndpointNotFound


def to_dict(row: tuple[Any, ...], threshold: int, now: datetime | None = None) -> dict[str, Any]:
    """The API representation of a row of db.webhooks.ENDPOINT_COLUMNS."""
    (endpoint_id, url, description, event_types, status, failures, open_until,
     created_at, updated_at, previous_until) = row  # fmt: skip
    current = now or datetime.now(UTC)
    return {
        "id": str(endpoint_id),
        "url": url,
        "description": description,
        "events": list(event_types),
        "status": status,
        "circuit": {
            "state": policy.circuit_state(failures, open_until, current, threshold),
            "consecutive_failures": failures,
            "open_until": open_until,
        },
        "created_at": created_at,
        "updated_at": updated_at,
        "previous_secret_expires_at": (
            previous_until if previous_until is not None and previous_until > current else None
        ),
    }


def delivery_to_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """The API representation of a row of db.webhooks.DELIVERY_COLUMNS."""
    (delivery_id, event_id, event_type, sequence, status, attempt_count, attempts,
     next_attempt_at, delivered_at, created_at) = row  # fmt: skip
    return {
        "id": str(delivery_id),
        "event_id": str(event_id),
        "event_type": event_type,
        "sequence": sequence,
        "status": status,
        "attempt_count": attempt_count,
        "attempts": attempts,
        "next_attempt_at": next_attempt_at,
        "delivered_at": delivered_at,
        "created_at": created_at,
    }
