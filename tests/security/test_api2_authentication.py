"""API2:2023 Broken Authentication.

Every guarded route of service.app.ENDPOINTS (every /api route except the
token endpoint), with its path ids set to the caller's own real objects and
a body it would accept, is called with no token and with each kind of bad
token: each answer is 401 UNAUTHENTICATED with `WWW-Authenticate: Bearer`,
and nothing is written. The token endpoint refuses wrong, unknown and
revoked credentials with 401 INVALID_CLIENT, the same way for each.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from service.auth import scopes
from service.auth.tokens import TokenService
from service.config import Settings
from service.db import tenants as tenant_sql
from tests.conftest import Tenant, make_tenant
from tests.security.support import (
    API_ENDPOINTS,
    PROTECTED,
    TOKEN_PATH,
    Ledger,
    Unchanged,
    call,
    name,
    seed_ledger,
)
from tests.service.api.helpers import DROP, assert_error, valid_claims


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, body, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
        signature,
    )


def _claims(settings: Settings, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """The service's own claims with `changes`; a None value leaves that claim out."""
    dropped = {k: DROP if v is None else v for k, v in changes.items()}
    return valid_claims(settings, tenant, **dropped)


def _issued_by(settings: Settings, tenant: Tenant, **overrides: Any) -> str:
    """A token the service's own TokenService issues under changed settings."""
    service = TokenService(settings.with_overrides(**overrides))
    return service.issue(tenant.client_id, tenant.tenant_id, scopes.ALL)


def _real_kid(tenant: Tenant) -> str:
    return str(_parts(tenant.token())[0]["kid"])


def _tampered(tenant: Tenant) -> str:
    """A real token whose claims were changed (all scopes, other tenant) without re-signing."""
    head, claims, signature = _parts(tenant.token("ledger:read"))
    claims.update(scope=" ".join(scopes.ALL), tid=str(uuid.uuid4()))
    return f"{_b64(head)}.{_b64(claims)}.{signature}"


def _alg_none(settings: Settings, tenant: Tenant) -> str:
    head = {"alg": "none", "typ": "JWT", "kid": _real_kid(tenant)}
    return f"{_b64(head)}.{_b64(_claims(settings, tenant))}."


def _signed(settings: Settings, tenant: Tenant, key: Any, algorithm: str, **changes: Any) -> str:
    return jwt.encode(
        _claims(settings, tenant, **changes),
        key,
        algorithm=algorithm,
        headers={"kid": _real_kid(tenant)},
    )


# name -> Authorization header value (None: no header at all)
BadToken = Callable[[Settings, Tenant], str | None]
BAD_TOKENS: dict[str, BadToken] = {
    "missing": lambda s, t: None,
    "empty": lambda s, t: "",
    "scheme only": lambda s, t: "Bearer",
    "blank token": lambda s, t: "Bearer    ",
    "garbage": lambda s, t: "Bearer not-a-jwt",
    "three dots": lambda s, t: "Bearer a.b.c",
    "basic scheme": lambda s, t: "Basic " + base64.b64encode(b"user:pass").decode(),
    "token without scheme": lambda s, t: t.token(),
    "other scheme, real token": lambda s, t: f"Token {t.token()}",
    "truncated signature": lambda s, t: f"Bearer {t.token()[:-6]}",
    "expired": lambda s, t: f"Bearer {_issued_by(s, t, token_ttl_seconds=-60)}",
    "forged signature": lambda s, t: f"Bearer {_signed(s, t, 'x' * 64, 'HS256')}",
    "tampered claims": lambda s, t: f"Bearer {_tampered(t)}",
    "alg none": lambda s, t: f"Bearer {_alg_none(s, t)}",
    "HS512 with the real key": lambda s, t: f"Bearer {_signed(s, t, s.jwt_secret, 'HS512')}",
    "ES256 with a fresh key": lambda s, t: (
        f"Bearer {_signed(s, t, ec.generate_private_key(ec.SECP256R1()), 'ES256')}"
    ),
    "wrong audience": lambda s, t: f"Bearer {_issued_by(s, t, jwt_audience='someone-else')}",
    "wrong issuer": lambda s, t: f"Bearer {_issued_by(s, t, jwt_issuer='evil')}",
    "no expiry": lambda s, t: f"Bearer {_signed(s, t, s.jwt_secret, 'HS256', exp=None)}",
    "no tenant": lambda s, t: f"Bearer {_signed(s, t, s.jwt_secret, 'HS256', tid=None)}",
    "tenant not a uuid": lambda s, t: f"Bearer {_signed(s, t, s.jwt_secret, 'HS256', tid='x')}",
}


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def assert_bearer_challenge(r: httpx.Response) -> None:
    assert_error(r, 401, "UNAUTHENTICATED")
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Bearer", challenge


def test_every_api_route_but_the_token_endpoint_is_guarded() -> None:
    """The route table itself: a new /api route without a scope fails here first."""
    assert [name(ep) for ep in PROTECTED if ep.scope is None] == []
    assert PROTECTED and len(PROTECTED) == len(API_ENDPOINTS) - 1


@pytest.mark.parametrize("bad", list(BAD_TOKENS), ids=list(BAD_TOKENS))
@pytest.mark.parametrize("ep", PROTECTED, ids=name)
async def test_route_refuses_bad_token_with_bearer_challenge(
    client, app: Starlette, settings: Settings, ledger: Ledger, ep, bad: str
):
    value = BAD_TOKENS[bad](settings, ledger.tenant)
    headers = {} if value is None else {"Authorization": value}
    async with Unchanged(client, app, ledger.tenant):
        r = await call(client, ep.method, ledger.path(ep), headers, ledger.body(ep))
        assert_bearer_challenge(r)


@pytest.mark.parametrize(
    "make",
    [
        lambda s, t: _signed(s, t, s.jwt_secret, "HS256"),
        lambda s, t: _issued_by(s, t),
    ],
    ids=["hand-signed", "issued under copied settings"],
)
async def test_bad_token_builders_start_from_a_token_the_service_accepts(
    client, settings: Settings, tenant: Tenant, make
):
    """So each bad token above fails for its one defect, not for how it was built."""
    r = await client.get(
        "/api/accounts", headers={"Authorization": f"Bearer {make(settings, tenant)}"}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("ep", PROTECTED, ids=name)
async def test_route_accepts_the_good_token_it_was_tested_with(client, ledger: Ledger, ep):
    """The 401s above are for the token alone: the same request with a real token passes."""
    r = await call(client, ep.method, ledger.path(ep), ledger.tenant.headers(), ledger.body(ep))
    assert r.status_code < 300, r.text


async def test_lowercase_bearer_scheme_still_authenticates(client, ledger: Ledger):
    r = await client.get(
        "/api/accounts", headers={"Authorization": f"bearer {ledger.tenant.token()}"}
    )
    assert r.status_code == 200, r.text


# --- the token endpoint ---------------------------------------------------------------


def _creds(tenant: Tenant, **changes: str) -> dict[str, str]:
    return {"client_id": str(tenant.client_id), "client_secret": tenant.client_secret, **changes}


async def test_token_endpoint_issues_for_right_credentials(client, tenant: Tenant):
    r = await client.post(TOKEN_PATH, json=_creds(tenant))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert (
        await client.get("/api/accounts", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200


@pytest.mark.parametrize(
    "changes",
    [
        {"client_secret": "tsk_wrong"},
        {"client_secret": "x"},
        {"client_id": str(uuid.uuid4())},
        {"client_id": "not-a-uuid"},
    ],
    ids=["wrong secret", "short secret", "unknown client", "malformed client id"],
)
async def test_token_endpoint_refuses_bad_credentials(client, tenant: Tenant, changes):
    r = await client.post(TOKEN_PATH, json=_creds(tenant, **changes))
    error = assert_error(r, 401, "INVALID_CLIENT")
    assert "access_token" not in r.text
    assert tenant.client_secret not in r.text
    assert error["details"] == {}


async def test_token_endpoint_refuses_wrong_secret_in_basic_with_basic_challenge(
    client, tenant: Tenant
):
    raw = base64.b64encode(f"{tenant.client_id}:wrong".encode()).decode()
    r = await client.post(
        TOKEN_PATH,
        content="grant_type=client_credentials",
        headers={
            "Authorization": f"Basic {raw}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert_error(r, 401, "INVALID_CLIENT")
    assert r.headers.get("www-authenticate", "").startswith("Basic")


async def test_wrong_secret_and_unknown_client_answer_alike(client, tenant: Tenant):
    """No client-id enumeration: same status and body either way."""
    wrong = await client.post(TOKEN_PATH, json=_creds(tenant, client_secret="tsk_wrong"))
    unknown = await client.post(TOKEN_PATH, json=_creds(tenant, client_id=str(uuid.uuid4())))
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())


async def _revoke(app: Starlette, tenant: Tenant) -> None:
    async with app.state.db.connection() as conn:
        assert await tenant_sql.revoke_client(conn, tenant.client_id)


async def test_revoked_client_cannot_get_a_token(client, app: Starlette):
    revoked = await make_tenant(app, "revoked")
    assert (await client.post(TOKEN_PATH, json=_creds(revoked))).status_code == 200
    await _revoke(app, revoked)
    r = await client.post(TOKEN_PATH, json=_creds(revoked))
    assert_error(r, 401, "INVALID_CLIENT")
    assert "access_token" not in r.text


async def test_revoked_client_cannot_get_a_token_with_basic(client, app: Starlette):
    revoked = await make_tenant(app, "revoked")
    await _revoke(app, revoked)
    r = await client.post(
        TOKEN_PATH,
        content="grant_type=client_credentials",
        headers={**revoked.basic(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 401, "INVALID_CLIENT")


async def test_token_response_is_not_cacheable(client, tenant: Tenant):
    r = await client.post(TOKEN_PATH, json=_creds(tenant))
    assert r.status_code == 200, r.text
    assert r.headers.get("cache-control") == "no-store"
