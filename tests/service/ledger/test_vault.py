"""Holders sealed at rest; rotation adds a key, old ciphertexts still open and get re-sealed."""

from __future__ import annotations

import uuid

import pytest

from service import crypto
from service.ledger import vault as vault_module
from service.ledger.vault import Vault
from service.webhooks import endpoints

HOLDER = {"name": "Alice Example", "email": "alice@example.com", "tax_id": "DE123"}


async def raw_holder(app, tenant, account_id):
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT holder, holder_plain FROM accounts WHERE tenant_id = %s AND id = %s",
            (tenant.tenant_id, uuid.UUID(account_id)),
        )
        return await cur.fetchone()


async def open_with_holder(client, tenant):
    body = {"name": "p", "currency": "USD", "holder": HOLDER}
    r = await client.post("/api/accounts", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    assert r.json()["data"]["holder"] == HOLDER
    return r.json()["data"]["id"]


async def test_holder_is_sealed_at_rest(app, client, tenant):
    account_id = await open_with_holder(client, tenant)
    sealed, plain = await raw_holder(app, tenant, account_id)
    assert plain is None
    assert b"alice" not in bytes(sealed) and b"Alice" not in bytes(sealed)
    assert crypto.key_id(bytes(sealed)) == (await app.state.vault.ring()).active


async def test_ciphertext_is_bound_to_its_row(app, client, tenant):
    first = await open_with_holder(client, tenant)
    sealed, _ = await raw_holder(app, tenant, first)
    with pytest.raises(crypto.DecryptionFailed):
        await app.state.vault.open_holder(tenant.tenant_id, uuid.uuid4(), bytes(sealed))


async def test_rotation_reseals_and_other_workers_learn_the_key(app, client, tenant, settings):
    account_id = await open_with_holder(client, tenant)
    old_sealed, _ = await raw_holder(app, tenant, account_id)
    new_kid = await vault_module.rotate(app.state.db, settings.encryption_key)
    # A second "worker" that loaded its ring before the rotation.
    stale = Vault(app.state.db, settings.encryption_key)
    await stale.ring()
    worker = Vault(app.state.db, settings.encryption_key)
    await worker.load()
    assert (await worker.ring()).active == new_kid
    while await worker.reseal():
        pass
    new_sealed, _ = await raw_holder(app, tenant, account_id)
    assert crypto.key_id(bytes(new_sealed)) == new_kid != crypto.key_id(bytes(old_sealed))
    # The stale worker meets an unknown key id, reloads, and still opens it.
    assert await stale.open_holder(tenant.tenant_id, uuid.UUID(account_id),
                                   bytes(new_sealed)) == HOLDER  # fmt: skip
    r = await client.get(f"/api/accounts/{account_id}", headers=tenant.headers())
    assert r.json()["data"]["holder"] == HOLDER


async def test_a_worker_with_a_stale_ring_never_reseals_back_to_the_old_key(
    app, client, tenant, settings
):
    account_id = await open_with_holder(client, tenant)
    stale = Vault(app.state.db, settings.encryption_key)
    old_kid = (await stale.ring()).active  # loaded before the rotation
    new_kid = await vault_module.rotate(app.state.db, settings.encryption_key)
    worker = Vault(app.state.db, settings.encryption_key)
    while await worker.reseal():
        pass
    # One pass of the stale worker finds the row under a key it does not know
    # (not under its active key, so it is selected): it must learn the key and
    # keep the row on it, not move it back to its own, older active key (its
    # next pass would move it forward again, but meanwhile the row is under
    # the key being rotated away).
    await stale.reseal()
    sealed, _ = await raw_holder(app, tenant, account_id)
    assert crypto.key_id(bytes(sealed)) == new_kid != old_kid
    assert (await stale.ring()).active == new_kid


async def test_plaintext_rows_from_before_encryption_get_sealed(app, client, tenant):
    account_id = await open_with_holder(client, tenant)
    async with app.state.db.connection() as conn:
        await conn.execute(
            "UPDATE accounts SET holder = NULL, holder_plain = %s::jsonb WHERE id = %s",
            ('{"name": "Legacy"}', uuid.UUID(account_id)),
        )
    while await app.state.vault.reseal():
        pass
    sealed, plain = await raw_holder(app, tenant, account_id)
    assert plain is None and sealed is not None
    r = await client.get(f"/api/accounts/{account_id}", headers=tenant.headers())
    assert r.json()["data"]["holder"] == {"name": "Legacy"}


async def test_rotation_reseals_webhook_secrets_too(app, client, tenant, settings):
    """Webhook signing secrets are on the same ring and move to a new key the same way."""
    r = await client.post(
        "/api/webhooks", json={"url": "https://93.184.215.14/hook"}, headers=tenant.headers()
    )
    assert r.status_code == 201, r.text
    hook_id, secret = uuid.UUID(r.json()["data"]["id"]), r.json()["data"]["secret"]

    async def sealed_secret() -> bytes:
        async with app.state.db.connection() as conn:
            cur = await conn.execute(
                "SELECT secret FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
                (tenant.tenant_id, hook_id),
            )
            return bytes((await cur.fetchone())[0])

    before = await sealed_secret()
    new_kid = await vault_module.rotate(app.state.db, settings.encryption_key)
    worker = Vault(app.state.db, settings.encryption_key)
    await worker.load()
    while await worker.reseal():
        pass
    after = await sealed_secret()
    assert crypto.key_id(after) == new_kid != crypto.key_id(before)
    assert await endpoints.open_secret(worker, tenant.tenant_id, hook_id, after) == secret


def test_master_key_must_match():
    sealed = crypto.seal_key(b"k" * 32, "d1", crypto.new_key())
    with pytest.raises(crypto.DecryptionFailed):
        crypto.open_key(b"x" * 32, "d1", sealed)
