"""API4:2023 Unrestricted Resource Consumption: sizes, counts, depth and magnitudes.

Bodies over 64 KiB (2 MiB for batches) are refused with 413, pages are
capped at 1000, batches at 1000 items, strings and collections at their
documented bounds; deeply nested JSON and out-of-range integers are client
errors, never a 500. None of these requests writes anything.
(Request rates: test_api4_rate_limits.py.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import Tenant
from tests.security.support import TOKEN_PATH, Ledger, Unchanged, seed_ledger
from tests.service.api.helpers import assert_error, field_names

KIB = 1024
BODY_LIMIT = 64 * KIB
BATCH_LIMIT = 2 * KIB * KIB
# As deep as a body under the 64 KiB limit can nest (2 bytes a level): far past any
# recursion limit, whatever state the process's recursion accounting is in.
DEPTH = 30_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> Ledger:
    return await seed_ledger(client, tenant)


def _transfer(ledger: Ledger, **fields: Any) -> dict[str, Any]:
    return {
        "debit_account_id": ledger.source,
        "credit_account_id": ledger.sink,
        "amount": 1,
        "currency": "USD",
        **fields,
    }


def _json_routes(ledger: Ledger) -> dict[str, tuple[str, str]]:
    return {
        "open account": ("POST", "/api/accounts"),
        "patch account": ("PATCH", f"/api/accounts/{ledger.sink}"),
        "transfer": ("POST", "/api/transfers"),
        "post hold": ("POST", f"/api/transfers/{ledger.pending}/post"),
        "void hold": ("POST", f"/api/transfers/{ledger.pending}/void"),
        "token": ("POST", TOKEN_PATH),
    }


ROUTES = ["open account", "patch account", "transfer", "post hold", "void hold", "token"]


def _headers(ledger: Ledger, url: str) -> dict[str, str]:
    """JSON content type, plus the bearer token everywhere but on the token endpoint."""
    return JSON if url == TOKEN_PATH else {**ledger.tenant.headers(), **JSON}


def _padded(size: int) -> bytes:
    """A syntactically valid JSON object of `size` bytes."""
    head = b'{"name": "'
    tail = b'", "currency": "USD"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# --- body size ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_body_over_64_kib_is_413(client, app: Starlette, ledger: Ledger, route: str):
    method, url = _json_routes(ledger)[route]
    async with Unchanged(client, app, ledger.tenant):
        r = await client.request(
            method, url, content=_padded(BODY_LIMIT + 1), headers=_headers(ledger, url)
        )
        error = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert error["details"]["limit_bytes"] == BODY_LIMIT


@pytest.mark.parametrize("route", ROUTES)
async def test_streamed_body_over_64_kib_without_length_is_413(
    client, app: Starlette, ledger: Ledger, route: str
):
    method, url = _json_routes(ledger)[route]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BODY_LIMIT // KIB + 1):
            yield b" " * KIB
        yield b"{}"

    async with Unchanged(client, app, ledger.tenant):
        r = await client.request(method, url, content=chunks(), headers=_headers(ledger, url))
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")


async def test_lying_small_content_length_does_not_bypass_the_limit(
    client, app: Starlette, ledger: Ledger
):
    """The limit counts the bytes received, not what Content-Length claims."""
    received = []

    async def send(message: dict[str, Any]) -> None:
        received.append(message)

    chunks = [b" " * (16 * KIB)] * 5 + [b"{}"]

    async def receive() -> dict[str, Any]:
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/accounts",
        "raw_path": b"/api/accounts",
        "query_string": b"",
        "root_path": "",
        "server": ("t", 80),
        "client": ("127.0.0.1", 1),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"2"),
            *[(k.lower().encode(), v.encode()) for k, v in ledger.tenant.headers().items()],
        ],
    }
    async with Unchanged(client, app, ledger.tenant):
        await app(scope, receive, send)
    start = next(m for m in received if m["type"] == "http.response.start")
    assert start["status"] in (400, 413), received


async def test_batch_body_over_2_mib_is_413(client, app: Starlette, ledger: Ledger):
    item = _transfer(ledger, description="d" * 400)
    count = BATCH_LIMIT // len(json.dumps(item)) + 10
    body = json.dumps({"atomic": True, "transfers": [item] * count}).encode()
    assert len(body) > BATCH_LIMIT
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            "/api/transfers/batch", content=body, headers={**ledger.tenant.headers(), **JSON}
        )
        error = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert error["details"]["limit_bytes"] == BATCH_LIMIT


async def test_batch_body_between_the_limits_is_not_413(client, ledger: Ledger):
    """The 2 MiB allowance is the batch route's alone, and it really applies there."""
    items = [_transfer(ledger, description="d" * 400)] * 200
    body = json.dumps({"atomic": True, "transfers": items}).encode()
    assert BODY_LIMIT < len(body) < BATCH_LIMIT
    r = await client.post(
        "/api/transfers/batch", content=body, headers={**ledger.tenant.headers(), **JSON}
    )
    assert r.status_code == 201, r.text[:500]


# --- counts ---------------------------------------------------------------------------


def _list_urls(ledger: Ledger) -> list[str]:
    return ["/api/accounts", "/api/transfers", f"/api/accounts/{ledger.source}/entries"]


@pytest.mark.parametrize("limit", ["1001", "0", "-1", str(10**30), "1e3", "50.0", " 5", ""])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["accounts", "transfers", "entries"])
async def test_page_size_outside_1_to_1000_is_400(client, ledger: Ledger, which: int, limit: str):
    url = _list_urls(ledger)[which]
    r = await client.get(url, params={"limit": limit}, headers=ledger.tenant.headers())
    assert "limit" in field_names(assert_error(r, 400, "BAD_REQUEST"))


@pytest.mark.parametrize("which", [0, 1, 2], ids=["accounts", "transfers", "entries"])
async def test_page_size_1000_is_the_cap_that_is_served(client, ledger: Ledger, which: int):
    r = await client.get(_list_urls(ledger)[which] + "?limit=1000", headers=ledger.tenant.headers())
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["limit"] == 1000


async def test_default_page_is_bounded(client, app: Starlette, ledger: Ledger):
    for _ in range(3):
        await client.post(
            "/api/accounts", json={"name": "n", "currency": "USD"}, headers=ledger.tenant.headers()
        )
    r = await client.get("/api/accounts", headers=ledger.tenant.headers())
    assert r.json()["meta"]["limit"] == 50


@pytest.mark.parametrize("atomic", [True, False])
async def test_batch_of_1001_items_is_422_and_applies_nothing(
    client, app: Starlette, ledger: Ledger, atomic: bool
):
    body = {"atomic": atomic, "transfers": [_transfer(ledger)] * 1001}
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post("/api/transfers/batch", json=body, headers=ledger.tenant.headers())
        assert "transfers" in field_names(assert_error(r, 422, "VALIDATION_ERROR"))


async def test_batch_of_1000_items_is_accepted(client, ledger: Ledger):
    body = {"atomic": True, "transfers": [_transfer(ledger)] * 1000}
    r = await client.post("/api/transfers/batch", json=body, headers=ledger.tenant.headers())
    assert r.status_code == 201, r.text[:500]
    assert len(r.json()["data"]) == 1000


async def test_empty_batch_is_422(client, app: Starlette, ledger: Ledger):
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            "/api/transfers/batch", json={"transfers": []}, headers=ledger.tenant.headers()
        )
        assert_error(r, 422, "VALIDATION_ERROR")


# --- depth ----------------------------------------------------------------------------


def _nested(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def _deep_bodies(ledger: Ledger) -> dict[str, tuple[str, str, bytes]]:
    deep = _nested()
    transfer = json.dumps(_transfer(ledger)).encode()[:-1]
    account = b'{"name": "a", "currency": "USD", '
    # A field before the deep one already fails, so the service re-reads the whole body to
    # list every failing field: that second, untyped read is where depth bites.
    bad_account = b'{"name": "", "currency": "USD", '
    return {
        "account metadata": (
            "POST",
            "/api/accounts",
            account + b'"metadata": {"k": ' + deep + b"}}",
        ),
        "account metadata after a bad name": (
            "POST",
            "/api/accounts",
            bad_account + b'"metadata": {"k": ' + deep + b"}}",
        ),
        "account holder after a bad name": (
            "POST",
            "/api/accounts",
            bad_account + b'"holder": ' + deep + b"}",
        ),
        "patch metadata after a bad name": (
            "PATCH",
            f"/api/accounts/{ledger.sink}",
            b'{"name": "", "metadata": {"k": ' + deep + b"}}",
        ),
        "transfer metadata": ("POST", "/api/transfers", transfer + b', "metadata": ' + deep + b"}"),
        "transfer metadata after a bad amount": (
            "POST",
            "/api/transfers",
            transfer.replace(b'"amount": 1', b'"amount": 0') + b', "metadata": ' + deep + b"}",
        ),
        "batch item": ("POST", "/api/transfers/batch", b'{"transfers": [' + deep + b"]}"),
        "batch after a bad item": (
            "POST",
            "/api/transfers/batch",
            b'{"transfers": [{}, ' + deep + b"]}",
        ),
        "whole body": ("POST", "/api/transfers", deep),
        "token after an empty client id": (
            "POST",
            TOKEN_PATH,
            b'{"client_id": "", "client_secret": ' + deep + b"}",
        ),
    }


DEEP_CASES = [
    "account metadata",
    "account metadata after a bad name",
    "account holder after a bad name",
    "patch metadata after a bad name",
    "transfer metadata",
    "transfer metadata after a bad amount",
    "batch item",
    "batch after a bad item",
    "whole body",
    "token after an empty client id",
]


@pytest.mark.parametrize("case", DEEP_CASES)
async def test_deeply_nested_json_is_a_client_error(
    client, app: Starlette, ledger: Ledger, case: str
):
    method, url, body = _deep_bodies(ledger)[case]
    assert len(body) < BODY_LIMIT
    async with Unchanged(client, app, ledger.tenant):
        r = await client.request(method, url, content=body, headers=_headers(ledger, url))
        assert r.status_code in (400, 422), r.text[:300]
        assert_error(r, r.status_code, r.json()["error"]["code"])


# --- magnitudes -----------------------------------------------------------------------

HUGE = [10**30, -(10**30), 2**63, -(2**63) - 1, 2**64]


def _magnitude_cases(ledger: Ledger, n: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        "amount": ("POST", "/api/transfers", _transfer(ledger, amount=n)),
        "pending amount": ("POST", "/api/transfers", _transfer(ledger, amount=n, pending=True)),
        "timeout_seconds": (
            "POST",
            "/api/transfers",
            _transfer(ledger, pending=True, timeout_seconds=n),
        ),
        "batch amount": (
            "POST",
            "/api/transfers/batch",
            {"transfers": [_transfer(ledger, amount=n)]},
        ),
        "overdraft_limit": (
            "POST",
            "/api/accounts",
            {"name": "a", "currency": "USD", "overdraft_limit": n},
        ),
        "patch overdraft_limit": ("PATCH", f"/api/accounts/{ledger.sink}", {"overdraft_limit": n}),
        "post amount": ("POST", f"/api/transfers/{ledger.pending}/post", {"amount": n}),
    }


MAGNITUDE_FIELDS = [
    "amount",
    "pending amount",
    "timeout_seconds",
    "batch amount",
    "overdraft_limit",
    "patch overdraft_limit",
    "post amount",
]


@pytest.mark.parametrize("n", HUGE, ids=["1e30", "-1e30", "2^63", "-2^63-1", "2^64"])
@pytest.mark.parametrize("field", MAGNITUDE_FIELDS)
async def test_out_of_range_integer_is_a_client_error(
    client, app: Starlette, ledger: Ledger, field: str, n: int
):
    method, url, body = _magnitude_cases(ledger, n)[field]
    async with Unchanged(client, app, ledger.tenant):
        r = await client.request(method, url, json=body, headers=ledger.tenant.headers())
        assert r.status_code in (400, 422), r.text
        assert_error(r, r.status_code, r.json()["error"]["code"])


async def test_balance_overflow_is_refused_not_wrapped(client, app: Starlette, ledger: Ledger):
    """Two legal amounts whose sum leaves int64: the second is refused and nothing wraps."""
    top = 2**63 - 1
    first = await client.post(
        "/api/transfers", json=_transfer(ledger, amount=top), headers=ledger.tenant.headers()
    )
    if first.status_code != 201:  # the source's own floor or balance refused it: nothing to wrap
        assert first.status_code == 422, first.text
        return
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            "/api/transfers", json=_transfer(ledger, amount=top), headers=ledger.tenant.headers()
        )
        assert_error(r, 422, r.json()["error"]["code"])


# --- lengths --------------------------------------------------------------------------


def _length_cases(ledger: Ledger) -> dict[str, tuple[str, str, dict[str, Any], str]]:
    account = {"name": "a", "currency": "USD"}
    many = {f"k{i}": "v" for i in range(51)}
    return {
        "name 201": ("POST", "/api/accounts", {**account, "name": "n" * 201}, "name"),
        "currency 13": ("POST", "/api/accounts", {**account, "currency": "A" * 13}, "currency"),
        "holder name 201": (
            "POST",
            "/api/accounts",
            {**account, "holder": {"name": "h" * 201}},
            "holder.name",
        ),
        "holder email 255": (
            "POST",
            "/api/accounts",
            {**account, "holder": {"name": "h", "email": "e" * 245 + "@example.x"}},
            "holder.email",
        ),
        "metadata 51 keys": ("POST", "/api/accounts", {**account, "metadata": many}, "metadata"),
        "metadata key 41": (
            "POST",
            "/api/accounts",
            {**account, "metadata": {"k" * 41: "v"}},
            "metadata",
        ),
        "metadata value 501": (
            "POST",
            "/api/accounts",
            {**account, "metadata": {"k": "v" * 501}},
            "metadata",
        ),
        "patch name 201": ("PATCH", f"/api/accounts/{ledger.sink}", {"name": "n" * 201}, "name"),
        "patch metadata 51 keys": (
            "PATCH",
            f"/api/accounts/{ledger.sink}",
            {"metadata": many},
            "metadata",
        ),
        "description 501": (
            "POST",
            "/api/transfers",
            _transfer(ledger, description="d" * 501),
            "description",
        ),
        "transfer metadata value 501": (
            "POST",
            "/api/transfers",
            _transfer(ledger, metadata={"k": "v" * 501}),
            "metadata",
        ),
        "client_id 101": (
            "POST",
            TOKEN_PATH,
            {"client_id": "c" * 101, "client_secret": "s"},
            "client_id",
        ),
        "client_secret 201": (
            "POST",
            TOKEN_PATH,
            {"client_id": "c", "client_secret": "s" * 201},
            "client_secret",
        ),
        "scope 501": (
            "POST",
            TOKEN_PATH,
            {"client_id": "c", "client_secret": "s", "scope": "admin " * 100},
            "scope",
        ),
    }


LENGTH_CASES = [
    "name 201",
    "currency 13",
    "holder name 201",
    "holder email 255",
    "metadata 51 keys",
    "metadata key 41",
    "metadata value 501",
    "patch name 201",
    "patch metadata 51 keys",
    "description 501",
    "transfer metadata value 501",
    "client_id 101",
    "client_secret 201",
    "scope 501",
]


@pytest.mark.parametrize("case", LENGTH_CASES)
async def test_string_or_collection_over_its_bound_is_422(
    client, app: Starlette, ledger: Ledger, case: str
):
    method, url, body, field = _length_cases(ledger)[case]
    async with Unchanged(client, app, ledger.tenant):
        r = await client.request(method, url, json=body, headers=_headers(ledger, url))
        fields = field_names(assert_error(r, 422, "VALIDATION_ERROR"))
        assert any(f.startswith(field) for f in fields), fields


async def test_idempotency_key_over_255_characters_is_400(client, app: Starlette, ledger: Ledger):
    async with Unchanged(client, app, ledger.tenant):
        r = await client.post(
            "/api/transfers",
            json=_transfer(ledger),
            headers={**ledger.tenant.headers(), "Idempotency-Key": "k" * 256},
        )
        assert "Idempotency-Key" in field_names(assert_error(r, 400, "BAD_REQUEST"))


@pytest.mark.parametrize("param", ["cursor", "currency", "status", "account_id", "from"])
async def test_huge_query_parameter_is_400(client, ledger: Ledger, param: str):
    url = "/api/accounts" if param in ("currency", "cursor") else "/api/transfers"
    if param == "status":
        url = "/api/accounts"
    r = await client.get(url, params={param: "x" * 50_000}, headers=ledger.tenant.headers())
    assert param in field_names(assert_error(r, 400, "BAD_REQUEST"))


async def test_oversized_request_id_is_not_echoed(client):
    r = await client.get("/healthz", headers={"X-Request-Id": "r" * 10_000})
    assert r.status_code == 200
    assert len(r.headers["x-request-id"]) <= 128
