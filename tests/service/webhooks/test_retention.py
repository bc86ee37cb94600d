"""Delivery retention: the worker deletes settled deliveries once they are older than
TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS, keeps pending and recent ones and other
tenants' rows, and never delivers a deleted delivery's event again."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from starlette.applications import Starlette

from service.db import webhooks as webhook_sql
from service.webhooks import dispatcher as dispatcher_module
from tests.conftest import Tenant, make_tenant
from tests.service.webhooks.conftest import eventually
from tests.service.webhooks.receiver import Receiver
from tests.service.webhooks.test_dispatcher import (
    all_delivered,
    deliveries,
    hook,
    open_accounts,
    register,
)

DAY = 24 * 3600


async def age(app: Starlette, tenant: Tenant, days: int) -> None:
    """Make every delivery of `tenant` `days` older (the clock cannot be moved)."""
    async with app.state.db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET created_at = created_at - make_interval(days => %s)"
            " WHERE tenant_id = %s",
            (days, tenant.tenant_id),
        )


async def count(app: Starlette, tenant_id: uuid.UUID) -> int:
    async with app.state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = %s", (tenant_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_old_settled_deliveries_are_deleted_and_never_sent_again(
    api, hook_app, owner, receiver, run_dispatcher
):
    fine = await register(api, owner, receiver.url)
    down = Receiver()
    down.start()
    try:
        down.respond = lambda _: 500
        broken = await register(api, owner, down.url)
        await open_accounts(api, owner, 2)
        async with run_dispatcher(owner, webhook_retry_schedule=(0.05, 0.05)):
            await eventually(all_delivered(api, owner, fine["id"], 2))

            async def failing() -> bool:
                return (await hook(api, owner, broken["id"]))["status"] == "failing"

            await eventually(failing, what="the broken endpoint to give up")
    finally:
        down.stop()
    assert [d["status"] for d in await deliveries(api, owner, broken["id"])] == [
        "failed",
        "pending",  # held back behind the failed one until the endpoint is resumed
    ]

    await age(hook_app, owner, 31)
    await open_accounts(api, owner, 1)  # a third event, delivered now
    async with run_dispatcher(owner) as dispatcher:
        await eventually(
            lambda: _sequences(api, owner, fine["id"], [3]),
            what="the old deliveries purged and the new one delivered",
        )
    assert dispatcher.stats["purged"] == 3  # two delivered, one failed
    # The new event went out once; the purged ones were not made or sent again.
    assert receiver.sequences() == [1, 2, 3]
    rows = await deliveries(api, owner, fine["id"])
    assert [(d["sequence"], d["status"]) for d in rows] == [(3, "delivered")]
    # The pending ones stay, however old: they are still owed.
    rows = await deliveries(api, owner, broken["id"])
    assert [(d["sequence"], d["status"]) for d in rows] == [(2, "pending"), (3, "pending")]


async def _sequences(api, tenant: Tenant, hook_id: str, expected: list[int]) -> bool:
    rows = await deliveries(api, tenant, hook_id)
    return [d["sequence"] for d in rows if d["status"] == "delivered"] == expected and len(
        rows
    ) == len(expected)


async def test_recent_and_other_tenants_deliveries_are_kept(
    api, hook_app, owner, receiver, run_dispatcher
):
    other = await make_tenant(hook_app, "webhooks-other")
    for tenant in (owner, other):
        created = await register(api, tenant, receiver.url)
        await open_accounts(api, tenant, 1)
        async with run_dispatcher(tenant):
            await eventually(all_delivered(api, tenant, created["id"], 1))
    await age(hook_app, other, 31)  # old, but not the dispatcher's tenant
    await age(hook_app, owner, 29)  # the dispatcher's tenant, within 30 days
    async with run_dispatcher(owner) as dispatcher:
        assert await dispatcher.purge() == 0
    assert await count(hook_app, owner.tenant_id) == 1
    assert await count(hook_app, other.tenant_id) == 1

    async with run_dispatcher(other) as dispatcher:
        await eventually(
            lambda: _none_left(hook_app, other.tenant_id), what="the other tenant's purge"
        )
    assert dispatcher.stats["purged"] == 1


async def _none_left(app: Starlette, tenant_id: uuid.UUID) -> bool:
    return await count(app, tenant_id) == 0


async def test_retention_zero_keeps_everything(api, hook_app, owner, receiver, run_dispatcher):
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 2))
    await age(hook_app, owner, 3650)
    async with run_dispatcher(owner, webhook_delivery_retention_seconds=0) as dispatcher:
        assert await dispatcher.purge() == 0
    assert await count(hook_app, owner.tenant_id) == 2


async def test_a_large_backlog_is_purged_in_batches_between_deliveries(
    api, hook_app, owner, receiver, run_dispatcher, monkeypatch
):
    monkeypatch.setattr(dispatcher_module, "PURGE_BATCH", 2)
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 5)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 5))
    await age(hook_app, owner, 31)
    async with run_dispatcher(owner) as dispatcher:
        # 2 + 2 + 1: a full batch makes the next pass purge again at once.
        await eventually(lambda: _none_left(hook_app, owner.tenant_id), what="the backlog")
    assert dispatcher.stats["purged"] == 5


async def test_an_upkeep_error_is_logged_and_deliveries_go_on(
    api, owner, receiver, run_dispatcher, monkeypatch, caplog
):
    async def deadlocked(*args: object, **kwargs: object) -> int:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(webhook_sql, "purge_deliveries", deadlocked)
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 2))
    assert "webhook upkeep failed" in caplog.text


async def test_erasing_expired_secrets_skips_an_endpoint_locked_meanwhile(
    api, hook_app, owner, run_dispatcher
):
    created = await register(api, owner, "https://93.184.215.14/hooks")
    r = await api.post(
        f"/api/webhooks/{created['id']}/rotate-secret",
        json={"previous_secret_ttl_seconds": 1},
        headers=owner.headers(),
    )
    assert r.status_code == 200, r.text
    await asyncio.sleep(1.1)

    async def previous() -> bytes | None:
        async with hook_app.state.db.connection() as conn:
            cur = await conn.execute(
                "SELECT previous_secret FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
                (owner.tenant_id, uuid.UUID(created["id"])),
            )
            row = await cur.fetchone()
        assert row is not None
        return row[0]

    async with run_dispatcher(owner, webhook_delivery_retention_seconds=0) as dispatcher:
        async with hook_app.state.db.connection() as holder, holder.transaction():
            await holder.execute(
                "SELECT 1 FROM webhook_endpoints WHERE tenant_id = %s AND id = %s FOR UPDATE",
                (owner.tenant_id, uuid.UUID(created["id"])),
            )
            # Locked by someone else: skipped at once, not waited for.
            await asyncio.wait_for(dispatcher.purge(), 5)
            assert await previous() is not None
        await dispatcher.purge()
        assert await previous() is None
