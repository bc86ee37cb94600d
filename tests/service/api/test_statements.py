"""Statements (GET /api/accounts/{id}/entries) and point-in-time balances
(GET /api/accounts/{id}/balance?at=).

Each entry is one change of one account's balance with the balance right
after it; an account's entries add up to its balance, and the balance at an
instant is the balance after the last change at or before it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from service.ledger import maintenance
from tests.service.api.helpers import (
    ACCOUNTS,
    account,
    assert_error,
    bal,
    field_names,
    iso,
    open_account,
    parse_time,
)

URL = "/api/transfers"
ENTRY_FIELDS = {
    "id",
    "transfer_id",
    "kind",
    "amount",
    "pending_amount",
    "balance",
    "created_at",
}
ZERO = {"posted": 0, "pending": 0, "available": 0}


# --- helpers -----------------------------------------------------------------


async def moved(client, tenant, debit: str, credit: str, amount: int, **fields: Any) -> dict:
    body = {
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **fields,
    }
    r = await client.post(URL, json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def settled(client, tenant, transfer_id: str, action: str, body: Any = None) -> dict:
    kwargs = {} if body is None else {"json": body}
    r = await client.post(f"{URL}/{transfer_id}/{action}", headers=tenant.headers(), **kwargs)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def setup(client, tenant) -> tuple[str, str, str]:
    """(world, a, b): world has no floor, a and b are empty with floor 0."""
    w = await open_account(client, tenant, name="World", overdraft_limit=None)
    a = await open_account(client, tenant, name="A")
    b = await open_account(client, tenant, name="B")
    return w, a, b


async def entries_page(client, tenant, account_id: str, /, **params: Any) -> httpx.Response:
    return await client.get(
        f"{ACCOUNTS}/{account_id}/entries", params=params, headers=tenant.headers()
    )


async def entries(client, tenant, account_id: str, /, **params: Any) -> list[dict[str, Any]]:
    r = await entries_page(client, tenant, account_id, limit=1000, **params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def balance_at(client, tenant, account_id: str, at: str | None = None) -> httpx.Response:
    params = {} if at is None else {"at": at}
    return await client.get(
        f"{ACCOUNTS}/{account_id}/balance", params=params, headers=tenant.headers()
    )


async def balance_then(client, tenant, account_id: str, at: str | None = None) -> dict:
    r = await balance_at(client, tenant, account_id, at)
    assert r.status_code == 200, r.text
    return r.json()["data"]["balance"]


def summary(items: list[dict[str, Any]]) -> list[tuple]:
    return [(e["kind"], e["amount"], e["pending_amount"], e["balance"]) for e in items]


# --- GET /api/accounts/{id}/entries ----------------------------------------------


async def test_new_account_has_no_entries(client, tenant):
    a = await open_account(client, tenant)
    r = await entries_page(client, tenant, a)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [], "meta": {"limit": 50, "has_more": False, "next_cursor": None}}


async def test_posted_transfer_writes_an_entry_on_each_side(client, tenant):
    w, a, _b = await setup(client, tenant)
    t = await moved(client, tenant, w, a, 250)
    (debit,) = await entries(client, tenant, w)
    (credit,) = await entries(client, tenant, a)
    for entry in (debit, credit):
        assert set(entry) == ENTRY_FIELDS
        assert isinstance(entry["id"], str) and entry["id"]
        assert entry["transfer_id"] == t["id"]
        assert entry["kind"] == "posted"
        assert entry["pending_amount"] == 0
        assert entry["created_at"] == t["created_at"]
    assert debit["amount"] == -250
    assert debit["balance"] == bal(-250, 0, -250)
    assert credit["amount"] == 250
    assert credit["balance"] == bal(250, 0, 250)
    assert debit["id"] != credit["id"]


async def test_entries_are_newest_first_with_running_balance(client, tenant):
    w, a, b = await setup(client, tenant)
    t1 = await moved(client, tenant, w, a, 100)
    t2 = await moved(client, tenant, a, b, 30)
    t3 = await moved(client, tenant, w, a, 5)
    got = await entries(client, tenant, a)
    assert [e["transfer_id"] for e in got] == [t3["id"], t2["id"], t1["id"]]
    assert summary(got) == [
        ("posted", 5, 0, bal(75, 0, 75)),
        ("posted", -30, 0, bal(70, 0, 70)),
        ("posted", 100, 0, bal(100, 0, 100)),
    ]


async def test_hold_then_partial_post_entries(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 1000)
    h = await moved(client, tenant, a, b, 300, pending=True)
    await settled(client, tenant, h["id"], "post", {"amount": 120})
    assert summary(await entries(client, tenant, a))[:2] == [
        ("post", -120, 300, bal(880, 0, 880)),
        ("pending", 0, -300, bal(1000, -300, 700)),
    ]
    assert summary(await entries(client, tenant, b)) == [
        ("post", 120, -300, bal(120, 0, 120)),
        ("pending", 0, 300, bal(0, 300, 0)),
    ]


async def test_void_entries_release_the_hold(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 1000)
    h = await moved(client, tenant, a, b, 300, pending=True)
    await settled(client, tenant, h["id"], "void")
    assert summary(await entries(client, tenant, a))[:2] == [
        ("void", 0, 300, bal(1000, 0, 1000)),
        ("pending", 0, -300, bal(1000, -300, 700)),
    ]
    assert summary(await entries(client, tenant, b)) == [
        ("void", 0, -300, bal(0, 0, 0)),
        ("pending", 0, 300, bal(0, 300, 0)),
    ]


async def test_expiry_entries_release_the_hold(client, tenant):
    w, _a, b = await setup(client, tenant)
    h = await moved(client, tenant, w, b, 40, pending=True, timeout_seconds=3600)
    async with tenant.app.state.db.connection() as conn:
        await conn.execute(
            "UPDATE transfers SET expires_at = clock_timestamp() - interval '1 second'"
            " WHERE tenant_id = %s AND id = %s",
            (tenant.tenant_id, uuid.UUID(h["id"])),
        )
    await maintenance.expire_due(tenant.app.state.transfers)
    got = await entries(client, tenant, b)
    assert summary(got) == [
        ("expire", 0, -40, bal(0, 0, 0)),
        ("pending", 0, 40, bal(0, 40, 0)),
    ]
    assert {e["transfer_id"] for e in got} == {h["id"]}
    assert summary(await entries(client, tenant, w))[0] == ("expire", 0, 40, bal(0, 0, 0))


async def test_entries_add_up_to_the_balance(client, tenant):
    w, a, b = await setup(client, tenant)
    c = await open_account(client, tenant, name="C", overdraft_limit=500)
    await moved(client, tenant, w, a, 1000)
    await moved(client, tenant, a, c, 200)
    h1 = await moved(client, tenant, a, b, 300, pending=True)
    h2 = await moved(client, tenant, c, a, 150, pending=True)
    await moved(client, tenant, c, b, 300)
    await settled(client, tenant, h1["id"], "post", {"amount": 250})
    await moved(client, tenant, b, a, 10, pending=True)
    await settled(client, tenant, h2["id"], "void")
    total_posted = 0
    for account_id in (w, a, b, c):
        got = await entries(client, tenant, account_id)
        current = (await account(client, tenant, account_id))["balance"]
        assert sum(e["amount"] for e in got) == current["posted"]
        assert sum(e["pending_amount"] for e in got) == current["pending"]
        assert got[0]["balance"] == current
        total_posted += current["posted"]
    assert total_posted == 0


async def test_each_entry_balance_is_the_previous_plus_its_amounts(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 500)
    h = await moved(client, tenant, a, b, 200, pending=True)
    await moved(client, tenant, a, b, 100)
    await settled(client, tenant, h["id"], "post", {"amount": 50})
    got = list(reversed(await entries(client, tenant, a)))
    posted = pending = 0
    for e in got:
        posted += e["amount"]
        pending += e["pending_amount"]
        assert (e["balance"]["posted"], e["balance"]["pending"]) == (posted, pending)


async def test_rejected_transfers_write_no_entries(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 10)
    before = await entries(client, tenant, a)
    body = {"debit_account_id": a, "credit_account_id": b, "amount": 11, "currency": "USD"}
    r = await client.post(URL, json=body, headers=tenant.headers())
    assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert await entries(client, tenant, a) == before
    assert await entries(client, tenant, b) == []


async def test_entries_pagination_walks_every_entry_once(client, tenant):
    w, a, _b = await setup(client, tenant)
    for i in range(7):
        await moved(client, tenant, w, a, i + 1)
    everything = await entries(client, tenant, a)
    assert len(everything) == 7
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await entries_page(client, tenant, a, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += body["data"]
        assert body["meta"]["limit"] == 3
        if not body["meta"]["has_more"]:
            assert body["meta"]["next_cursor"] is None
            break
        cursor = body["meta"]["next_cursor"]
    assert seen == everything
    assert pages == 3


async def test_entries_exact_page_has_no_more(client, tenant):
    w, a, _b = await setup(client, tenant)
    await moved(client, tenant, w, a, 1)
    await moved(client, tenant, w, a, 2)
    r = await entries_page(client, tenant, a, limit=2)
    assert r.json()["meta"] == {"limit": 2, "has_more": False, "next_cursor": None}


async def test_entries_filter_by_time(client, tenant):
    w, a, _b = await setup(client, tenant)
    made = [await moved(client, tenant, w, a, i + 1) for i in range(4)]
    ids = [t["id"] for t in made]
    got = await entries(client, tenant, a, **{"from": made[1]["created_at"]})
    assert [e["transfer_id"] for e in got] == [ids[3], ids[2], ids[1]]
    got = await entries(client, tenant, a, to=made[1]["created_at"])
    assert [e["transfer_id"] for e in got] == [ids[0]]
    got = await entries(
        client, tenant, a, **{"from": made[1]["created_at"], "to": made[3]["created_at"]}
    )
    assert [e["transfer_id"] for e in got] == [ids[2], ids[1]]


async def test_entries_filter_and_pagination_together(client, tenant):
    w, a, _b = await setup(client, tenant)
    made = [await moved(client, tenant, w, a, i + 1) for i in range(5)]
    since = made[1]["created_at"]
    r = await entries_page(client, tenant, a, limit=2, **{"from": since})
    first = r.json()
    assert first["meta"]["has_more"] is True
    r = await entries_page(
        client, tenant, a, limit=2, cursor=first["meta"]["next_cursor"], **{"from": since}
    )
    second = r.json()
    assert second["meta"]["has_more"] is False
    got = [e["transfer_id"] for e in first["data"] + second["data"]]
    assert got == [t["id"] for t in made[:0:-1]]


async def test_entries_of_unknown_account_is_404(client, tenant):
    r = await entries_page(client, tenant, str(uuid.uuid4()))
    assert_error(r, 404, "NOT_FOUND")


async def test_entries_of_other_tenants_account_is_404(client, tenant, other_tenant):
    w, a, _b = await setup(client, tenant)
    await moved(client, tenant, w, a, 77)
    r = await entries_page(client, other_tenant, a)
    error = assert_error(r, 404, "NOT_FOUND")
    assert error["details"] == {}
    assert "77" not in r.text


@pytest.mark.parametrize("bad_id", ["abc", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
async def test_entries_with_bad_account_id_is_400(client, tenant, bad_id):
    r = await client.get(f"{ACCOUNTS}/{bad_id}/entries", headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["id"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "-1"),
        ("cursor", "bogus"),
        ("from", "yesterday"),
        ("from", "2026-01-01T00:00:00"),
        ("to", "2026-02-30T00:00:00Z"),
        ("account_id", "x"),
    ],
)
async def test_entries_bad_parameter_is_400(client, tenant, name, value):
    a = await open_account(client, tenant)
    r = await entries_page(client, tenant, a, **{name: value})
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == [name]


async def test_entries_reject_a_cursor_of_another_list(client, tenant):
    w, a, _b = await setup(client, tenant)
    await moved(client, tenant, w, a, 1)
    await moved(client, tenant, w, a, 2)
    r = await client.get(URL, params={"limit": 1}, headers=tenant.headers())
    cursor = r.json()["meta"]["next_cursor"]
    r = await entries_page(client, tenant, a, cursor=cursor)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["cursor"]


async def test_entries_need_ledger_read(client, tenant):
    a = await open_account(client, tenant)
    r = await client.get(f"{ACCOUNTS}/{a}/entries", headers=tenant.headers("ledger:write"))
    assert assert_error(r, 403, "FORBIDDEN")["details"]["required_scope"] == "ledger:read"


async def test_statement_routes_need_a_token(client, tenant):
    a = await open_account(client, tenant)
    for path in (f"{ACCOUNTS}/{a}/entries", f"{ACCOUNTS}/{a}/balance"):
        r = await client.get(path)
        assert_error(r, 401, "UNAUTHENTICATED")
        assert r.headers["www-authenticate"].startswith("Bearer")


# --- GET /api/accounts/{id}/balance ------------------------------------------------


async def test_balance_without_at_is_the_current_balance(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 100)
    await moved(client, tenant, a, b, 30, pending=True)
    started = datetime.now(UTC)
    r = await balance_at(client, tenant, a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data"}
    assert set(body["data"]) == {"account_id", "at", "balance"}
    assert body["data"]["account_id"] == a
    assert body["data"]["balance"] == bal(100, -30, 70)
    assert body["data"]["balance"] == (await account(client, tenant, a))["balance"]
    at = parse_time(body["data"]["at"])
    assert started - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_balance_of_new_account_is_zero(client, tenant):
    a = await open_account(client, tenant)
    assert await balance_then(client, tenant, a) == ZERO


async def test_balance_before_the_first_change_is_zero(client, tenant):
    w, a, _b = await setup(client, tenant)
    t = await moved(client, tenant, w, a, 100)
    before = iso(parse_time(t["created_at"]) - timedelta(microseconds=1))
    r = await balance_at(client, tenant, a, before)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["balance"] == ZERO
    assert parse_time(r.json()["data"]["at"]) == parse_time(before)


async def test_balance_before_the_account_existed_is_zero(client, tenant):
    w, a, _b = await setup(client, tenant)
    await moved(client, tenant, w, a, 100)
    assert await balance_then(client, tenant, a, "2000-01-01T00:00:00Z") == ZERO


async def test_balance_at_each_change_is_the_balance_after_it(client, tenant):
    w, a, b = await setup(client, tenant)
    t1 = await moved(client, tenant, w, a, 100)
    h = await moved(client, tenant, a, b, 40, pending=True)
    t3 = await moved(client, tenant, a, b, 10)
    p = await settled(client, tenant, h["id"], "post", {"amount": 25})
    assert await balance_then(client, tenant, a, t1["created_at"]) == bal(100, 0, 100)
    assert await balance_then(client, tenant, a, h["created_at"]) == bal(100, -40, 60)
    assert await balance_then(client, tenant, a, t3["created_at"]) == bal(90, -40, 50)
    assert await balance_then(client, tenant, a, p["updated_at"]) == bal(65, 0, 65)
    assert await balance_then(client, tenant, b, h["created_at"]) == bal(0, 40, 0)
    assert await balance_then(client, tenant, b, p["updated_at"]) == bal(35, 0, 35)


async def test_balance_between_changes_is_the_earlier_one(client, tenant):
    w, a, _b = await setup(client, tenant)
    t1 = await moved(client, tenant, w, a, 100)
    t2 = await moved(client, tenant, w, a, 50)
    just_before_t2 = iso(parse_time(t2["created_at"]) - timedelta(microseconds=1))
    assert parse_time(just_before_t2) >= parse_time(t1["created_at"])
    assert await balance_then(client, tenant, a, just_before_t2) == bal(100, 0, 100)


async def test_balance_in_the_future_is_the_current_one(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 100)
    await moved(client, tenant, a, b, 1, pending=True)
    assert await balance_then(client, tenant, a, "2999-01-01T00:00:00Z") == bal(100, -1, 99)


async def test_balance_at_accepts_an_offset(client, tenant):
    w, a, _b = await setup(client, tenant)
    t1 = await moved(client, tenant, w, a, 100)
    await moved(client, tenant, w, a, 50)
    plus_two = parse_time(t1["created_at"]).astimezone(timezone(timedelta(hours=2)))
    assert await balance_then(client, tenant, a, plus_two.isoformat()) == bal(100, 0, 100)


async def test_balance_at_is_returned_in_utc(client, tenant):
    a = await open_account(client, tenant)
    r = await balance_at(client, tenant, a, "2026-01-01T02:00:00+02:00")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["at"] == "2026-01-01T00:00:00Z"


async def test_balance_at_after_a_void_and_before_it(client, tenant):
    w, a, b = await setup(client, tenant)
    await moved(client, tenant, w, a, 100)
    h = await moved(client, tenant, a, b, 60, pending=True)
    v = await settled(client, tenant, h["id"], "void")
    before_void = iso(parse_time(v["updated_at"]) - timedelta(microseconds=1))
    assert await balance_then(client, tenant, a, before_void) == bal(100, -60, 40)
    assert await balance_then(client, tenant, a, v["updated_at"]) == bal(100, 0, 100)


async def test_balance_of_unknown_account_is_404(client, tenant):
    r = await balance_at(client, tenant, str(uuid.uuid4()))
    assert_error(r, 404, "NOT_FOUND")
    r = await balance_at(client, tenant, str(uuid.uuid4()), "2026-01-01T00:00:00Z")
    assert_error(r, 404, "NOT_FOUND")


async def test_balance_of_other_tenants_account_is_404(client, tenant, other_tenant):
    w, a, _b = await setup(client, tenant)
    await moved(client, tenant, w, a, 4242)
    for at in (None, "2999-01-01T00:00:00Z"):
        r = await balance_at(client, other_tenant, a, at)
        assert_error(r, 404, "NOT_FOUND")
        assert "4242" not in r.text


@pytest.mark.parametrize(
    "at",
    [
        "yesterday",
        "",
        "2026-01-01T00:00:00",
        "2026-13-01T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "1700000000",
        "0000-01-01T00:00:00Z",
    ],
)
async def test_bad_at_is_400(client, tenant, at):
    a = await open_account(client, tenant)
    r = await balance_at(client, tenant, a, at)
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["at"]


async def test_balance_unknown_parameter_is_400(client, tenant):
    a = await open_account(client, tenant)
    r = await client.get(
        f"{ACCOUNTS}/{a}/balance", params={"when": "now"}, headers=tenant.headers()
    )
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["when"]


@pytest.mark.parametrize("bad_id", ["abc", "1234"])
async def test_balance_with_bad_account_id_is_400(client, tenant, bad_id):
    r = await client.get(f"{ACCOUNTS}/{bad_id}/balance", headers=tenant.headers())
    assert field_names(assert_error(r, 400, "BAD_REQUEST")) == ["id"]


async def test_balance_needs_ledger_read(client, tenant):
    a = await open_account(client, tenant)
    r = await client.get(f"{ACCOUNTS}/{a}/balance", headers=tenant.headers("ledger:write"))
    assert assert_error(r, 403, "FORBIDDEN")["details"]["required_scope"] == "ledger:read"
