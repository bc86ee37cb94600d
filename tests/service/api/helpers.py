"""Assertions and small steps shared by the API tests."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from service.auth import scopes

if TYPE_CHECKING:
    from service.config import Settings
    from tests.conftest import Tenant

ACCOUNTS = "/api/accounts"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the error envelope carrying `code`; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert response.headers.get("x-request-id")
    return error


def field_names(error: dict[str, Any]) -> list[str]:
    """The `details.fields` names of an error, checking each entry's shape."""
    fields = error["details"]["fields"]
    assert isinstance(fields, list) and fields
    for item in fields:
        assert set(item) == {"field", "message"}, item
        assert isinstance(item["message"], str) and item["message"]
    return [item["field"] for item in fields]


def bal(posted: int, pending: int, available: int) -> dict[str, int]:
    return {"posted": posted, "pending": pending, "available": available}


def parse_time(text: str) -> datetime:
    assert ISO_Z.match(text), text
    return datetime.fromisoformat(text)


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def open_account(client: httpx.AsyncClient, tenant: Any, **fields: Any) -> str:
    """Open a USD account (fields override the body); returns its id."""
    body = {"name": "Wallet", "currency": "USD", **fields}
    r = await client.post(ACCOUNTS, json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


async def account(client: httpx.AsyncClient, tenant: Any, account_id: str) -> dict[str, Any]:
    r = await client.get(f"{ACCOUNTS}/{account_id}", headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()["data"]


DROP = object()  # marks a claim to leave out of a forged token


def valid_claims(settings: Settings, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """Claims the service itself would issue, with `changes` applied (DROP removes one)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(tenant.client_id),
        "tid": str(tenant.tenant_id),
        "scope": " ".join(scopes.ALL),
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    for name, value in changes.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims
