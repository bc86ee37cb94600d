"""GET /openapi.json: a valid OpenAPI 3.1 document covering every route."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from starlette.routing import Route


async def test_openapi_is_valid_and_covers_every_route(client, app):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    served = {
        (method.lower(), re.sub(r"{(\w+):\w+}", r"{\1}", route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    assert len(served) >= 7


async def test_protected_operations_declare_scope_and_errors(client):
    doc = (await client.get("/openapi.json")).json()
    get_account = doc["paths"]["/api/accounts/{id}"]["get"]
    assert get_account["security"] == [{"bearer": ["ledger:read"]}]
    assert {"200", "401", "403", "404"} <= set(get_account["responses"])
    create = doc["paths"]["/api/accounts"]["post"]
    schema = doc["components"]["schemas"]["AccountCreate"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AccountCreate"
    )
    assert schema["properties"]["currency"]["pattern"] == "^[A-Z][A-Z0-9_]{2,11}$"
    assert schema["additionalProperties"] is False


async def test_optional_bodies_are_documented_as_optional(client):
    """Posting or voiding a hold and rotating a webhook secret take an empty body
    (all defaults); every other body is required."""
    doc = (await client.get("/openapi.json")).json()
    optional = set()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if "requestBody" in op and not op["requestBody"]["required"]:
                optional.add(f"{method.upper()} {path}")
    assert optional == {
        "POST /api/transfers/{id}/post",
        "POST /api/transfers/{id}/void",
        "POST /api/webhooks/{id}/rotate-secret",
    }


async def test_the_writes_that_honour_idempotency_key_document_it(client):
    doc = (await client.get("/openapi.json")).json()
    documented = {
        (method, path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if any(p["name"] == "Idempotency-Key" for p in op.get("parameters", ()))
    }
    assert documented == {
        ("post", "/api/accounts"),
        ("post", "/api/transfers"),
        ("post", "/api/transfers/batch"),
        ("post", "/api/transfers/{id}/post"),
        ("post", "/api/transfers/{id}/void"),
    }
    for method, path in documented:
        op = doc["paths"][path][method]
        header = next(p for p in op["parameters"] if p["name"] == "Idempotency-Key")
        assert header["in"] == "header" and header["required"] is False
        assert header["schema"]["maxLength"] == 255
        assert {"400", "409"} <= set(op["responses"])


async def test_every_operation_with_a_body_documents_the_body_errors(client):
    """A body can be too large (413), of the wrong type (415) or too slow to
    arrive (408, TALLY_BODY_TIMEOUT_SECONDS): every operation taking one says so."""
    doc = (await client.get("/openapi.json")).json()
    missing = {
        f"{method.upper()} {path}": {"408", "413", "415"} - set(op["responses"])
        for path, operations in doc["paths"].items()
        for method, op in operations.items()
        if "requestBody" in op
    }
    assert {name: codes for name, codes in missing.items() if codes} == {}


async def test_every_api_operation_documents_400(client):
    """Any /api/ operation answers an undeclared query parameter with 400."""
    doc = (await client.get("/openapi.json")).json()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in doc["paths"].items()
        for method, op in operations.items()
        if path.startswith("/api/") and "400" not in op["responses"]
    ]
    assert missing == []


async def test_the_operations_that_answer_412_document_if_match(client):
    doc = (await client.get("/openapi.json")).json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            headers = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
            assert ("If-Match" in headers) == ("412" in op["responses"]), (method, path)
    patch = doc["paths"]["/api/accounts/{id}"]["patch"]
    assert "If-Match" in [p["name"] for p in patch["parameters"]]
