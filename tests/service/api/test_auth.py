"""Authentication and authorization: POST /api/auth/token and bearer tokens on /api/*.

Covers the JSON and OAuth 2 form (client_credentials) token requests, JWT
claims and headers, scope narrowing, every 400/401/403/415/422 path, bearer
verification against forged and malformed tokens (including algorithm
confusion), tenant isolation, and that client secrets are stored only as hashes.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette

from service.auth import clients as client_service
from service.auth import scopes
from service.config import Settings
from service.db import tenants as tenant_sql
from tests.conftest import Tenant
from tests.service.api.helpers import DROP, valid_claims

TOKEN = "/api/auth/token"
ACCOUNTS = "/api/accounts"
FORM = "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------- helpers


def assert_error(resp: httpx.Response, status: int, code: str | set[str]) -> dict[str, Any]:
    """The response is `status` with the error envelope carrying `code`; returns `error`."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    if isinstance(code, str):
        assert error["code"] == code, error
    else:
        assert error["code"] in code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


def field_names(error: dict[str, Any]) -> set[str]:
    fields = error["details"].get("fields")
    assert isinstance(fields, list) and fields, error
    for entry in fields:
        assert isinstance(entry["message"], str) and entry["message"]
    return {entry["field"] for entry in fields}


def assert_bearer_challenge(resp: httpx.Response) -> None:
    assert_error(resp, 401, "UNAUTHENTICATED")
    challenge = resp.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Bearer", challenge


def assert_basic_challenge(resp: httpx.Response) -> None:
    assert_error(resp, 401, "INVALID_CLIENT")
    challenge = resp.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Basic", challenge


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def creds(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {"client_id": str(tenant.client_id), "client_secret": tenant.client_secret, **extra}


async def post_form(
    client: httpx.AsyncClient, body: str | bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(TOKEN, content=body, headers={"Content-Type": FORM, **(headers or {})})


async def post_raw_json(client: httpx.AsyncClient, body: str | bytes) -> httpx.Response:
    return await client.post(TOKEN, content=body, headers={"Content-Type": "application/json"})


async def fetch_token(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    resp = await client.post(TOKEN, json=creds(tenant, **extra))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def decode(token: str, settings: Settings) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    return claims


_KID = object()  # "use settings.jwt_kid"


def sign(
    settings: Settings,
    claims: dict[str, Any],
    *,
    key: Any = None,
    algorithm: str = "HS256",
    kid: Any = _KID,
) -> str:
    """A JWT over `claims`; by default exactly what the service would sign."""
    headers = None
    if kid is _KID:
        headers = {"kid": settings.jwt_kid}
    elif kid is not None:
        headers = {"kid": kid}
    signing_key = settings.jwt_secret if key is None else key
    return jwt.encode(claims, signing_key, algorithm=algorithm, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


async def assert_baseline_accepted(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    """A token built the same way, but unforged, is accepted: the forgery test can fail."""
    resp = await client.get(
        ACCOUNTS, headers=bearer(sign(settings, valid_claims(settings, tenant)))
    )
    assert resp.status_code == 200, resp.text


async def open_account(client: httpx.AsyncClient, tenant: Tenant, name: str) -> dict[str, Any]:
    resp = await client.post(
        ACCOUNTS, json={"name": name, "currency": "USD"}, headers=tenant.headers()
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def account_ids(client: httpx.AsyncClient, headers: dict[str, str]) -> set[str]:
    resp = await client.get(ACCOUNTS, params={"limit": 1000}, headers=headers)
    assert resp.status_code == 200, resp.text
    return {a["id"] for a in resp.json()["data"]}


async def read_only_client(app: Starlette, tenant: Tenant) -> client_service.NewClient:
    return await client_service.create_client(
        app.state.db, tenant.tenant_id, (scopes.LEDGER_READ,), "read-only"
    )


# --------------------------------------------------------------------------- JSON token request


async def test_json_token_response_shape(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert "no-store" in resp.headers.get("cache-control", "")
    body = resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.token_ttl_seconds
    assert isinstance(body["scope"], str)
    assert set(body["scope"].split(" ")) == set(scopes.ALL)
    assert isinstance(body["access_token"], str) and body["access_token"].count(".") == 2


async def test_json_token_claims(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    before = int(time.time())
    body = await fetch_token(client, tenant)
    after = int(time.time())
    token = body["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"] == settings.jwt_kid

    claims = decode(token, settings)
    assert claims["sub"] == str(tenant.client_id)
    assert claims["tid"] == str(tenant.tenant_id)
    assert claims["scope"] == body["scope"]
    assert set(claims["scope"].split(" ")) == set(scopes.ALL)
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == settings.token_ttl_seconds
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience


async def test_each_token_has_a_fresh_jti(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    first = decode((await fetch_token(client, tenant))["access_token"], settings)
    second = decode((await fetch_token(client, tenant))["access_token"], settings)
    assert first["jti"] != second["jti"]


async def test_issued_token_works_on_accounts(client: httpx.AsyncClient, tenant: Tenant) -> None:
    token = (await fetch_token(client, tenant))["access_token"]
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["data"] == []
    assert body["meta"]["has_more"] is False


async def test_json_with_explicit_grant_type_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, grant_type="client_credentials"))
    assert resp.status_code == 200, resp.text


async def test_json_with_wrong_grant_type_is_rejected(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, grant_type="password"))
    if resp.status_code == 422:  # a well-formed body breaking a rule, naming the field
        error = assert_error(resp, 422, "VALIDATION_ERROR")
        assert field_names(error) == {"grant_type"}
    else:
        assert_error(resp, 400, "UNSUPPORTED_GRANT_TYPE")


# --------------------------------------------------------------------------- OAuth 2 form


async def test_form_with_credentials_in_body(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    resp = await client.post(TOKEN, data={"grant_type": "client_credentials", **creds(tenant)})
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers.get("cache-control", "")
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.token_ttl_seconds
    claims = decode(body["access_token"], settings)
    assert claims["sub"] == str(tenant.client_id)
    assert claims["tid"] == str(tenant.tenant_id)
    resp = await client.get(ACCOUNTS, headers=bearer(body["access_token"]))
    assert resp.status_code == 200, resp.text


async def test_form_with_http_basic(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    resp = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=tenant.basic()
    )
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers.get("cache-control", "")
    body = resp.json()
    assert body["token_type"] == "Bearer"
    claims = decode(body["access_token"], settings)
    assert claims["sub"] == str(tenant.client_id)
    assert claims["tid"] == str(tenant.tenant_id)
    resp = await client.get(ACCOUNTS, headers=bearer(body["access_token"]))
    assert resp.status_code == 200, resp.text


async def test_form_content_type_with_charset_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        TOKEN,
        content="grant_type=client_credentials",
        headers={"Content-Type": f"{FORM}; charset=utf-8", **tenant.basic()},
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("in_form", ["client_id", "client_secret"])
async def test_basic_and_form_credentials_together_is_400(
    client: httpx.AsyncClient, tenant: Tenant, in_form: str
) -> None:
    form = {"grant_type": "client_credentials", in_form: creds(tenant)[in_form]}
    resp = await client.post(TOKEN, data=form, headers=tenant.basic())
    assert_error(resp, 400, "BAD_REQUEST")


async def test_basic_with_json_body_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json=creds(tenant), headers=tenant.basic())
    assert_error(resp, 400, "BAD_REQUEST")


@pytest.mark.parametrize("grant", ["password", "authorization_code", "CLIENT_CREDENTIALS", ""])
async def test_form_wrong_grant_type(client: httpx.AsyncClient, tenant: Tenant, grant: str) -> None:
    resp = await client.post(TOKEN, data={"grant_type": grant, **creds(tenant)})
    assert_error(resp, 400, "UNSUPPORTED_GRANT_TYPE")


async def test_form_without_grant_type_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, data=creds(tenant))
    assert_error(resp, 400, {"BAD_REQUEST", "UNSUPPORTED_GRANT_TYPE"})


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type",  # no "="
        b"grant_type=client_credentials&&scope=admin",  # empty field
        b"grant_type=client_credentials&",  # trailing separator
        b"grant_type=client_credentials&scope=\xff\xfe",  # not UTF-8
    ],
    ids=["no-equals", "empty-field", "trailing-ampersand", "bad-utf8"],
)
async def test_malformed_form_is_400(
    client: httpx.AsyncClient, tenant: Tenant, body: bytes
) -> None:
    resp = await post_form(client, body, tenant.basic())
    assert_error(resp, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    "body",
    [
        "grant_type=client_credentials&grant_type=client_credentials",
        "grant_type=client_credentials&scope=ledger:read&scope=admin",
    ],
    ids=["grant_type", "scope"],
)
async def test_repeated_form_parameter_is_400(
    client: httpx.AsyncClient, tenant: Tenant, body: str
) -> None:
    resp = await post_form(client, body, tenant.basic())
    assert_error(resp, 400, "BAD_REQUEST")


async def test_repeated_client_id_in_form_is_400(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    body = (
        f"grant_type=client_credentials&client_id={other_tenant.client_id}"
        f"&client_id={tenant.client_id}&client_secret={tenant.client_secret}"
    )
    resp = await post_form(client, body)
    assert_error(resp, 400, "BAD_REQUEST")


async def test_form_missing_credentials_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post(TOKEN, data={"grant_type": "client_credentials"})
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert {"client_id", "client_secret"} <= field_names(error)


async def test_form_empty_scope_is_treated_as_omitted(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    # RFC 6749 3.2: "Parameters sent without a value MUST be treated as if they
    # were omitted from the request." An empty scope must not mint a token
    # with no scopes at all.
    resp = await post_form(client, "grant_type=client_credentials&scope=", tenant.basic())
    assert resp.status_code == 200, resp.text
    claims = decode(resp.json()["access_token"], settings)
    assert set(claims["scope"].split()) == set(scopes.ALL)


@pytest.mark.parametrize("scope", ["", "   "], ids=["empty", "blank"])
async def test_json_blank_scope_does_not_mint_a_scopeless_token(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings, scope: str
) -> None:
    # Either treat a blank scope as omitted (the client's scopes) or reject it;
    # a 200 carrying a token with no scopes at all is neither.
    resp = await client.post(TOKEN, json=creds(tenant, scope=scope))
    if resp.status_code == 200:
        claims = decode(resp.json()["access_token"], settings)
        assert set(claims["scope"].split()) == set(scopes.ALL)
        assert set(resp.json()["scope"].split()) == set(scopes.ALL)
    else:
        assert resp.status_code in (400, 422), resp.text
        assert_error(resp, resp.status_code, {"INVALID_SCOPE", "VALIDATION_ERROR"})


@pytest.mark.parametrize("prefix", ["Basic !!!notbase64", "Basic "])
async def test_malformed_client_authorization_header_is_rejected(
    client: httpx.AsyncClient, prefix: str
) -> None:
    resp = await post_form(client, "grant_type=client_credentials", {"Authorization": prefix})
    assert_error(resp, 400, "BAD_REQUEST")


@pytest.mark.parametrize("prefix", ["Bearer abc", "Digest abc", "bearer x.y.z"])
async def test_other_client_authentication_schemes_are_invalid_client(
    client: httpx.AsyncClient, prefix: str
) -> None:
    """RFC 6749 5.2: 401 invalid_client, naming the scheme that is supported."""
    resp = await post_form(client, "grant_type=client_credentials", {"Authorization": prefix})
    assert_error(resp, 401, "INVALID_CLIENT")
    assert resp.headers["www-authenticate"].startswith("Basic")


async def test_basic_without_colon_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    raw = base64.b64encode(str(tenant.client_id).encode()).decode()
    resp = await post_form(
        client, "grant_type=client_credentials", {"Authorization": f"Basic {raw}"}
    )
    assert_error(resp, 400, "BAD_REQUEST")


# --------------------------------------------------------------------------- scopes


async def test_scope_narrowing_json(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    body = await fetch_token(client, tenant, scope="ledger:read")
    assert body["scope"] == "ledger:read"
    claims = decode(body["access_token"], settings)
    assert claims["scope"] == "ledger:read"
    headers = bearer(body["access_token"])
    assert (await client.get(ACCOUNTS, headers=headers)).status_code == 200
    resp = await client.post(ACCOUNTS, json={"name": "x", "currency": "USD"}, headers=headers)
    assert_error(resp, 403, "FORBIDDEN")


async def test_scope_narrowing_form_space_separated(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    resp = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "scope": "ledger:write events:read"},
        headers=tenant.basic(),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["scope"].split(" ")) == {"ledger:write", "events:read"}
    claims = decode(body["access_token"], settings)
    assert set(claims["scope"].split(" ")) == {"ledger:write", "events:read"}
    resp = await client.get(ACCOUNTS, headers=bearer(body["access_token"]))
    assert_error(resp, 403, "FORBIDDEN")


@pytest.mark.parametrize(
    "scope", ["ledger:delete", "ledger:read superuser", "LEDGER:READ", "ledger:*"]
)
async def test_unknown_scope_is_invalid_scope(
    client: httpx.AsyncClient, tenant: Tenant, scope: str
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, scope=scope))
    assert_error(resp, 400, "INVALID_SCOPE")


async def test_unknown_scope_in_form_is_invalid_scope(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        TOKEN, data={"grant_type": "client_credentials", "scope": "root"}, headers=tenant.basic()
    )
    assert_error(resp, 400, "INVALID_SCOPE")


async def test_client_with_fewer_scopes_gets_only_those(
    client: httpx.AsyncClient, app: Starlette, tenant: Tenant, settings: Settings
) -> None:
    reader = await read_only_client(app, tenant)
    resp = await client.post(
        TOKEN, json={"client_id": str(reader.client_id), "client_secret": reader.client_secret}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "ledger:read"
    assert decode(resp.json()["access_token"], settings)["scope"] == "ledger:read"


@pytest.mark.parametrize("asked", ["ledger:read", "ledger:write", "ledger:read ledger:write"])
async def test_scope_not_held_is_invalid_scope(
    client: httpx.AsyncClient, app: Starlette, tenant: Tenant, asked: str
) -> None:
    reader = await read_only_client(app, tenant)
    body = {
        "client_id": str(reader.client_id),
        "client_secret": reader.client_secret,
        "scope": asked,
    }
    resp = await client.post(TOKEN, json=body)
    if asked == "ledger:read":  # held: the baseline that shows the others can pass
        assert resp.status_code == 200, resp.text
    else:
        assert_error(resp, 400, "INVALID_SCOPE")


# --------------------------------------------------------------------------- INVALID_CLIENT


async def test_wrong_secret_is_invalid_client(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_secret=tenant.client_secret + "x"))
    assert_error(resp, 401, "INVALID_CLIENT")


async def test_secret_of_another_client_is_invalid_client(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    body = {"client_id": str(tenant.client_id), "client_secret": other_tenant.client_secret}
    resp = await client.post(TOKEN, json=body)
    assert_error(resp, 401, "INVALID_CLIENT")


async def test_unknown_client_id_is_invalid_client(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_id=str(uuid.uuid4())))
    assert_error(resp, 401, "INVALID_CLIENT")


@pytest.mark.parametrize("client_id", ["not-a-uuid", "x" * 36, "1234", "' OR 1=1 --"])
async def test_non_uuid_client_id_is_invalid_client(
    client: httpx.AsyncClient, tenant: Tenant, client_id: str
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_id=client_id))
    assert_error(resp, 401, "INVALID_CLIENT")


async def test_client_id_in_hex_form_is_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_id=tenant.client_id.hex.upper()))
    assert resp.status_code == 200, resp.text


async def test_revoked_client_is_invalid_client(
    client: httpx.AsyncClient, app: Starlette, tenant: Tenant
) -> None:
    assert (await client.post(TOKEN, json=creds(tenant))).status_code == 200
    async with app.state.db.connection() as conn:
        assert await tenant_sql.revoke_client(conn, tenant.client_id)
    resp = await client.post(TOKEN, json=creds(tenant))
    assert_error(resp, 401, "INVALID_CLIENT")
    resp = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=tenant.basic()
    )
    assert_basic_challenge(resp)


async def test_wrong_secret_with_basic_challenges_basic(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(str(tenant.client_id), tenant.client_secret + "x"),
    )
    assert_basic_challenge(resp)


async def test_unknown_client_with_basic_challenges_basic(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(str(uuid.uuid4()), tenant.client_secret),
    )
    assert_basic_challenge(resp)


async def test_non_uuid_client_with_basic_challenges_basic(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic("nobody", tenant.client_secret),
    )
    assert_basic_challenge(resp)


async def test_invalid_client_does_not_reveal_which_part_was_wrong(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    wrong_secret = await client.post(
        TOKEN, json=creds(tenant, client_secret=tenant.client_secret + "x")
    )
    unknown_id = await client.post(TOKEN, json=creds(tenant, client_id=str(uuid.uuid4())))
    assert_error(wrong_secret, 401, "INVALID_CLIENT")
    assert_error(unknown_id, 401, "INVALID_CLIENT")
    assert wrong_secret.json() == unknown_id.json()


# --------------------------------------------------------------------------- request body errors


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"client_id": "a", }', b""],
    ids=["open", "text", "comma", "empty"],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    resp = await post_raw_json(client, body)
    assert_error(resp, 400, "BAD_REQUEST")


@pytest.mark.parametrize("body", ["[]", "null", '"client"', "42"])
async def test_json_body_not_an_object_is_400(client: httpx.AsyncClient, body: str) -> None:
    resp = await post_raw_json(client, body)
    assert_error(resp, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("field", "value"),
    [("client_id", 12345), ("client_secret", True), ("client_id", None), ("scope", ["admin"])],
)
async def test_wrong_json_type_is_400(
    client: httpx.AsyncClient, tenant: Tenant, field: str, value: Any
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, **{field: value}))
    error = assert_error(resp, 400, "BAD_REQUEST")
    assert field in field_names(error)


async def test_unknown_json_field_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_name="x"))
    error = assert_error(resp, 400, "BAD_REQUEST")
    assert any("client_name" in f["field"] + f["message"] for f in error["details"]["fields"])


async def test_unknown_json_field_is_named_in_details(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_name="x"))
    error = assert_error(resp, 400, "BAD_REQUEST")
    assert field_names(error) == {"client_name"}


async def test_missing_client_secret_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json={"client_id": str(tenant.client_id)})
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_secret"}


async def test_missing_client_id_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json={"client_secret": tenant.client_secret})
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_id"}


async def test_empty_object_names_both_fields(client: httpx.AsyncClient) -> None:
    resp = await client.post(TOKEN, json={})
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_id", "client_secret"}


async def test_empty_strings_are_422_naming_each_field(client: httpx.AsyncClient) -> None:
    resp = await client.post(TOKEN, json={"client_id": "", "client_secret": ""})
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_id", "client_secret"}


async def test_empty_secret_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_secret=""))
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_secret"}


async def test_control_characters_in_credentials_are_422(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant, client_secret="tsk_\u0000abc"))
    error = assert_error(resp, 422, "VALIDATION_ERROR")
    assert field_names(error) == {"client_secret"}


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data", None])
async def test_unsupported_media_type_is_415(
    client: httpx.AsyncClient, tenant: Tenant, ctype: str | None
) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    resp = await client.post(TOKEN, content=json.dumps(creds(tenant)), headers=headers)
    assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_get_on_token_endpoint_is_405(client: httpx.AsyncClient) -> None:
    resp = await client.get(TOKEN)
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")


# --------------------------------------------------------------------------- bearer header


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic xyz", "Token abc", "bearer-abc"],
    ids=["none", "empty", "bare-scheme", "scheme-space", "spaces", "basic", "token", "no-space"],
)
async def test_missing_or_malformed_authorization_is_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await client.get(ACCOUNTS, headers=headers)
    assert_bearer_challenge(resp)


async def test_basic_credentials_on_api_route_are_401(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.get(ACCOUNTS, headers=tenant.basic())
    assert_bearer_challenge(resp)


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "\u00e9t\u00e9"],
    ids=["word", "three-parts", "two-parts", "dots", "empty-claims-no-sig", "non-ascii"],
)
async def test_garbage_token_is_401(client: httpx.AsyncClient, token: str) -> None:
    resp = await client.get(ACCOUNTS, headers={"Authorization": f"Bearer {token}".encode()})
    assert_bearer_challenge(resp)


async def test_lowercase_bearer_scheme_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.get(ACCOUNTS, headers={"Authorization": f"bearer {tenant.token()}"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ACCOUNTS),
        ("POST", ACCOUNTS),
        ("GET", f"{ACCOUNTS}/{uuid.UUID(int=1)}"),
        ("PATCH", f"{ACCOUNTS}/{uuid.UUID(int=1)}"),
        ("GET", f"{ACCOUNTS}/not-a-uuid"),
    ],
)
async def test_every_api_route_requires_a_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await client.request(method, path, json={"name": "x", "currency": "USD"})
    assert_bearer_challenge(resp)


# --------------------------------------------------------------------------- forged tokens

Forger = Callable[[Settings, Tenant], str]


def _claims(**changes: Any) -> Forger:
    return lambda s, t: sign(s, valid_claims(s, t, **changes))


def _expired(s: Settings, t: Tenant) -> str:
    now = int(time.time())
    return sign(s, valid_claims(s, t, iat=now - 1000, exp=now - 60))


def _issued_in_future(s: Settings, t: Tenant) -> str:
    now = int(time.time())
    return sign(s, valid_claims(s, t, iat=now + 600, exp=now + 900))


def _not_yet_valid(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t, nbf=int(time.time()) + 600))


def _other_secret(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t), key="another-secret-" + "k" * 64)


def _hs512(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t), algorithm="HS512")


def _hs384(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t), algorithm="HS384")


def _wrong_kid(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t), kid="not-" + s.jwt_kid)


def _missing_kid(s: Settings, t: Tenant) -> str:
    return sign(s, valid_claims(s, t), kid=None)


def _tampered_payload(s: Settings, t: Tenant) -> str:
    # Validly signed for tenant t, then the payload is swapped for another tenant's.
    header, _, signature = sign(s, valid_claims(s, t)).split(".")
    forged = valid_claims(s, t, tid=str(uuid.uuid4()))
    return f"{header}.{b64json(forged)}.{signature}"


def _signature_stripped(s: Settings, t: Tenant) -> str:
    header, payload, _ = sign(s, valid_claims(s, t)).split(".")
    return f"{header}.{payload}."


FORGERIES: dict[str, Forger] = {
    "expired": _expired,
    "iat-in-future": _issued_in_future,
    "nbf-in-future": _not_yet_valid,
    "other-secret": _other_secret,
    "hs512-right-secret": _hs512,
    "hs384-right-secret": _hs384,
    "wrong-kid": _wrong_kid,
    "missing-kid": _missing_kid,
    "tampered-payload": _tampered_payload,
    "signature-stripped": _signature_stripped,
    "wrong-iss": _claims(iss="someone-else"),
    "wrong-aud": _claims(aud="another-api"),
    "aud-list-without-ours": _claims(aud=["another-api"]),
    "tid-not-uuid": _claims(tid="tenant-a"),
    "tid-number": _claims(tid=12345),
    "tid-null": _claims(tid=None),
    "scope-list": _claims(scope=["ledger:read"]),
    "scope-number": _claims(scope=1),
    "scope-null": _claims(scope=None),
    "sub-number": _claims(sub=42),
    "exp-string": _claims(exp="tomorrow"),
    **{
        f"missing-{name}": _claims(**{name: DROP})
        for name in ("exp", "iat", "sub", "tid", "scope", "iss", "aud", "jti")
    },
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
async def test_forged_or_invalid_token_is_401(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant, forge: Forger
) -> None:
    await assert_baseline_accepted(client, settings, tenant)
    resp = await client.get(ACCOUNTS, headers=bearer(forge(settings, tenant)))
    assert_bearer_challenge(resp)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_unsigned_alg_none_token_is_401(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant, alg: str
) -> None:
    await assert_baseline_accepted(client, settings, tenant)
    header = {"alg": alg, "typ": "JWT", "kid": settings.jwt_kid}
    token = f"{b64json(header)}.{b64json(valid_claims(settings, tenant))}."
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    assert_bearer_challenge(resp)


async def test_pyjwt_alg_none_token_is_401(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    await assert_baseline_accepted(client, settings, tenant)
    token = jwt.encode(
        valid_claims(settings, tenant), None, algorithm="none", headers={"kid": settings.jwt_kid}
    )
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    assert_bearer_challenge(resp)


def _rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


ASYMMETRIC: dict[str, tuple[str, Callable[[], Any]]] = {
    "RS256": ("RS256", _rsa_key),
    "PS256": ("PS256", _rsa_key),
    "ES256": ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "ES384": ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    "EdDSA": ("EdDSA", ed25519.Ed25519PrivateKey.generate),
}


@pytest.mark.parametrize("case", ASYMMETRIC.values(), ids=ASYMMETRIC.keys())
async def test_asymmetric_algorithm_token_is_401(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant, case: tuple[str, Any]
) -> None:
    algorithm, make_key = case
    await assert_baseline_accepted(client, settings, tenant)
    token = sign(settings, valid_claims(settings, tenant), key=make_key(), algorithm=algorithm)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    assert_bearer_challenge(resp)


async def test_header_claiming_rs256_over_hmac_signature_is_401(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    # Algorithm confusion the other way round: an HS256 signature under a header
    # that names RS256 must not be verified with whatever the header says.
    await assert_baseline_accepted(client, settings, tenant)
    _, payload, signature = sign(settings, valid_claims(settings, tenant)).split(".")
    header = b64json({"alg": "RS256", "typ": "JWT", "kid": settings.jwt_kid})
    resp = await client.get(ACCOUNTS, headers=bearer(f"{header}.{payload}.{signature}"))
    assert_bearer_challenge(resp)


# --------------------------------------------------------------------------- 403 FORBIDDEN


async def test_list_without_read_scope_is_403(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.get(ACCOUNTS, headers=tenant.headers(scopes.LEDGER_WRITE))
    error = assert_error(resp, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == scopes.LEDGER_READ


async def test_open_without_write_scope_is_403_and_creates_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        ACCOUNTS,
        json={"name": "should not exist", "currency": "USD"},
        headers=tenant.headers(scopes.LEDGER_READ),
    )
    error = assert_error(resp, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == scopes.LEDGER_WRITE
    assert await account_ids(client, tenant.headers(scopes.LEDGER_READ)) == set()


async def test_get_one_without_read_scope_is_403(client: httpx.AsyncClient, tenant: Tenant) -> None:
    account = await open_account(client, tenant, "mine")
    resp = await client.get(
        f"{ACCOUNTS}/{account['id']}", headers=tenant.headers(scopes.EVENTS_READ, scopes.ADMIN)
    )
    error = assert_error(resp, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == scopes.LEDGER_READ


async def test_patch_without_write_scope_is_403(client: httpx.AsyncClient, tenant: Tenant) -> None:
    account = await open_account(client, tenant, "mine")
    resp = await client.patch(
        f"{ACCOUNTS}/{account['id']}",
        json={"name": "renamed"},
        headers=tenant.headers(scopes.LEDGER_READ),
    )
    error = assert_error(resp, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == scopes.LEDGER_WRITE
    resp = await client.get(f"{ACCOUNTS}/{account['id']}", headers=tenant.headers())
    assert resp.json()["data"]["name"] == "mine"


async def test_token_with_no_scopes_is_403(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    token = sign(settings, valid_claims(settings, tenant, scope=""))
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    error = assert_error(resp, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == scopes.LEDGER_READ


async def test_scope_prefix_does_not_grant_scope(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    token = sign(settings, valid_claims(settings, tenant, scope="ledger:readwrite ledger"))
    resp = await client.get(ACCOUNTS, headers=bearer(token))
    assert_error(resp, 403, "FORBIDDEN")


# --------------------------------------------------------------------------- tenant isolation


async def test_token_of_tenant_a_lists_only_a_accounts(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await open_account(client, tenant, "a-wallet")
    theirs = await open_account(client, other_tenant, "b-wallet")
    token = (await fetch_token(client, tenant))["access_token"]
    assert await account_ids(client, bearer(token)) == {mine["id"]}
    assert await account_ids(client, other_tenant.headers()) == {theirs["id"]}


async def test_token_of_tenant_a_cannot_read_b_account(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await open_account(client, other_tenant, "b-wallet")
    assert (
        await client.get(f"{ACCOUNTS}/{theirs['id']}", headers=other_tenant.headers())
    ).status_code == 200
    resp = await client.get(f"{ACCOUNTS}/{theirs['id']}", headers=tenant.headers())
    assert_error(resp, 404, "NOT_FOUND")


async def test_token_of_tenant_a_cannot_patch_b_account(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await open_account(client, other_tenant, "b-wallet")
    resp = await client.patch(
        f"{ACCOUNTS}/{theirs['id']}", json={"name": "hijacked"}, headers=tenant.headers()
    )
    assert_error(resp, 404, "NOT_FOUND")
    resp = await client.get(f"{ACCOUNTS}/{theirs['id']}", headers=other_tenant.headers())
    assert resp.json()["data"]["name"] == "b-wallet"


# --------------------------------------------------------------------------- secret storage


async def test_secret_is_stored_only_as_a_hash(app: Starlette, tenant: Tenant) -> None:
    async with app.state.db.connection() as conn:
        cur = await conn.execute("SELECT * FROM api_clients WHERE id = %s", (tenant.client_id,))
        row = await cur.fetchone()
        columns = [d.name for d in cur.description]
    assert row is not None
    record = dict(zip(columns, row, strict=True))
    stored = bytes(record["secret_hash"])
    secret = tenant.client_secret
    body = secret.removeprefix("tsk_")
    assert len(stored) >= 32
    assert stored != secret.encode()
    for value in record.values():
        if isinstance(value, memoryview | bytes | bytearray):
            raw = bytes(value)
            assert secret.encode() not in raw and body.encode() not in raw
            assert body not in raw.hex() and body not in base64.b64encode(raw).decode()
        text = str(value)
        assert secret not in text and body not in text


async def test_token_response_does_not_echo_the_secret(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(TOKEN, json=creds(tenant))
    assert resp.status_code == 200
    assert tenant.client_secret not in resp.text
    assert (
        tenant.client_secret
        not in jwt.decode(resp.json()["access_token"], options={"verify_signature": False}).values()
    )
