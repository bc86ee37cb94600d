"""API5:2023 Broken Function Level Authorization.

Built from service.app.ENDPOINTS: for every guarded route, a token holding
every scope but the route's own gets 403 FORBIDDEN naming that scope, with
the route's real ids and a body it would otherwise accept, and nothing is
written; a token holding only that scope gets through. A client cannot obtain
a token with scopes it was not granted.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from service.auth import clients as client_service
from service.auth import scopes
from tests.conftest import Tenant
from tests.security.support import GUARDED, TOKEN_PATH, Ledger, Unchanged, call, name, seed_ledger
from tests.service.api.helpers import assert_error


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def assert_forbidden(r: httpx.Response, scope: str) -> None:
    error = assert_error(r, 403, "FORBIDDEN")
    assert error["details"].get("required_scope") == scope, error
    assert scope in error["message"], error


async def assert_forbidden_with(
    client, app: Starlette, ledger: Ledger, ep, granted: tuple[str, ...]
) -> None:
    """A token granting exactly `granted` gets 403 on `ep`, and nothing changes."""
    token = app.state.tokens.issue(ledger.tenant.client_id, ledger.tenant.tenant_id, granted)
    async with Unchanged(client, app, ledger.tenant):
        r = await call(
            client, ep.method, ledger.path(ep), {"Authorization": f"Bearer {token}"},
            ledger.body(ep),
        )  # fmt: skip
        assert_forbidden(r, ep.scope)


def test_every_guarded_route_needs_a_known_scope() -> None:
    assert GUARDED
    assert {ep.scope for ep in GUARDED} <= set(scopes.ALL)


@pytest.mark.parametrize("ep", GUARDED, ids=name)
async def test_every_scope_but_the_required_one_is_forbidden(
    client, app: Starlette, ledger: Ledger, ep
):
    others = tuple(s for s in scopes.ALL if s != ep.scope)
    async with Unchanged(client, app, ledger.tenant):
        r = await call(
            client, ep.method, ledger.path(ep), ledger.tenant.headers(*others), ledger.body(ep)
        )
        assert_forbidden(r, ep.scope)


@pytest.mark.parametrize("ep", GUARDED, ids=name)
async def test_token_with_no_scope_at_all_is_forbidden(client, app: Starlette, ledger: Ledger, ep):
    await assert_forbidden_with(client, app, ledger, ep, ())


@pytest.mark.parametrize("ep", GUARDED, ids=name)
@pytest.mark.parametrize("lookalike", ["{s}x", "{S}", " {s}:all", "{s},", "*", "ledger:*"])
async def test_scope_lookalikes_are_forbidden(
    client, app: Starlette, ledger: Ledger, ep, lookalike: str
):
    scope = lookalike.format(s=ep.scope, S=ep.scope.upper()).strip()
    await assert_forbidden_with(client, app, ledger, ep, (scope,))


@pytest.mark.parametrize("ep", GUARDED, ids=name)
async def test_the_required_scope_alone_is_enough(client, ledger: Ledger, ep):
    r = await call(
        client, ep.method, ledger.path(ep), ledger.tenant.headers(ep.scope), ledger.body(ep)
    )
    assert r.status_code < 300, r.text


# --- scopes a client may obtain -------------------------------------------------------


@pytest.fixture
async def reader(app: Starlette, tenant: Tenant) -> Tenant:
    """A second client of the tenant, granted ledger:read only."""
    new = await client_service.create_client(
        app.state.db, tenant.tenant_id, (scopes.LEDGER_READ,), "reader"
    )
    return Tenant(app, tenant.tenant_id, new.client_id, new.client_secret)


def _creds(client: Tenant, **extra: str) -> dict[str, str]:
    return {"client_id": str(client.client_id), "client_secret": client.client_secret, **extra}


@pytest.mark.parametrize(
    "wanted",
    ["ledger:write", "admin", "ledger:read admin", "pii:read", " ".join(scopes.ALL)],
)
async def test_client_cannot_obtain_scopes_it_was_not_granted(client, reader: Tenant, wanted: str):
    r = await client.post(TOKEN_PATH, json=_creds(reader, scope=wanted))
    assert_error(r, 400, "INVALID_SCOPE")
    assert "access_token" not in r.text


async def test_token_without_asked_scope_carries_only_granted_ones(client, reader: Tenant):
    r = await client.post(TOKEN_PATH, json=_creds(reader))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == scopes.LEDGER_READ


async def test_read_only_client_cannot_write(
    client, app: Starlette, ledger: Ledger, reader: Tenant
):
    r = await client.post(TOKEN_PATH, json=_creds(reader))
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    writes = [ep for ep in GUARDED if ep.scope == scopes.LEDGER_WRITE]
    assert writes
    async with Unchanged(client, app, ledger.tenant):
        for ep in writes:
            r = await call(client, ep.method, ledger.path(ep), headers, ledger.body(ep))
            assert_forbidden(r, scopes.LEDGER_WRITE)


async def test_narrowed_token_cannot_use_the_clients_other_scopes(
    client, app: Starlette, ledger: Ledger
):
    r = await client.post(TOKEN_PATH, json=_creds(ledger.tenant, scope=scopes.LEDGER_READ))
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            "/api/accounts", json={"name": "n", "currency": "USD"}, headers=headers
        )
        assert_forbidden(r, scopes.LEDGER_WRITE)
