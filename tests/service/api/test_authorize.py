"""The authorization fast path (`_authorized_now`) lets a request through only
where `authorize` would, with the same principal and RateLimit-* headers, and
otherwise takes nothing and changes nothing, leaving every answer to `authorize`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from service.api.routing import _authorized_now, authorize
from service.auth import clients as client_service
from service.auth import scopes
from service.db import tenants as tenant_sql
from service.ratelimit import LEASE_SECONDS
from tests.conftest import Tenant


def _request(app: Any, authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": headers,
             "query_string": b"", "app": app, "client": ("127.0.0.1", 1)}  # fmt: skip
    return Request(scope)


async def _busy(tenant: Tenant, clock: list[float]) -> tuple[Tenant, str]:
    """A client of its own whose bucket this worker holds a lease of, and its token.

    `clock` is the limiter's (the `lease_clock` fixture): on the real one, a
    busy machine could spread the takes over two 50 ms windows and no lease
    would come.
    """
    made = await client_service.create_client(tenant.app.state.db, tenant.tenant_id, scopes.ALL)
    busy = Tenant(tenant.app, tenant.tenant_id, made.client_id, made.client_secret)
    token = busy.token(scopes.LEDGER_READ)
    # Takes in one lease window, then one in the next: it brings a lease as
    # large as the first window's demand (see service.ratelimit._Lease).
    for _ in range(20):
        await authorize(_request(tenant.app, f"Bearer {token}"), scopes.LEDGER_READ)
    clock[0] += 1.5 * LEASE_SECONDS
    await authorize(_request(tenant.app, f"Bearer {token}"), scopes.LEDGER_READ)
    assert tenant.app.state.limiter._leases[f"client:{busy.client_id}"].tokens
    return busy, token


async def test_the_fast_path_answers_as_authorize_does(app, tenant, lease_clock):
    busy, token = await _busy(tenant, lease_clock)
    fast = _request(app, f"Bearer {token}")
    principal = _authorized_now(fast, scopes.LEDGER_READ)
    assert principal is not None and principal.client_id == str(busy.client_id)
    slow = _request(app, f"Bearer {token}")
    assert await authorize(slow, scopes.LEDGER_READ) == principal
    assert fast.scope["state"]["principal"] == slow.scope["state"]["principal"]
    names = [name for name, _ in fast.scope["state"]["ratelimit"]]
    assert names == [name for name, _ in slow.scope["state"]["ratelimit"]]


async def test_the_fast_path_takes_nothing_when_it_cannot_decide(app, tenant, lease_clock):
    busy, _ = await _busy(tenant, lease_clock)
    lease = app.state.limiter._leases[f"client:{busy.client_id}"]
    verified = tenant.token(scopes.LEDGER_READ)
    app.state.tokens.verify(verified)  # its client's policy is not cached: never authorized
    cases = [
        None,
        "Basic abc",
        "Bearer ",
        "Bearer never.verified.token",
        f"Bearer {busy.token(scopes.LEDGER_READ)}x",
        f"Bearer {busy.token(scopes.LEDGER_WRITE)}",  # lacks the scope: authorize says 403
        f"Bearer {verified}",
    ]
    for authorization in cases:
        tokens, takes = lease.tokens, lease.takes
        request = _request(app, authorization)
        assert _authorized_now(request, scopes.LEDGER_READ) is None, authorization
        assert (lease.tokens, lease.takes) == (tokens, takes)
        assert "state" not in request.scope


async def test_a_revoked_client_is_left_to_authorize(app, tenant, lease_clock):
    busy, token = await _busy(tenant, lease_clock)
    async with app.state.db.connection() as conn:
        assert await tenant_sql.revoke_client(conn, busy.client_id)
    app.state.clients._cache.pop(str(busy.client_id))  # as when the cached policy expires
    await app.state.clients.policy(str(busy.client_id))  # now cached as revoked
    assert _authorized_now(_request(app, f"Bearer {token}"), scopes.LEDGER_READ) is None


async def test_without_a_lease_the_fast_path_steps_aside(app, tenant):
    token = tenant.token(scopes.LEDGER_READ)
    await authorize(_request(app, f"Bearer {token}"), scopes.LEDGER_READ)  # token and policy cached
    app.state.limiter._leases.pop(f"client:{tenant.client_id}", None)
    assert _authorized_now(_request(app, f"Bearer {token}"), scopes.LEDGER_READ) is None
