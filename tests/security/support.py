"""Shared steps of the security tests: the route table, a seeded ledger, state snapshots."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from service.api.routing import Endpoint
from service.app import ENDPOINTS
from tests.conftest import Tenant
from tests.service.api.helpers import open_account

TOKEN_PATH = "/api/auth/token"
HOLDER = {"name": "Ada Lovelace", "email": "ada@example.com"}
# Every table whose rows belong to a tenant and that a request could write.
TENANT_TABLES = (
    "accounts", "transfers", "entries", "events", "idempotency_keys", "webhook_endpoints"
)  # fmt: skip
# A public address for webhook endpoints; never contacted (no dispatcher runs here).
WEBHOOK_URL = "https://93.184.215.14/tally/hooks"

API_ENDPOINTS = [ep for ep in ENDPOINTS if ep.path.startswith("/api/")]
GUARDED = [ep for ep in ENDPOINTS if ep.scope is not None]
# Every /api route a bearer token must be checked on: all but the token endpoint.
PROTECTED = [ep for ep in API_ENDPOINTS if ep.path != TOKEN_PATH]
WITH_PATH_ID = [ep for ep in GUARDED if "{id}" in ep.path]


def name(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


@dataclass(frozen=True)
class Ledger:
    """One tenant's objects: a floorless source account, a sink, a posted and a pending transfer."""

    tenant: Tenant
    source: str
    sink: str
    posted: str
    pending: str
    webhook: str

    @property
    def accounts(self) -> tuple[str, str]:
        return (self.source, self.sink)

    def path(self, ep: Endpoint) -> str:
        """The endpoint's path with `{id}` set to a real object of this ledger."""
        target = self.source if ep.path.startswith("/api/accounts/") else self.pending
        if ep.path.startswith("/api/webhooks/"):
            target = self.webhook
        return ep.path.replace("{id}", target)

    def body(self, ep: Endpoint) -> dict[str, Any] | None:
        """A body this endpoint would accept from this ledger's own tenant."""
        return sample_body(ep, self.source, self.sink)


def sample_body(ep: Endpoint, debit: str, credit: str) -> dict[str, Any] | None:
    transfer = {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": 1,
        "currency": "USD",
    }
    bodies: dict[str, dict[str, Any]] = {
        "POST /api/accounts": {"name": "Wallet", "currency": "USD"},
        "PATCH /api/accounts/{id}": {"name": "Renamed"},
        "POST /api/transfers": transfer,
        "POST /api/transfers/batch": {"atomic": True, "transfers": [transfer]},
        "POST /api/transfers/{id}/post": {},
        "POST /api/transfers/{id}/void": {},
        "POST /api/webhooks": {"url": WEBHOOK_URL},
        "PATCH /api/webhooks/{id}": {"description": "renamed"},
    }
    return bodies.get(name(ep))


async def transfer(
    client: httpx.AsyncClient, tenant: Tenant, debit: str, credit: str, amount: int, **extra: Any
) -> dict[str, Any]:
    body = {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **extra,
    }
    r = await client.post("/api/transfers", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def seed_ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    source = await open_account(client, tenant, overdraft_limit=None, holder=HOLDER)
    sink = await open_account(client, tenant, holder=HOLDER, metadata={"k": "v"})
    posted = await transfer(client, tenant, source, sink, 500)
    pending = await transfer(client, tenant, source, sink, 200, pending=True)
    r = await client.post("/api/webhooks", json={"url": WEBHOOK_URL}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return Ledger(tenant, source, sink, posted["id"], pending["id"], r.json()["data"]["id"])


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    **kwargs: Any,
) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return await client.request(method, path, headers=headers or {}, **kwargs)


async def snapshot(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """Every account and transfer of the tenant, as the API shows them to itself."""
    state: dict[str, Any] = {}
    for resource in ("accounts", "transfers"):
        r = await client.get(f"/api/{resource}?limit=1000", headers=tenant.headers())
        assert r.status_code == 200, r.text
        state[resource] = {item["id"]: item for item in r.json()["data"]}
    return state


async def row_counts(app: Starlette, tenant: Tenant) -> dict[str, int]:
    """How many rows the tenant has in each table a request could write."""
    counts = {}
    async with app.state.db.connection() as conn:
        for table in TENANT_TABLES:
            cur = await conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant.tenant_id,)
            )
            row = await cur.fetchone()
            assert row is not None
            counts[table] = row[0]
    return counts


class Unchanged:
    """`async with Unchanged(client, app, tenant):` fails if the block changed the tenant's data."""

    def __init__(self, client: httpx.AsyncClient, app: Starlette, *tenants: Tenant) -> None:
        self.client = client
        self.app = app
        self.tenants = tenants
        self.before: list[Any] = []

    async def _state(self) -> list[Any]:
        return [
            (await snapshot(self.client, t), await row_counts(self.app, t)) for t in self.tenants
        ]

    async def __aenter__(self) -> Unchanged:
        self.before = await self._state()
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            after = await self._state()
            for tenant, old, new in zip(self.tenants, self.before, after, strict=True):
                assert new == old, (
                    f"tenant {tenant.tenant_id}: stored data changed: {_diff(old, new)}"
                )


def _diff(old: Any, new: Any) -> str:
    (old_objects, old_rows), (new_objects, new_rows) = old, new
    lines = [
        f"{t}: {old_rows[t]} -> {new_rows[t]} rows" for t in old_rows if old_rows[t] != new_rows[t]
    ]
    for resource in old_objects:
        for key in old_objects[resource].keys() | new_objects[resource].keys():
            a, b = old_objects[resource].get(key), new_objects[resource].get(key)
            if a != b:
                lines.append(f"{resource} {key}: {a} -> {b}")
    return "; ".join(lines)


def random_id() -> str:
    return str(uuid.uuid4())
