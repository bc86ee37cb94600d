"""API9:2023 Improper Inventory Management.

The published document is the inventory: the (method, path) pairs the app
answers are exactly the operations of GET /openapi.json (no shadow or
forgotten endpoints, probed over HTTP too), every operation that needs a
scope declares it under `security` (and no other does), and each status the
service really answers an operation with is documented for it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from service.app import ENDPOINTS
from service.auth import scopes
from tests.conftest import Tenant
from tests.security.support import (
    API_ENDPOINTS,
    GUARDED,
    TOKEN_PATH,
    Ledger,
    call,
    name,
    random_id,
    seed_ledger,
)

PROBE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
async def doc(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    document: dict[str, Any] = r.json()
    return document


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def _operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = doc["paths"][path][method.lower()]
    return op


def _served(app: Starlette) -> set[tuple[str, str]]:
    """(method, path template) of every route, a `{id:convertor}` written as `{id}`."""
    return {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever GET is served
    }


def test_route_table_and_endpoint_list_agree(app: Starlette):
    assert _served(app) == {(ep.method, ep.path) for ep in ENDPOINTS}
    assert all(isinstance(route, Route) for route in app.routes), app.routes


async def test_served_operations_are_exactly_the_documented_ones(app: Starlette, doc):
    assert _served(app) == _documented(doc)


def _template(path: str, doc_paths: list[str]) -> str | None:
    """The documented path template a concrete path falls under, literal paths first."""
    if path in doc_paths:
        return path
    for template in doc_paths:
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path):
            return template
    return None


async def test_no_undocumented_method_is_answered_over_http(client, ledger: Ledger, doc):
    """Each documented path with each method: any answer but 404/405 is a documented operation."""
    documented = _documented(doc)
    paths = list(doc["paths"])
    concrete = {
        p.replace("{id}", ledger.sink if "accounts" in p else ledger.pending) for p in paths
    }
    answered = set()
    for path in sorted(concrete):
        for method in PROBE_METHODS:
            r = await client.request(method, path, headers=ledger.tenant.headers())
            if (
                r.status_code in (404, 405)
                and r.json()["error"]["code"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")
                and _is_routing_error(r)
            ):
                continue
            answered.add((method, _template(path, paths)))
    assert answered <= documented, sorted(answered - documented)


def _is_routing_error(r: httpx.Response) -> bool:
    message = r.json()["error"]["message"]
    return message.startswith(("No route matches", "Method "))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v0/accounts",
        "/api/v2/accounts",
        "/api/internal/accounts",
        "/api/admin",
        "/api/tenants",
        "/api/clients",
        "/api/users",
        "/metrics.json",
        "/api/debug",
        "/openapi.yaml",
        "/swagger.json",
    ],
)
async def test_old_or_internal_versions_are_not_served(client, tenant: Tenant, path: str):
    for method in ("GET", "POST"):
        r = await client.request(method, path, headers=tenant.headers())
        assert r.status_code == 404, (method, path, r.status_code)


@pytest.mark.parametrize("ep", GUARDED, ids=name)
def test_guarded_operation_declares_its_scope(doc, ep):
    op = _operation(doc, ep.method, ep.path)
    assert op.get("security") == [{"bearer": [ep.scope]}], op.get("security")
    assert {"401", "403"} <= set(op["responses"])


@pytest.mark.parametrize("ep", [ep for ep in ENDPOINTS if ep.scope is None], ids=name)
def test_open_operation_declares_no_security(doc, ep):
    assert "security" not in _operation(doc, ep.method, ep.path)


def test_bearer_scheme_is_declared(doc):
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "security" not in doc or doc["security"] in ([], [{}])


def test_no_operation_is_documented_twice(doc):
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), ids


# --- each status the service answers is documented -------------------------------------


def _error_probes(ledger: Ledger, ep: Any) -> dict[str, tuple[dict[str, str], Any]]:
    auth = ledger.tenant.headers()
    probes: dict[str, tuple[dict[str, str], Any]] = {}
    if ep.scope:
        probes["401"] = ({}, None)
        other = next(s for s in scopes.ALL if s != ep.scope)
        probes["403"] = (ledger.tenant.headers(other), None)
    if ep.body is not None and ep.path != TOKEN_PATH:
        probes["400"] = ({**auth, "Content-Type": "application/json"}, b"{")
        probes["415"] = ({**auth, "Content-Type": "text/plain"}, b"{}")
        probes["413"] = ({**auth, "Content-Type": "application/json"}, b" " * (3 * 1024 * 1024))
        probes["422"] = (
            {**auth, "Content-Type": "application/json"},
            json.dumps({"name": "", "amount": 0}).encode(),
        )
    return probes


@pytest.mark.parametrize("ep", API_ENDPOINTS, ids=name)
async def test_error_statuses_the_operation_answers_are_documented(client, doc, ledger, ep):
    documented = set(_operation(doc, ep.method, ep.path)["responses"])
    seen = {}
    for label, (headers, content) in _error_probes(ledger, ep).items():
        r = await client.request(ep.method, ledger.path(ep), headers=headers, content=content)
        seen[label] = r.status_code
    if "{id}" in ep.path:
        r = await call(
            client,
            ep.method,
            ep.path.replace("{id}", random_id()),
            ledger.tenant.headers(),
            ledger.body(ep),
        )
        seen["404"] = r.status_code
    undocumented = {
        label: status for label, status in seen.items() if str(status) not in documented
    }
    assert not undocumented, f"answered but not documented: {undocumented}; documented {documented}"


async def test_non_atomic_batch_success_status_is_documented(client, doc, ledger: Ledger):
    item = {
        "debit_account_id": ledger.source,
        "credit_account_id": ledger.sink,
        "amount": 1,
        "currency": "USD",
    }
    r = await client.post(
        "/api/transfers/batch",
        json={"atomic": False, "transfers": [item]},
        headers=ledger.tenant.headers(),
    )
    assert r.status_code == 200, r.text
    responses = _operation(doc, "POST", "/api/transfers/batch")["responses"]
    assert "200" in responses, sorted(responses)
