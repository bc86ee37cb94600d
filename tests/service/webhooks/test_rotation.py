"""Rotating a webhook endpoint's signing secret: the new secret is shown once, the
replaced one goes on signing (a second v1) for its grace period and is then erased,
and a refused rotation changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service import crypto
from service.ledger import vault as vault_module
from service.ledger.vault import Vault
from service.webhooks import endpoints, signing
from tests.conftest import Tenant
from tests.service.api.helpers import assert_error, field_names
from tests.service.webhooks.conftest import eventually
from tests.service.webhooks.receiver import Receiver
from tests.service.webhooks.test_dispatcher import (
    all_delivered,
    open_accounts,
    register,
    verify_like_the_docs,
)

PUBLIC = "https://93.184.215.14/tally/hooks"  # never contacted by the session app


async def rotate(
    api: httpx.AsyncClient, tenant: Tenant, hook_id: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    r = await api.post(f"/api/webhooks/{hook_id}/rotate-secret", headers=tenant.headers(), **kwargs)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def sealed_secrets(
    app: Starlette, tenant: Tenant, hook_id: str
) -> tuple[bytes | None, bytes | None, datetime | None]:
    """(secret, previous_secret, previous_secret_expires_at) as stored."""
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT secret, previous_secret, previous_secret_expires_at FROM webhook_endpoints"
            " WHERE tenant_id = %s AND id = %s",
            (tenant.tenant_id, uuid.UUID(hook_id)),
        )
        row = await cur.fetchone()
    assert row is not None
    secret, previous, until = row
    return bytes(secret), (bytes(previous) if previous is not None else None), until


def signatures(header: str) -> list[str]:
    return [part[3:] for part in header.split(",") if part.startswith("v1=")]


async def next_delivery(
    api: httpx.AsyncClient, tenant: Tenant, receiver: Receiver, run_dispatcher: Any, hook_id: str
) -> tuple[bytes, str]:
    """Make one event, deliver it to the endpoint (its first delivery), and return
    the body and the Tally-Signature that the receiver got."""
    await open_accounts(api, tenant, 1)
    async with run_dispatcher(tenant):
        await eventually(all_delivered(api, tenant, hook_id, 1))
    request = receiver.requests[-1]
    headers = {k.lower(): v for k, v in request.headers.items()}
    return request.body, headers["tally-signature"]


def accepted(body: bytes, header: str, *secrets: str) -> list[bool]:
    """Whether a receiver holding each secret accepts the delivery."""
    verdicts = []
    for secret in secrets:
        try:
            signing.verify(secret, body, header)
        except signing.InvalidSignature:
            verdicts.append(False)
        else:
            verdicts.append(True)
    return verdicts


# --- the API (session app; no deliveries) -------------------------------------------


async def test_rotation_shows_the_new_secret_once_and_keeps_the_old_one_a_day(client, app, tenant):
    created = await register(client, tenant, PUBLIC)
    before = datetime.now(UTC)
    rotated = await rotate(client, tenant, created["id"])  # no body: the defaults
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert before + timedelta(hours=24) <= until <= datetime.now(UTC) + timedelta(hours=24)
    assert {k: v for k, v in rotated.items() if k not in ("secret", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("secret", "updated_at")
    } | {"previous_secret_expires_at": rotated["previous_secret_expires_at"]}

    r = await client.get(f"/api/webhooks/{created['id']}", headers=tenant.headers())
    shown = r.json()["data"]
    assert "secret" not in shown and rotated["secret"] not in r.text
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    # Both are sealed at rest, bound to the endpoint, and open to what was shown.
    secret, previous, _ = await sealed_secrets(app, tenant, created["id"])
    assert previous is not None
    hook_id = uuid.UUID(created["id"])
    vault = app.state.vault
    assert (
        await endpoints.open_secret(vault, tenant.tenant_id, hook_id, secret) == rotated["secret"]
    )
    assert (
        await endpoints.open_secret(vault, tenant.tenant_id, hook_id, previous) == created["secret"]
    )
    assert created["secret"].encode() not in previous


async def test_rotation_with_no_grace_period_forgets_the_old_secret(client, app, tenant):
    created = await register(client, tenant, PUBLIC)
    rotated = await rotate(client, tenant, created["id"], {"previous_secret_ttl_seconds": 0})
    assert rotated["previous_secret_expires_at"] is None
    _, previous, until = await sealed_secrets(app, tenant, created["id"])
    assert previous is None and until is None


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"previous_secret_ttl_seconds": -1}, 422, "previous_secret_ttl_seconds"),
        ({"previous_secret_ttl_seconds": 7 * 24 * 3600 + 1}, 422, "previous_secret_ttl_seconds"),
        ({"previous_secret_ttl_seconds": "1h"}, 400, "previous_secret_ttl_seconds"),
        ({"previous_secret_ttl_seconds": 1.5}, 400, "previous_secret_ttl_seconds"),
        ({"previous_secret_ttl_seconds": None}, 400, "previous_secret_ttl_seconds"),
        ({"secret": "whsec_mine"}, 400, "secret"),
        ([], 400, None),
    ],
)
async def test_bad_rotations_are_refused_and_change_nothing(
    client, app, tenant, body, status, field
):
    created = await register(client, tenant, PUBLIC)
    stored = await sealed_secrets(app, tenant, created["id"])
    r = await client.post(
        f"/api/webhooks/{created['id']}/rotate-secret", json=body, headers=tenant.headers()
    )
    error = assert_error(r, status, "BAD_REQUEST" if status == 400 else "VALIDATION_ERROR")
    if field:
        assert field in field_names(error)
    assert await sealed_secrets(app, tenant, created["id"]) == stored


async def test_rotation_needs_json_an_endpoint_of_ones_own_and_the_scope(
    client, app, tenant, other_tenant
):
    created = await register(client, tenant, PUBLIC)
    url = f"/api/webhooks/{created['id']}/rotate-secret"
    stored = await sealed_secrets(app, tenant, created["id"])
    json_headers = {**tenant.headers(), "Content-Type": "application/json"}
    assert_error(await client.post(url, content=b"{", headers=json_headers), 400, "BAD_REQUEST")
    r = await client.post(
        url, content=b"ttl=0", headers={**tenant.headers(), "Content-Type": "text/plain"}
    )
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await client.post(url, headers=other_tenant.headers()), 404, "NOT_FOUND")
    r = await client.post(url, headers=tenant.headers("ledger:read", "ledger:write"))
    assert_error(r, 403, "FORBIDDEN")
    unknown = f"/api/webhooks/{uuid.uuid4()}/rotate-secret"
    assert_error(await client.post(unknown, headers=tenant.headers()), 404, "NOT_FOUND")
    assert_error(
        await client.post("/api/webhooks/nope/rotate-secret", headers=tenant.headers()),
        400,
        "BAD_REQUEST",
    )
    assert await sealed_secrets(app, tenant, created["id"]) == stored


@pytest.mark.parametrize("body", [b"\x0c", b"\x0b", b" \x0c\n", b"\x00"])
async def test_a_body_of_non_json_whitespace_is_refused_not_taken_as_empty(
    client, app, tenant, body
):
    """Only JSON's whitespace makes a body empty: form feed or vertical tab
    (which bytes.strip() would drop) is a bad body, and nothing rotates."""
    created = await register(client, tenant, PUBLIC)
    url = f"/api/webhooks/{created['id']}/rotate-secret"
    stored = await sealed_secrets(app, tenant, created["id"])
    json_headers = {**tenant.headers(), "Content-Type": "application/json"}
    assert_error(await client.post(url, content=body, headers=json_headers), 400, "BAD_REQUEST")
    r = await client.post(url, content=body, headers=tenant.headers())
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await sealed_secrets(app, tenant, created["id"]) == stored


async def test_a_body_of_json_whitespace_counts_as_empty(client, app, tenant):
    created = await register(client, tenant, PUBLIC)
    url = f"/api/webhooks/{created['id']}/rotate-secret"
    stored = await sealed_secrets(app, tenant, created["id"])
    r = await client.post(url, content=b" \t\r\n", headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert await sealed_secrets(app, tenant, created["id"]) != stored


async def test_a_key_rotation_reseals_the_previous_secret_too(client, app, tenant, settings):
    created = await register(client, tenant, PUBLIC)
    await rotate(client, tenant, created["id"])
    _, before, _ = await sealed_secrets(app, tenant, created["id"])
    assert before is not None
    new_kid = await vault_module.rotate(app.state.db, settings.encryption_key)
    worker = Vault(app.state.db, settings.encryption_key)
    await worker.load()
    while await worker.reseal():
        pass
    _, after, _ = await sealed_secrets(app, tenant, created["id"])
    assert after is not None and crypto.key_id(after) == new_kid != crypto.key_id(before)
    hook_id = uuid.UUID(created["id"])
    assert (
        await endpoints.open_secret(worker, tenant.tenant_id, hook_id, after) == created["secret"]
    )


# --- deliveries (a dispatcher and a real receiver) -----------------------------------


async def test_during_the_grace_period_deliveries_carry_both_signatures(
    api, owner, receiver, run_dispatcher
):
    created = await register(api, owner, receiver.url)
    rotated = await rotate(api, owner, created["id"])
    body, header = await next_delivery(api, owner, receiver, run_dispatcher, created["id"])
    assert len(signatures(header)) == 2
    # A receiver holding either secret accepts it, with the library or the docs' recipe.
    assert accepted(body, header, rotated["secret"], created["secret"]) == [True, True]
    for secret in (rotated["secret"], created["secret"]):
        assert verify_like_the_docs(secret, body, header)
    assert not verify_like_the_docs("whsec_other", body, header)
    for malformed in ("", "garbage", "t=\u00b2," + header.split(",", 1)[1], "v1=" + "0" * 64):
        assert not verify_like_the_docs(rotated["secret"], body, malformed)


async def test_after_the_grace_period_only_the_new_secret_signs_and_the_old_is_erased(
    api, hook_app, owner, receiver, run_dispatcher
):
    created = await register(api, owner, receiver.url)
    rotated = await rotate(api, owner, created["id"], {"previous_secret_ttl_seconds": 1})
    await asyncio.sleep(1.2)
    r = await api.get(f"/api/webhooks/{created['id']}", headers=owner.headers())
    assert r.json()["data"]["previous_secret_expires_at"] is None
    body, header = await next_delivery(api, owner, receiver, run_dispatcher, created["id"])
    assert len(signatures(header)) == 1
    assert accepted(body, header, rotated["secret"], created["secret"]) == [True, False]
    # The dispatcher's upkeep erased the expired secret.
    _, previous, until = await sealed_secrets(hook_app, owner, created["id"])
    assert previous is None and until is None


async def test_rotating_again_in_the_grace_period_keeps_the_original_secret_signing(
    api, owner, receiver, run_dispatcher
):
    """A client whose rotation answer was lost retries it: the receiver still holds
    the original secret, so that one (not the never-seen intermediate) keeps signing."""
    created = await register(api, owner, receiver.url)
    lost = await rotate(api, owner, created["id"])
    retried = await rotate(api, owner, created["id"], {"previous_secret_ttl_seconds": 3600})
    assert retried["previous_secret_expires_at"] < lost["previous_secret_expires_at"]
    body, header = await next_delivery(api, owner, receiver, run_dispatcher, created["id"])
    assert len(signatures(header)) == 2
    secrets = (retried["secret"], created["secret"], lost["secret"])
    assert accepted(body, header, *secrets) == [True, True, False]


async def test_rotating_with_no_grace_period_drops_every_earlier_secret(
    api, owner, receiver, run_dispatcher
):
    created = await register(api, owner, receiver.url)
    first = await rotate(api, owner, created["id"])
    final = await rotate(api, owner, created["id"], {"previous_secret_ttl_seconds": 0})
    assert final["previous_secret_expires_at"] is None
    body, header = await next_delivery(api, owner, receiver, run_dispatcher, created["id"])
    assert len(signatures(header)) == 1
    secrets = (final["secret"], first["secret"], created["secret"])
    assert accepted(body, header, *secrets) == [True, False, False]
