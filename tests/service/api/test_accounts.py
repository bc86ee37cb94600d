"""The accounts API: open, read, list and PATCH, on good and bad paths.

Every error is checked for its status, the error envelope and its code, and
that nothing was written (the tenant's account list, or a re-read account,
is unchanged).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.service.api.helpers import ISO_Z, assert_error, field_names

URL = "/api/accounts"
NO_PII = ("ledger:read", "ledger:write")
INT64_MAX = 2**63 - 1
ACCOUNT_FIELDS = {
    "id",
    "name",
    "currency",
    "status",
    "overdraft_limit",
    "balance",
    "holder",
    "metadata",
    "version",
    "created_at",
    "updated_at",
}


# --- helpers -----------------------------------------------------------------


def account_url(account_id: str) -> str:
    return f"{URL}/{account_id}"


async def create(client, tenant, body: Any, headers: dict[str, str] | None = None):
    return await client.post(URL, json=body, headers=headers or tenant.headers())


async def post_raw(client, tenant, content: bytes, content_type: str | None = "application/json"):
    headers = tenant.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post(URL, content=content, headers=headers)


async def open_account(client, tenant, **fields: Any) -> dict[str, Any]:
    body = {"name": "Wallet", "currency": "USD", **fields}
    response = await create(client, tenant, body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def fetch(client, tenant, account_id: str) -> dict[str, Any]:
    response = await client.get(account_url(account_id), headers=tenant.headers())
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def listed_ids(client, tenant, query: str = "") -> list[str]:
    response = await client.get(f"{URL}?limit=1000{query}", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["data"]]


async def assert_no_accounts(client, tenant) -> None:
    assert await listed_ids(client, tenant) == []


async def patch(client, tenant, account_id: str, body: Any, **headers: str):
    merged = {**tenant.headers(), **{k.replace("_", "-"): v for k, v in headers.items()}}
    return await client.patch(account_url(account_id), json=body, headers=merged)


async def patched(client, tenant, account_id: str, body: Any, **headers: str) -> dict[str, Any]:
    response = await patch(client, tenant, account_id, body, **headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


# --- POST /api/accounts: success --------------------------------------------


async def test_open_returns_201_with_every_account_field(client, tenant):
    r = await create(client, tenant, {"name": "Alice wallet", "currency": "USD"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"data"}
    data = body["data"]
    assert set(data) == ACCOUNT_FIELDS
    assert uuid.UUID(data["id"]).version == 7
    assert str(uuid.UUID(data["id"])) == data["id"]
    assert data["name"] == "Alice wallet"
    assert data["currency"] == "USD"
    assert data["status"] == "active"
    assert data["overdraft_limit"] == 0
    assert data["balance"] == {"posted": 0, "pending": 0, "available": 0}
    assert data["holder"] is None
    assert data["metadata"] == {}
    assert data["version"] == 1
    for stamp in ("created_at", "updated_at"):
        assert ISO_Z.match(data[stamp]), data[stamp]
        assert datetime.fromisoformat(data[stamp]).utcoffset().total_seconds() == 0


async def test_open_sets_etag_1_and_request_id(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD"})
    assert r.status_code == 201
    assert r.headers["etag"] == '"1"'
    assert r.headers.get("x-request-id")
    assert r.headers["content-type"].startswith("application/json")


async def test_open_echoes_client_request_id(client, tenant):
    headers = {**tenant.headers(), "X-Request-Id": "acct-req-1"}
    r = await client.post(URL, json={"name": "a", "currency": "USD"}, headers=headers)
    assert r.status_code == 201
    assert r.headers["x-request-id"] == "acct-req-1"


async def test_open_ids_are_distinct(client, tenant):
    a = await open_account(client, tenant)
    b = await open_account(client, tenant)
    assert a["id"] != b["id"]


async def test_open_stores_the_account_readable_by_get(client, tenant):
    created = await open_account(
        client, tenant, name="Merchant", currency="EUR", overdraft_limit=500, metadata={"k": "v"}
    )
    assert await fetch(client, tenant, created["id"]) == created


async def test_open_with_explicit_overdraft_limit(client, tenant):
    data = await open_account(client, tenant, overdraft_limit=2500)
    assert data["overdraft_limit"] == 2500


async def test_open_with_null_overdraft_limit_means_no_floor(client, tenant):
    data = await open_account(client, tenant, overdraft_limit=None)
    assert data["overdraft_limit"] is None
    assert (await fetch(client, tenant, data["id"]))["overdraft_limit"] is None


async def test_open_with_int64_max_overdraft_limit(client, tenant):
    data = await open_account(client, tenant, overdraft_limit=INT64_MAX)
    assert data["overdraft_limit"] == INT64_MAX


async def test_open_with_metadata(client, tenant):
    data = await open_account(client, tenant, metadata={"order": "8812", "tier": "gold"})
    assert data["metadata"] == {"order": "8812", "tier": "gold"}


@pytest.mark.parametrize("currency", ["USD", "POINTS", "A_B", "ABCDEFGHIJKL", "X1_"])
async def test_open_accepts_valid_currency(client, tenant, currency):
    data = await open_account(client, tenant, currency=currency)
    assert data["currency"] == currency


async def test_open_accepts_name_of_200_chars(client, tenant):
    data = await open_account(client, tenant, name="n" * 200)
    assert data["name"] == "n" * 200


async def test_open_accepts_metadata_at_the_limits(client, tenant):
    metadata = {f"k{i}": "v" for i in range(49)}
    metadata["k" * 40] = "v" * 500
    data = await open_account(client, tenant, metadata=metadata)
    assert data["metadata"] == metadata
    assert len(data["metadata"]) == 50


@pytest.mark.parametrize("text", ["caf\u00e9\u00a0bar", "wallet \U0001f4b0", "\u4e2d\u6587"])
async def test_open_accepts_nbsp_emoji_and_non_ascii(client, tenant, text):
    data = await open_account(client, tenant, name=text, metadata={text: text})
    assert data["name"] == text
    assert data["metadata"] == {text: text}


# --- POST /api/accounts: 422 validation --------------------------------------


async def test_open_reports_every_failing_field(client, tenant):
    r = await create(client, tenant, {"name": "", "currency": "usd", "overdraft_limit": -1})
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert sorted(field_names(error)) == ["currency", "name", "overdraft_limit"]
    await assert_no_accounts(client, tenant)


async def test_open_reports_rule_and_control_char_failures_together(client, tenant):
    # SPEC: "return every failing field" - a schema rule and a control character at once.
    r = await create(client, tenant, {"name": "", "currency": "USD", "metadata": {"k": "a\u0000"}})
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert sorted(field_names(error)) == ["metadata.k", "name"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_empty_name(client, tenant):
    error = assert_error(
        await create(client, tenant, {"name": "", "currency": "USD"}), 422, "VALIDATION_ERROR"
    )
    assert field_names(error) == ["name"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_name_over_200_chars(client, tenant):
    r = await create(client, tenant, {"name": "n" * 201, "currency": "USD"})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("currency", ["usd", "US", "TOOLONGCURRENCY1", "1USD", "", "US D", "_US"])
async def test_open_rejects_bad_currency(client, tenant, currency):
    r = await create(client, tenant, {"name": "a", "currency": currency})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["currency"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_negative_overdraft_limit(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD", "overdraft_limit": -1})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["overdraft_limit"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_overdraft_limit_above_int64(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD", "overdraft_limit": 2**63})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["overdraft_limit"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_40_digit_overdraft_limit_as_422(client, tenant):
    r = await post_raw(
        client, tenant, b'{"name": "a", "currency": "USD", "overdraft_limit": ' + b"9" * 40 + b"}"
    )
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["overdraft_limit"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("missing", ["name", "currency"])
async def test_open_rejects_missing_required_field(client, tenant, missing):
    body = {"name": "a", "currency": "USD"}
    del body[missing]
    r = await create(client, tenant, body)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == [missing]
    await assert_no_accounts(client, tenant)


async def test_open_with_empty_object_names_both_required_fields(client, tenant):
    r = await create(client, tenant, {})
    assert sorted(field_names(assert_error(r, 422, "VALIDATION_ERROR"))) == ["currency", "name"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_metadata_over_50_keys(client, tenant):
    metadata = {f"k{i}": "v" for i in range(51)}
    r = await create(client, tenant, {"name": "a", "currency": "USD", "metadata": metadata})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_metadata_key_over_40_chars(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD", "metadata": {"k" * 41: "v"}})
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert field_names(error) == ["metadata"]
    assert error["details"]["fields"][0]["message"].startswith(f"key `{'k' * 41}`")
    await assert_no_accounts(client, tenant)


async def test_open_rejects_empty_metadata_key(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD", "metadata": {"": "v"}})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_metadata_value_over_500_chars(client, tenant):
    metadata = {"a": "fine", "k": "v" * 501, "z": "w" * 501}
    r = await create(client, tenant, {"name": "a", "currency": "USD", "metadata": metadata})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata.k", "metadata.z"]
    await assert_no_accounts(client, tenant)


CONTROL_CHARS = ["\u0000", "\n", "\t", "\r", "\u001f", "\u007f", "\u0085", "\u009f"]


@pytest.mark.parametrize("char", CONTROL_CHARS, ids=repr)
async def test_open_rejects_control_char_in_name(client, tenant, char):
    r = await create(client, tenant, {"name": f"bad{char}name", "currency": "USD"})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("char", CONTROL_CHARS, ids=repr)
async def test_open_rejects_control_char_in_metadata_value(client, tenant, char):
    body = {"name": "a", "currency": "USD", "metadata": {"ok": "fine", "k": f"v{char}"}}
    r = await create(client, tenant, body)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata.k"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("char", CONTROL_CHARS, ids=repr)
async def test_open_rejects_control_char_in_metadata_key(client, tenant, char):
    key = f"k{char}"
    r = await create(client, tenant, {"name": "a", "currency": "USD", "metadata": {key: "v"}})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == [f"metadata.{key}"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("char", ["\u007f", "\u0085", "\u0000"], ids=repr)
async def test_open_rejects_json_escaped_control_char(client, tenant, char):
    # ensure_ascii writes every one of them as a \\uXXXX escape, not as raw bytes.
    content = json.dumps({"name": f"x{char}", "currency": "USD"}, ensure_ascii=True).encode()
    assert b"\\u00" in content
    r = await post_raw(client, tenant, content)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name"]
    await assert_no_accounts(client, tenant)


async def test_open_rejects_control_char_in_holder_name(client, tenant):
    body = {"name": "a", "currency": "USD", "holder": {"name": "Al\u0000ice"}}
    r = await create(client, tenant, body)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["holder.name"]
    await assert_no_accounts(client, tenant)


async def test_open_names_every_control_char_field(client, tenant):
    body = {"name": "a\n", "currency": "USD", "metadata": {"x": "1\t", "y": "ok"}}
    r = await create(client, tenant, body)
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name", "metadata.x"]
    await assert_no_accounts(client, tenant)


# --- POST /api/accounts: 400 / 413 / 415 -------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"name": "a", "currency": "USD"', b"not json", b"", b'{"name": "a",}', b"\xff\xfe"],
)
async def test_open_rejects_malformed_json(client, tenant, content):
    assert_error(await post_raw(client, tenant, content), 400, "BAD_REQUEST")
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("content", [b"[]", b'"a"', b"5", b"null", b'[{"name": "a"}]'])
async def test_open_rejects_json_that_is_not_an_object(client, tenant, content):
    assert_error(await post_raw(client, tenant, content), 400, "BAD_REQUEST")
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("name", None),
        ("name", ["a"]),
        ("currency", 840),
        ("overdraft_limit", "10"),
        ("overdraft_limit", 1.5),
        ("overdraft_limit", True),
        ("metadata", ["a"]),
        ("metadata", "k=v"),
        ("holder", "Alice"),
    ],
)
async def test_open_rejects_wrong_json_types(client, tenant, field, value):
    body = {"name": "a", "currency": "USD", field: value}
    error = assert_error(await create(client, tenant, body), 400, "BAD_REQUEST")
    assert field in field_names(error)
    await assert_no_accounts(client, tenant)


async def test_open_rejects_non_string_metadata_value(client, tenant):
    body = {"name": "a", "currency": "USD", "metadata": {"k": 5}}
    error = assert_error(await create(client, tenant, body), 400, "BAD_REQUEST")
    assert all(f.startswith("metadata") for f in field_names(error))
    await assert_no_accounts(client, tenant)


async def test_open_rejects_null_metadata_value(client, tenant):
    # null deletes a key on PATCH, but on POST a value must be a string.
    body = {"name": "a", "currency": "USD", "metadata": {"k": None}}
    assert_error(await create(client, tenant, body), 400, "BAD_REQUEST")
    await assert_no_accounts(client, tenant)


async def test_open_rejects_unknown_field(client, tenant):
    body = {"name": "a", "currency": "USD", "balance": {"posted": 100}}
    error = assert_error(await create(client, tenant, body), 400, "BAD_REQUEST")
    assert field_names(error) == ["balance"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("field", ["status", "version", "id"])
async def test_open_rejects_server_owned_fields(client, tenant, field):
    body = {"name": "a", "currency": "USD", field: "x"}
    assert_error(await create(client, tenant, body), 400, "BAD_REQUEST")
    await assert_no_accounts(client, tenant)


async def test_open_without_content_type_is_415(client, tenant):
    r = await post_raw(client, tenant, b'{"name": "a", "currency": "USD"}', content_type=None)
    assert "content-type" not in r.request.headers
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "json"])
async def test_open_with_wrong_content_type_is_415(client, tenant, ctype):
    r = await post_raw(client, tenant, b'{"name": "a", "currency": "USD"}', content_type=ctype)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_no_accounts(client, tenant)


async def test_open_accepts_json_content_type_with_charset(client, tenant):
    r = await post_raw(
        client, tenant, b'{"name": "a", "currency": "USD"}', "application/json; charset=utf-8"
    )
    assert r.status_code == 201, r.text


async def test_open_body_over_64_kib_is_413(client, tenant):
    body = json.dumps({"name": "a", "currency": "USD", "metadata": {"k": "v" * (65 * 1024)}})
    r = await post_raw(client, tenant, body.encode())
    error = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit_bytes"] == 64 * 1024
    await assert_no_accounts(client, tenant)


# --- holder and pii:read -----------------------------------------------------

HOLDER = {"name": "Alice Example", "email": "alice@example.com"}


async def test_open_returns_holder_to_pii_reader(client, tenant):
    data = await open_account(client, tenant, holder=HOLDER)
    assert data["holder"] == HOLDER


async def test_open_hides_holder_without_pii_read(client, tenant):
    r = await create(
        client,
        tenant,
        {"name": "a", "currency": "USD", "holder": HOLDER},
        headers=tenant.headers(*NO_PII),
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["holder"] is None
    assert "alice" not in r.text.lower()


async def test_holder_is_stored_even_when_caller_cannot_read_it(client, tenant):
    r = await create(
        client,
        tenant,
        {"name": "a", "currency": "USD", "holder": HOLDER},
        headers=tenant.headers(*NO_PII),
    )
    account_id = r.json()["data"]["id"]
    assert (await fetch(client, tenant, account_id))["holder"] == HOLDER


async def test_holder_email_is_optional(client, tenant):
    data = await open_account(client, tenant, holder={"name": "Bob"})
    assert data["holder"] in ({"name": "Bob"}, {"name": "Bob", "email": None})
    assert (await fetch(client, tenant, data["id"]))["holder"]["name"] == "Bob"


async def test_get_shows_holder_only_with_pii_read(client, tenant):
    data = await open_account(client, tenant, holder=HOLDER)
    url = account_url(data["id"])
    with_pii = await client.get(url, headers=tenant.headers("ledger:read", "pii:read"))
    without = await client.get(url, headers=tenant.headers("ledger:read"))
    assert with_pii.json()["data"]["holder"] == HOLDER
    assert without.status_code == 200
    assert without.json()["data"]["holder"] is None
    assert "alice" not in without.text.lower()


async def test_list_shows_holder_only_with_pii_read(client, tenant):
    await open_account(client, tenant, holder=HOLDER)
    with_pii = await client.get(URL, headers=tenant.headers("ledger:read", "pii:read"))
    without = await client.get(URL, headers=tenant.headers("ledger:read"))
    assert [a["holder"] for a in with_pii.json()["data"]] == [HOLDER]
    assert [a["holder"] for a in without.json()["data"]] == [None]
    assert "alice" not in without.text.lower()


async def test_patch_response_hides_holder_without_pii_read(client, tenant):
    data = await open_account(client, tenant, holder=HOLDER)
    r = await client.patch(
        account_url(data["id"]), json={"name": "b"}, headers=tenant.headers(*NO_PII)
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["holder"] is None
    assert (await fetch(client, tenant, data["id"]))["holder"] == HOLDER


async def test_holder_with_unknown_field_is_400(client, tenant):
    holder = {"name": "Alice", "ssn": "555"}
    r = await create(client, tenant, {"name": "a", "currency": "USD", "holder": holder})
    error = assert_error(r, 400, "BAD_REQUEST")
    assert field_names(error) == ["holder.ssn"]
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b", "a b@c.d", "a@b@c", "ab"])
async def test_holder_with_bad_email_is_422(client, tenant, email):
    holder = {"name": "Alice", "email": email}
    r = await create(client, tenant, {"name": "a", "currency": "USD", "holder": holder})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["holder.email"]
    await assert_no_accounts(client, tenant)


async def test_holder_without_name_is_422(client, tenant):
    r = await create(client, tenant, {"name": "a", "currency": "USD", "holder": {"email": "a@b.c"}})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["holder.name"]
    await assert_no_accounts(client, tenant)


# --- GET /api/accounts/{id} --------------------------------------------------


async def test_get_returns_account_with_etag(client, tenant):
    created = await open_account(client, tenant, name="Read me")
    r = await client.get(account_url(created["id"]), headers=tenant.headers("ledger:read"))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"data"}
    assert r.json()["data"]["name"] == "Read me"
    assert r.json()["data"]["id"] == created["id"]
    assert r.headers["etag"] == '"1"'
    assert r.headers.get("x-request-id")


async def test_get_accepts_uuid_in_hex_form(client, tenant):
    created = await open_account(client, tenant)
    r = await client.get(account_url(uuid.UUID(created["id"]).hex), headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert r.json()["data"]["id"] == created["id"]


async def test_get_unknown_id_is_404(client, tenant):
    r = await client.get(account_url(str(uuid.uuid4())), headers=tenant.headers())
    assert_error(r, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "bad_id",
    [
        "abc",
        "1234",
        "00000000-0000-0000-0000-00000000000g",
        "x" * 36,
        "%20" * 3,
        "0" * 33,
        "{00000000-0000-0000-0000-000000000000}",
    ],
)
async def test_get_non_uuid_id_is_400(client, tenant, bad_id):
    r = await client.get(account_url(bad_id), headers=tenant.headers())
    error = assert_error(r, 400, "BAD_REQUEST")
    assert field_names(error) == ["id"]


# --- GET /api/accounts -------------------------------------------------------


async def test_list_envelope_and_newest_first(client, tenant):
    ids = [(await open_account(client, tenant, name=f"a{i}"))["id"] for i in range(3)]
    r = await client.get(URL, headers=tenant.headers("ledger:read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "meta"}
    assert body["meta"] == {"limit": 50, "has_more": False, "next_cursor": None}
    assert [a["id"] for a in body["data"]] == ids[::-1]
    assert [a["name"] for a in body["data"]] == ["a2", "a1", "a0"]
    assert all(set(a) == ACCOUNT_FIELDS for a in body["data"])


async def test_list_of_new_tenant_is_empty(client, tenant):
    r = await client.get(URL, headers=tenant.headers())
    assert r.json() == {"data": [], "meta": {"limit": 50, "has_more": False, "next_cursor": None}}


async def test_list_walks_every_page_once_in_order(client, tenant):
    ids = [(await open_account(client, tenant, name=f"a{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    metas = []
    query = "?limit=2"
    for _ in range(10):
        r = await client.get(URL + query, headers=tenant.headers())
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [a["id"] for a in page["data"]]
        metas.append(page["meta"])
        if not page["meta"]["has_more"]:
            break
        query = f"?limit=2&cursor={page['meta']['next_cursor']}"
    assert seen == ids[::-1]
    assert [m["has_more"] for m in metas] == [True, True, False]
    assert all(m["limit"] == 2 for m in metas)
    assert metas[-1]["next_cursor"] is None
    assert all(isinstance(m["next_cursor"], str) and m["next_cursor"] for m in metas[:-1])


async def test_list_exact_page_boundary_has_no_more(client, tenant):
    for i in range(2):
        await open_account(client, tenant, name=f"a{i}")
    r = await client.get(f"{URL}?limit=2", headers=tenant.headers())
    assert len(r.json()["data"]) == 2
    assert r.json()["meta"] == {"limit": 2, "has_more": False, "next_cursor": None}


async def test_list_default_limit_is_50(client, tenant):
    for _ in range(51):
        await open_account(client, tenant)
    r = await client.get(URL, headers=tenant.headers())
    page = r.json()
    assert len(page["data"]) == 50
    assert page["meta"]["limit"] == 50
    assert page["meta"]["has_more"] is True
    rest = await client.get(f"{URL}?cursor={page['meta']['next_cursor']}", headers=tenant.headers())
    assert len(rest.json()["data"]) == 1
    assert rest.json()["meta"]["has_more"] is False


@pytest.mark.parametrize("limit", ["1", "1000"])
async def test_list_accepts_limit_bounds(client, tenant, limit):
    await open_account(client, tenant)
    r = await client.get(f"{URL}?limit={limit}", headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["limit"] == int(limit)
    assert len(r.json()["data"]) == 1


async def test_list_filters_by_currency(client, tenant):
    usd1 = await open_account(client, tenant, currency="USD")
    await open_account(client, tenant, currency="EUR")
    usd2 = await open_account(client, tenant, currency="USD")
    assert await listed_ids(client, tenant, "&currency=USD") == [usd2["id"], usd1["id"]]
    assert len(await listed_ids(client, tenant, "&currency=EUR")) == 1
    assert await listed_ids(client, tenant, "&currency=GBP") == []


async def test_list_filters_by_status(client, tenant):
    a = await open_account(client, tenant, name="a")
    b = await open_account(client, tenant, name="b")
    c = await open_account(client, tenant, name="c")
    await patched(client, tenant, b["id"], {"status": "frozen"})
    assert await listed_ids(client, tenant, "&status=frozen") == [b["id"]]
    assert await listed_ids(client, tenant, "&status=active") == [c["id"], a["id"]]
    assert await listed_ids(client, tenant, "&status=closed") == []


async def test_list_filters_combine_with_pagination(client, tenant):
    usd = [(await open_account(client, tenant, currency="USD"))["id"] for _ in range(3)]
    await open_account(client, tenant, currency="EUR")
    r1 = await client.get(f"{URL}?currency=USD&limit=2", headers=tenant.headers())
    cursor = r1.json()["meta"]["next_cursor"]
    r2 = await client.get(f"{URL}?currency=USD&limit=2&cursor={cursor}", headers=tenant.headers())
    ids = [a["id"] for a in r1.json()["data"] + r2.json()["data"]]
    assert ids == usd[::-1]
    assert r2.json()["meta"]["has_more"] is False


@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "x", "", "1.5", "+5", " 5", "\u0665", "9" * 5000, "1" + "0" * 4300]
)
async def test_list_rejects_bad_limit(client, tenant, limit):
    r = await client.get(URL, params={"limit": limit}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["limit"]


@pytest.mark.parametrize(
    "cursor", ["abc", "", "!" * 22, "A" * 21 + "B", "A" * 23, str(uuid.uuid4())]
)
async def test_list_rejects_bad_cursor(client, tenant, cursor):
    r = await client.get(URL, params={"cursor": cursor}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["cursor"]


@pytest.mark.parametrize("currency", ["usd", "US", "TOOLONGCURRENCY1", "1USD", ""])
async def test_list_rejects_bad_currency_filter(client, tenant, currency):
    r = await client.get(URL, params={"currency": currency}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["currency"]


@pytest.mark.parametrize("status", ["open", "ACTIVE", "", "deleted"])
async def test_list_rejects_bad_status_filter(client, tenant, status):
    r = await client.get(URL, params={"status": status}, headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["status"]


@pytest.mark.parametrize("query", ["sort=asc", "offset=10", "page=2", "Limit=5"])
async def test_list_rejects_unknown_query_param(client, tenant, query):
    r = await client.get(f"{URL}?{query}", headers=tenant.headers())
    error = assert_error(r, 400, "BAD_REQUEST")
    assert field_names(error) == [query.split("=")[0]]


# --- PATCH /api/accounts/{id} -------------------------------------------------


async def test_patch_rename_bumps_version_etag_and_updated_at(client, tenant):
    created = await open_account(client, tenant, name="old")
    r = await patch(client, tenant, created["id"], {"name": "new"})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    data = r.json()["data"]
    assert data["name"] == "new"
    assert data["version"] == 2
    assert data["updated_at"] != created["updated_at"]
    assert datetime.fromisoformat(data["updated_at"]) > datetime.fromisoformat(
        created["updated_at"]
    )
    assert ISO_Z.match(data["updated_at"])
    assert data["created_at"] == created["created_at"]
    assert data["id"] == created["id"]
    assert await fetch(client, tenant, created["id"]) == data


async def test_patch_twice_reaches_version_3(client, tenant):
    created = await open_account(client, tenant)
    await patched(client, tenant, created["id"], {"name": "b"})
    r = await patch(client, tenant, created["id"], {"name": "c"})
    assert r.json()["data"]["version"] == 3
    assert r.headers["etag"] == '"3"'


async def test_patch_metadata_merges_and_null_deletes(client, tenant):
    created = await open_account(client, tenant, metadata={"keep": "1", "drop": "2", "edit": "3"})
    data = await patched(
        client, tenant, created["id"], {"metadata": {"drop": None, "edit": "33", "add": "4"}}
    )
    assert data["metadata"] == {"keep": "1", "edit": "33", "add": "4"}
    assert data["version"] == 2
    assert (await fetch(client, tenant, created["id"]))["metadata"] == data["metadata"]


async def test_patch_metadata_deleting_a_missing_key_is_harmless(client, tenant):
    created = await open_account(client, tenant, metadata={"a": "1"})
    data = await patched(client, tenant, created["id"], {"metadata": {"nope": None}})
    assert data["metadata"] == {"a": "1"}


async def test_patch_merged_metadata_over_50_keys_is_422_and_unchanged(client, tenant):
    metadata = {f"k{i}": "v" for i in range(40)}
    created = await open_account(client, tenant, metadata=metadata)
    extra = {f"x{i}": "v" for i in range(11)}
    r = await patch(client, tenant, created["id"], {"metadata": extra})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_metadata_to_exactly_50_keys_with_deletes(client, tenant):
    created = await open_account(client, tenant, metadata={f"k{i}": "v" for i in range(50)})
    body = {"metadata": {"k0": None, "new": "v"}}
    data = await patched(client, tenant, created["id"], body)
    assert len(data["metadata"]) == 50
    assert "k0" not in data["metadata"] and data["metadata"]["new"] == "v"


async def test_patch_metadata_with_control_char_is_422_and_unchanged(client, tenant):
    created = await open_account(client, tenant, metadata={"k": "v"})
    r = await patch(client, tenant, created["id"], {"metadata": {"k": "bad\u0000"}})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["metadata.k"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_name_with_control_char_is_422_and_unchanged(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"name": "a\u0085b"})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_empty_name_is_422_and_unchanged(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"name": ""})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["name"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_null_name_is_400_and_unchanged(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"name": None})
    assert_error(r, 400, "BAD_REQUEST")
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_with_matching_if_match(client, tenant):
    created = await open_account(client, tenant)
    data = await patched(client, tenant, created["id"], {"name": "b"}, If_Match='"1"')
    assert data["version"] == 2


async def test_patch_with_weak_if_match(client, tenant):
    created = await open_account(client, tenant)
    data = await patched(client, tenant, created["id"], {"name": "b"}, If_Match='W/"1"')
    assert data["version"] == 2


async def test_patch_with_if_match_star(client, tenant):
    created = await open_account(client, tenant)
    await patched(client, tenant, created["id"], {"name": "b"})
    data = await patched(client, tenant, created["id"], {"name": "c"}, If_Match="*")
    assert data["version"] == 3


async def test_patch_with_etag_from_get(client, tenant):
    created = await open_account(client, tenant)
    await patched(client, tenant, created["id"], {"name": "b"})
    etag = (await client.get(account_url(created["id"]), headers=tenant.headers())).headers["etag"]
    data = await patched(client, tenant, created["id"], {"name": "c"}, If_Match=etag)
    assert data["name"] == "c"


async def test_patch_with_stale_if_match_is_412_and_unchanged(client, tenant):
    created = await open_account(client, tenant, name="a")
    current = await patched(client, tenant, created["id"], {"name": "b"})
    r = await patch(client, tenant, created["id"], {"name": "c"}, If_Match='"1"')
    assert_error(r, 412, "VERSION_MISMATCH")
    assert await fetch(client, tenant, created["id"]) == current


@pytest.mark.parametrize("tag", ['"2"', '"0"', "garbage", '""', '"-1"', '"99999999999"'])
async def test_patch_with_non_matching_if_match_is_412(client, tenant, tag):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"name": "c"}, If_Match=tag)
    assert_error(r, 412, "VERSION_MISMATCH")
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_empty_body_with_stale_if_match_is_412(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {}, If_Match='"7"')
    assert_error(r, 412, "VERSION_MISMATCH")


async def test_concurrent_patches_with_same_if_match_one_wins(client, tenant):
    created = await open_account(client, tenant)
    headers = {**tenant.headers(), "If-Match": '"1"'}
    url = account_url(created["id"])
    r1, r2 = await asyncio.gather(
        client.patch(url, json={"name": "first"}, headers=headers),
        client.patch(url, json={"name": "second"}, headers=headers),
    )
    assert sorted([r1.status_code, r2.status_code]) == [200, 412]
    winner, loser = (r1, r2) if r1.status_code == 200 else (r2, r1)
    assert_error(loser, 412, "VERSION_MISMATCH")
    final = await fetch(client, tenant, created["id"])
    assert final["version"] == 2
    assert final["name"] == winner.json()["data"]["name"]


async def test_concurrent_patches_without_if_match_both_apply(client, tenant):
    created = await open_account(client, tenant)
    url = account_url(created["id"])
    results = await asyncio.gather(
        *(
            client.patch(url, json={"metadata": {f"k{i}": "v"}}, headers=tenant.headers())
            for i in range(4)
        )
    )
    assert [r.status_code for r in results] == [200] * 4
    final = await fetch(client, tenant, created["id"])
    assert final["version"] == 5
    assert final["metadata"] == {f"k{i}": "v" for i in range(4)}


async def test_freeze_and_reactivate(client, tenant):
    created = await open_account(client, tenant)
    frozen = await patched(client, tenant, created["id"], {"status": "frozen"})
    assert frozen["status"] == "frozen" and frozen["version"] == 2
    assert (await fetch(client, tenant, created["id"]))["status"] == "frozen"
    active = await patched(client, tenant, created["id"], {"status": "active"})
    assert active["status"] == "active" and active["version"] == 3


async def test_frozen_account_can_be_renamed(client, tenant):
    created = await open_account(client, tenant)
    await patched(client, tenant, created["id"], {"status": "frozen"})
    data = await patched(client, tenant, created["id"], {"name": "still frozen"})
    assert data["status"] == "frozen" and data["name"] == "still frozen"


async def test_patch_same_status_changes_nothing(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"status": "active"})
    assert r.status_code == 200
    assert r.json()["data"]["version"] == 1
    assert r.headers["etag"] == '"1"'


async def test_close_empty_account(client, tenant):
    created = await open_account(client, tenant)
    data = await patched(client, tenant, created["id"], {"status": "closed"})
    assert data["status"] == "closed"
    assert data["version"] == 2
    assert (await fetch(client, tenant, created["id"]))["status"] == "closed"


async def test_close_frozen_empty_account(client, tenant):
    created = await open_account(client, tenant)
    await patched(client, tenant, created["id"], {"status": "frozen"})
    data = await patched(client, tenant, created["id"], {"status": "closed"})
    assert data["status"] == "closed"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "active"},
        {"status": "frozen"},
        {"status": "closed"},
        {"name": "renamed"},
        {"metadata": {"k": "v"}},
        {"overdraft_limit": 10},
        {"overdraft_limit": None},
        {},
    ],
)
async def test_any_patch_of_closed_account_is_409(client, tenant, body):
    created = await open_account(client, tenant)
    closed = await patched(client, tenant, created["id"], {"status": "closed"})
    r = await patch(client, tenant, created["id"], body)
    assert_error(r, 409, "ACCOUNT_CLOSED")
    assert await fetch(client, tenant, created["id"]) == closed


async def test_patch_overdraft_limit_to_null_and_back(client, tenant):
    created = await open_account(client, tenant)
    data = await patched(client, tenant, created["id"], {"overdraft_limit": None})
    assert data["overdraft_limit"] is None and data["version"] == 2
    assert (await fetch(client, tenant, created["id"]))["overdraft_limit"] is None
    data = await patched(client, tenant, created["id"], {"overdraft_limit": 750})
    assert data["overdraft_limit"] == 750 and data["version"] == 3
    assert (await fetch(client, tenant, created["id"]))["overdraft_limit"] == 750


@pytest.mark.parametrize(("value", "status"), [(-1, 422), (2**63, 422), ("5", 400), (2.5, 400)])
async def test_patch_bad_overdraft_limit_is_rejected_and_unchanged(client, tenant, value, status):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"overdraft_limit": value})
    error = assert_error(r, status, "VALIDATION_ERROR" if status == 422 else "BAD_REQUEST")
    assert field_names(error) == ["overdraft_limit"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_empty_body_keeps_version(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"1"'
    assert r.json()["data"] == created
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_several_fields_at_once_is_one_version(client, tenant):
    created = await open_account(client, tenant)
    body = {"name": "n", "status": "frozen", "overdraft_limit": 5, "metadata": {"a": "b"}}
    data = await patched(client, tenant, created["id"], body)
    assert (data["name"], data["status"], data["overdraft_limit"], data["metadata"]) == (
        "n",
        "frozen",
        5,
        {"a": "b"},
    )
    assert data["version"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"currency": "EUR"},
        {"holder": {"name": "x"}},
        {"nope": 1},
        {"version": 5},
        {"balance": {"posted": 1}},
    ],
)
async def test_patch_unknown_or_immutable_field_is_400_and_unchanged(client, tenant, body):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], body)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == list(body)
    assert await fetch(client, tenant, created["id"]) == created


@pytest.mark.parametrize("status", ["open", "ACTIVE", "deleted", ""])
async def test_patch_wrong_status_value_is_422_and_unchanged(client, tenant, status):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"status": status})
    assert field_names(assert_error(r, 422, "VALIDATION_ERROR")) == ["status"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_status_of_wrong_type_is_400(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"status": 1})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["status"]
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_reports_every_failing_field(client, tenant):
    created = await open_account(client, tenant)
    r = await patch(
        client, tenant, created["id"], {"name": "", "overdraft_limit": -5, "status": "gone"}
    )
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert sorted(field_names(error)) == ["name", "overdraft_limit", "status"]
    assert await fetch(client, tenant, created["id"]) == created


@pytest.mark.parametrize("content", [b"{", b"[]", b"null", b"not json"])
async def test_patch_malformed_body_is_400_and_unchanged(client, tenant, content):
    created = await open_account(client, tenant)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    r = await client.patch(account_url(created["id"]), content=content, headers=headers)
    assert_error(r, 400, "BAD_REQUEST")
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_without_json_content_type_is_415(client, tenant):
    created = await open_account(client, tenant)
    headers = {**tenant.headers(), "Content-Type": "text/plain"}
    r = await client.patch(account_url(created["id"]), content=b'{"name": "x"}', headers=headers)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_body_over_64_kib_is_413(client, tenant):
    created = await open_account(client, tenant)
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    content = json.dumps({"name": "n" * (65 * 1024)}).encode()
    r = await client.patch(account_url(created["id"]), content=content, headers=headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await fetch(client, tenant, created["id"]) == created


async def test_patch_unknown_id_is_404(client, tenant):
    r = await patch(client, tenant, str(uuid.uuid4()), {"name": "x"})
    assert_error(r, 404, "NOT_FOUND")


@pytest.mark.parametrize("bad_id", ["abc", "1234", "not-a-uuid-at-all-but-36-chars-long!"])
async def test_patch_bad_id_is_400(client, tenant, bad_id):
    r = await patch(client, tenant, bad_id, {"name": "x"})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["id"]


# --- tenant isolation --------------------------------------------------------


async def test_other_tenant_cannot_get_account(client, tenant, other_tenant):
    created = await open_account(client, tenant)
    r = await client.get(account_url(created["id"]), headers=other_tenant.headers())
    error = assert_error(r, 404, "NOT_FOUND")
    assert created["id"] not in r.text
    assert error["details"] == {}


async def test_other_tenant_cannot_patch_account(client, tenant, other_tenant):
    created = await open_account(client, tenant, name="mine", metadata={"a": "1"})
    for body in (
        {"name": "stolen"},
        {"status": "frozen"},
        {"status": "closed"},
        {"metadata": {"a": None}},
        {"overdraft_limit": None},
        {},
    ):
        r = await patch(client, other_tenant, created["id"], body)
        assert_error(r, 404, "NOT_FOUND")
    r = await patch(client, other_tenant, created["id"], {"name": "stolen"}, If_Match='"1"')
    assert_error(r, 404, "NOT_FOUND")
    assert await fetch(client, tenant, created["id"]) == created


async def test_other_tenant_does_not_see_account_in_list(client, tenant, other_tenant):
    mine = await open_account(client, tenant, currency="USD")
    theirs = await open_account(client, other_tenant, currency="USD")
    assert await listed_ids(client, other_tenant) == [theirs["id"]]
    assert await listed_ids(client, other_tenant, "&currency=USD") == [theirs["id"]]
    assert await listed_ids(client, tenant) == [mine["id"]]


async def test_cursor_from_other_tenant_reveals_nothing(client, tenant, other_tenant):
    for _ in range(3):
        await open_account(client, tenant)
    r = await client.get(f"{URL}?limit=1", headers=tenant.headers())
    cursor = r.json()["meta"]["next_cursor"]
    r = await client.get(f"{URL}?cursor={cursor}", headers=other_tenant.headers())
    assert r.status_code == 200
    assert r.json()["data"] == []


# --- authentication and scopes ------------------------------------------------


async def test_get_needs_ledger_read(client, tenant):
    created = await open_account(client, tenant)
    r = await client.get(account_url(created["id"]), headers=tenant.headers("ledger:write"))
    error = assert_error(r, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == "ledger:read"
    assert created["name"] not in r.text


async def test_list_needs_ledger_read(client, tenant):
    await open_account(client, tenant)
    r = await client.get(URL, headers=tenant.headers("ledger:write", "pii:read"))
    error = assert_error(r, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == "ledger:read"


async def test_post_needs_ledger_write(client, tenant):
    r = await create(
        client,
        tenant,
        {"name": "a", "currency": "USD"},
        headers=tenant.headers("ledger:read", "pii:read", "admin"),
    )
    error = assert_error(r, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == "ledger:write"
    await assert_no_accounts(client, tenant)


async def test_patch_needs_ledger_write(client, tenant):
    created = await open_account(client, tenant)
    r = await client.patch(
        account_url(created["id"]), json={"name": "x"}, headers=tenant.headers("ledger:read")
    )
    error = assert_error(r, 403, "FORBIDDEN")
    assert error["details"]["required_scope"] == "ledger:write"
    assert await fetch(client, tenant, created["id"]) == created


async def test_ledger_write_alone_can_open_and_patch(client, tenant):
    r = await create(
        client, tenant, {"name": "a", "currency": "USD"}, headers=tenant.headers("ledger:write")
    )
    assert r.status_code == 201, r.text
    r = await client.patch(
        account_url(r.json()["data"]["id"]),
        json={"name": "b"},
        headers=tenant.headers("ledger:write"),
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", URL),
        ("GET", URL),
        ("GET", f"{URL}/{uuid.uuid4()}"),
        ("PATCH", f"{URL}/{uuid.uuid4()}"),
    ],
)
async def test_accounts_routes_need_a_token(client, tenant, method, path):
    kwargs = {"json": {"name": "a", "currency": "USD"}} if method != "GET" else {}
    r = await client.request(method, path, **kwargs)
    assert_error(r, 401, "UNAUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Bearer")
    await assert_no_accounts(client, tenant)


async def test_forged_token_is_401_and_writes_nothing(client, tenant):
    token = tenant.token()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = await client.post(
        URL, json={"name": "a", "currency": "USD"}, headers={"Authorization": f"Bearer {forged}"}
    )
    assert_error(r, 401, "UNAUTHENTICATED")
    await assert_no_accounts(client, tenant)


@pytest.mark.parametrize(
    "tag",
    ['"2", "1"', '"1", W/"7"', ', "1"', '"1",', '"9" , "1" ', 'W/"1", "x"'],
)
async def test_patch_if_match_is_a_list_any_member_of_which_matches(client, tenant, tag):
    """RFC 9110 13.1.1: If-Match lists entity tags; the current one anywhere matches."""
    created = await open_account(client, tenant)
    data = await patched(client, tenant, created["id"], {"name": "b"}, If_Match=tag)
    assert data["version"] == 2


async def test_patch_if_match_on_several_lines_is_one_list(client, tenant):
    created = await open_account(client, tenant)
    headers = [*tenant.headers().items(), ("If-Match", '"5"'), ("If-Match", '"1"')]
    r = await client.patch(account_url(created["id"]), json={"name": "b"}, headers=headers)
    assert r.status_code == 200, r.text
    headers = [*tenant.headers().items(), ("If-Match", '"5"'), ("If-Match", '"6"')]
    r = await client.patch(account_url(created["id"]), json={"name": "c"}, headers=headers)
    assert_error(r, 412, "VERSION_MISMATCH")


@pytest.mark.parametrize(
    "tag",
    ['"01"', "1", '"1', '1"', '"1" "1"', '"1";', 'w/"1"', '"1"x', '"+1"', '"1.0"'],
)
async def test_patch_if_match_that_is_not_the_version_tag_is_412(client, tenant, tag):
    """Only the tag Tally sends, quoted, names a version: a look-alike matches nothing."""
    created = await open_account(client, tenant)
    r = await patch(client, tenant, created["id"], {"name": "c"}, If_Match=tag)
    assert_error(r, 412, "VERSION_MISMATCH")
    assert await fetch(client, tenant, created["id"]) == created
