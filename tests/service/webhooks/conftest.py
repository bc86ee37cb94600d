"""Fixtures of the webhook tests: an app that may register loopback URLs, real
receivers, and dispatchers confined to the test's own tenants."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service.app import create_app
from service.config import Settings
from service.webhooks.dispatcher import Dispatcher
from tests.conftest import Tenant, make_tenant
from tests.service.webhooks.receiver import Receiver

# Fast but real: sub-second retries, a short timeout, a breaker that trips quickly.
FAST = {
    "webhook_allow_private": True,
    "webhook_timeout_seconds": 1.0,
    "webhook_retry_schedule": (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05),
    "webhook_breaker_threshold": 3,
    "webhook_breaker_cooldown_seconds": 0.3,
    "webhook_poll_seconds": 0.02,
    "webhook_lease_seconds": 3.0,
    "webhook_concurrency": 8,
}


@pytest.fixture(scope="session")
def hook_settings(settings: Settings) -> Settings:
    return settings.with_overrides(**FAST)


@pytest.fixture(scope="session")
async def hook_app(hook_settings: Settings) -> AsyncIterator[Starlette]:
    """An app with TALLY_WEBHOOK_ALLOW_PRIVATE, so tests can register local receivers."""
    application = create_app(hook_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def api(hook_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=hook_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        yield http


@pytest.fixture
async def owner(hook_app: Starlette) -> Tenant:
    return await make_tenant(hook_app, "webhooks")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def run_dispatcher(
    hook_app: Starlette, hook_settings: Settings
) -> Callable[..., contextlib.AbstractAsyncContextManager[Dispatcher]]:
    """`async with run_dispatcher(tenant, **settings) as d:` runs a dispatcher for that
    tenant only (never another test's endpoints) until the block ends."""

    @contextlib.asynccontextmanager
    async def running(
        tenant: Tenant, resolver: Any = None, **overrides: Any
    ) -> AsyncIterator[Dispatcher]:
        dispatcher = Dispatcher(
            hook_app.state.db,
            hook_app.state.vault,
            hook_settings.with_overrides(**overrides),
            tenants=[tenant.tenant_id],
            resolver=resolver,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            yield dispatcher
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    return running


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = ""
) -> None:
    """Await `check()` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)
