"""API8:2023 Security Misconfiguration.

Every error, from routing (404, 405), from the middleware (413, 400) and from
an unhandled exception (500), is the JSON error envelope, and a 500 carries
the request id and nothing of the failure. Every response carries
X-Request-Id; /api responses carry `X-Content-Type-Options: nosniff` and
`Cache-Control: no-store`. No redirect to a client-chosen host, no permissive
CORS, no secrets in the published document, and production refuses to start
on default secrets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from service.config import ConfigError, Settings
from service.ledger import accounts as ledger_accounts
from tests.conftest import Tenant
from tests.security.support import API_ENDPOINTS, TOKEN_PATH, Ledger, call, name, seed_ledger
from tests.service.api.helpers import assert_error

SECRET_MESSAGE = "internal detail 7f3a: password=hunter2 at /srv/tally/service/db.py"


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def assert_api_headers(r: httpx.Response) -> None:
    assert r.headers.get("x-request-id"), r.headers
    assert r.headers.get("x-content-type-options") == "nosniff", r.headers
    assert "no-store" in r.headers.get("cache-control", ""), r.headers


# --- routing errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api",
        "/api/nothing",
        "/API/accounts",
        "/api/accounts/x/y/z",
        "/admin",
        "/.env",
        "/api/../etc/passwd",
        "/redoc",  # /docs is the documented API reference page
        "/debug",
    ],
)
async def test_unknown_route_is_404_envelope(client, tenant: Tenant, path: str):
    r = await client.get(path, headers=tenant.headers())
    assert_error(r, 404, "NOT_FOUND")


@pytest.mark.parametrize("path", ["/api/accounts/", "/api/transfers/", "/healthz/"])
async def test_trailing_slash_is_not_redirected_to_the_callers_host(client, tenant, path: str):
    """A redirect built from the Host header would send clients wherever the header says."""
    r = await client.get(path, headers={**tenant.headers(), "Host": "evil.example"})
    assert "evil.example" not in r.headers.get("location", "")
    assert_error(r, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/accounts", {"GET", "POST"}),
        ("PUT", "/api/accounts/{account}", {"GET", "PATCH"}),
        ("DELETE", "/api/accounts/{account}", {"GET", "PATCH"}),
        ("GET", TOKEN_PATH, {"POST"}),
        ("TRACE", "/api/transfers", {"GET", "POST"}),
        ("PATCH", "/api/transfers/{transfer}", {"GET"}),
        ("GET", "/api/transfers/{transfer}/void", {"POST"}),
        ("GET", "/api/transfers/batch", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method_is_405_envelope_with_allow(
    client, ledger: Ledger, method: str, path: str, allowed: set[str]
):
    url = path.format(account=ledger.sink, transfer=ledger.pending)
    r = await client.request(method, url, headers=ledger.tenant.headers())
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}, r.headers["allow"]


# --- 500 ------------------------------------------------------------------------------


@pytest.fixture
async def raw_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client that returns whatever the app sends, even after an exception escaped."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        yield http


async def test_unhandled_error_is_500_envelope_without_internals(
    raw_client, ledger: Ledger, monkeypatch, caplog
):
    async def broken(*args, **kwargs):
        raise RuntimeError(SECRET_MESSAGE)

    monkeypatch.setattr(ledger_accounts, "get_account", broken)
    r = await raw_client.get(
        f"/api/accounts/{ledger.sink}",
        headers={**ledger.tenant.headers(), "X-Request-Id": "req-500-check"},
    )
    error = assert_error(r, 500, "INTERNAL_ERROR")
    assert error["details"] == {"request_id": "req-500-check"}
    assert r.headers["x-request-id"] == "req-500-check"
    for leak in ("Traceback", "RuntimeError", "hunter2", "7f3a", ".py", "/srv/", 'File "'):
        assert leak not in r.text, leak
    assert_api_headers(r)


async def test_any_escaping_exception_is_500_envelope_through_the_apps_own_middleware(app):
    """A route that raises, behind exactly the middleware and handlers the service uses."""

    async def broken(request):
        raise ValueError(SECRET_MESSAGE)

    crashing = Starlette(
        routes=[Route("/api/boom", broken, methods=["POST"])],
        middleware=list(app.user_middleware),
        exception_handlers=dict(app.exception_handlers),
    )
    crashing.state = app.state
    transport = httpx.ASGITransport(app=crashing, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        r = await http.post("/api/boom", json={"name": "n"})
    error = assert_error(r, 500, "INTERNAL_ERROR")
    assert set(error["details"]) == {"request_id"}
    assert error["details"]["request_id"] == r.headers["x-request-id"]
    for leak in ("hunter2", "ValueError", "Traceback", ".py"):
        assert leak not in r.text, leak
    assert_api_headers(r)


# --- headers on every response --------------------------------------------------------


@pytest.mark.parametrize("ep", API_ENDPOINTS, ids=name)
async def test_every_api_success_carries_request_id_and_security_headers(client, ledger, ep):
    headers = {} if ep.scope is None else ledger.tenant.headers()
    body = ledger.body(ep)
    if ep.path == TOKEN_PATH:
        body = {
            "client_id": str(ledger.tenant.client_id),
            "client_secret": ledger.tenant.client_secret,
        }
    r = await call(client, ep.method, ledger.path(ep), headers, body)
    assert r.status_code < 300, r.text
    assert_api_headers(r)


def _error_requests(ledger: Ledger) -> dict[str, tuple[str, str, dict[str, str], bytes | None]]:
    auth = ledger.tenant.headers()
    json_type = {"Content-Type": "application/json"}
    return {
        "400 bad json": ("POST", "/api/accounts", {**auth, **json_type}, b"{"),
        "400 bad length": ("POST", "/api/accounts", {**auth, "Content-Length": "x"}, None),
        "401": ("GET", "/api/accounts", {}, None),
        "403": ("GET", "/api/accounts", ledger.tenant.headers("ledger:write"), None),
        "404 object": ("GET", f"/api/transfers/{ledger.sink}", auth, None),
        "404 route": ("GET", "/api/nowhere", auth, None),
        "405": ("DELETE", "/api/accounts", auth, None),
        "413": ("POST", "/api/accounts", {**auth, **json_type}, b" " * (64 * 1024 + 1)),
        "415": ("POST", "/api/accounts", {**auth, "Content-Type": "text/plain"}, b"{}"),
        "422": ("POST", "/api/accounts", {**auth, **json_type}, b'{"name": "", "currency": "USD"}'),
    }


ERRORS = [
    "400 bad json",
    "400 bad length",
    "401",
    "403",
    "404 object",
    "404 route",
    "405",
    "413",
    "415",
    "422",
]


@pytest.mark.parametrize("case", ERRORS)
async def test_every_api_error_is_json_with_request_id_and_security_headers(
    client, ledger: Ledger, case: str
):
    method, url, headers, body = _error_requests(ledger)[case]
    r = await client.request(method, url, headers=headers, content=body)
    status = int(case.split()[0])
    assert r.status_code == status, r.text
    assert_error(r, status, r.json()["error"]["code"])
    assert_api_headers(r)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/nowhere"])
async def test_operations_responses_carry_request_id(client, path: str):
    r = await client.get(path)
    assert r.headers.get("x-request-id")


async def test_request_id_is_echoed_only_when_safe(client, tenant: Tenant):
    echoed = await client.get(
        "/api/accounts", headers={**tenant.headers(), "X-Request-Id": "abc-1"}
    )
    assert echoed.headers["x-request-id"] == "abc-1"
    injected = await client.get(
        "/api/accounts", headers={**tenant.headers(), "X-Request-Id": "a b\tc"}
    )
    assert injected.headers["x-request-id"] != "a b\tc"


# --- CORS, published document, start-up checks ----------------------------------------


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
async def test_no_permissive_cors(client, tenant: Tenant, method: str):
    r = await client.request(
        method,
        "/api/accounts",
        headers={
            **tenant.headers(),
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
        },
    )
    allowed = r.headers.get("access-control-allow-origin")
    assert allowed in (None, ""), allowed
    assert r.headers.get("access-control-allow-credentials") != "true"


async def test_openapi_document_holds_no_secrets(client, settings: Settings):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert settings.jwt_secret not in r.text
    assert settings.encryption_key.hex() not in r.text
    assert "postgres" not in r.text and "redis://" not in r.text


@pytest.mark.parametrize(
    "env",
    [
        {"TALLY_ENV": "production"},
        {"TALLY_ENV": "production", "TALLY_ENCRYPTION_KEY": "A" * 43},
        {"TALLY_ENV": "production", "TALLY_JWT_SECRET": "x" * 48},
        {"TALLY_ENV": "production", "TALLY_JWT_SECRET": "short", "TALLY_ENCRYPTION_KEY": "A" * 43},
        {"TALLY_ENV": "production", "TALLY_JWT_SECRET": "x" * 48, "TALLY_ENCRYPTION_KEY": "short"},
    ],
    ids=["no secrets", "no jwt secret", "no encryption key", "short jwt secret", "bad key"],
)
def test_production_refuses_to_start_without_real_secrets(env: dict[str, str]):
    with pytest.raises(ConfigError):
        Settings.from_env(env)
