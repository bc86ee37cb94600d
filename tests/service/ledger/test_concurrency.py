"""Many concurrent clients on a few hot accounts; afterwards the books must balance.

Clients make random transfers, holds, posts, voids, overdraft attempts,
currency mistakes and idempotent retries, with and without group commit.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from service.app import create_app
from tests.conftest import Tenant, make_tenant

CLIENTS = 50
OPS_PER_CLIENT = 24


@dataclass
class Books:
    """What the clients were told."""

    created: dict[str, dict] = field(default_factory=dict)  # transfer id -> body
    by_key: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    holds: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))


async def open_account(http: httpx.AsyncClient, tenant: Tenant, currency: str, limit) -> str:
    r = await http.post(
        "/api/accounts",
        json={"name": f"hot {currency}", "currency": currency, "overdraft_limit": limit},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


async def client_session(
    http: httpx.AsyncClient, tenant: Tenant, usd: list[str], eur: str, books: Books, seed: int
) -> None:
    rnd = random.Random(seed)
    headers = tenant.headers()
    for n in range(OPS_PER_CLIENT):
        choice = rnd.random()
        if choice < 0.55 or not books.holds:
            debit, credit = rnd.sample(usd, 2)
            if rnd.random() < 0.1:
                credit = eur  # currency mistake
            body = {
                "debit_account_id": debit, "credit_account_id": credit,
                "amount": rnd.choice([1, 5, 50, 400, 10**6]), "currency": "USD",
            }  # fmt: skip
            if rnd.random() < 0.3:
                body["pending"] = True
                if rnd.random() < 0.3:
                    body["timeout_seconds"] = 1
            key = f"c{seed}-{n}" if rnd.random() < 0.5 else None
            tries = rnd.choice([1, 2, 3]) if key else 1
            request_headers = {**headers, **({"Idempotency-Key": key} if key else {})}
            # Retries of one key race each other on purpose.
            responses = await asyncio.gather(
                *(http.post("/api/transfers", json=body, headers=request_headers)
                  for _ in range(tries))
            )  # fmt: skip
            for r in responses:
                books.statuses[r.status_code] += 1
                assert r.status_code in (201, 409, 422), r.text
                if r.status_code == 409:
                    assert r.json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
                if r.status_code == 201:
                    data = r.json()["data"]
                    books.created[data["id"]] = data
                    if key:
                        books.by_key[key].add(data["id"])
                    if data["status"] == "pending":
                        books.holds.append(data["id"])
        else:
            hold = rnd.choice(books.holds)
            action = rnd.choice(["post", "void", "partial"])
            body = {"amount": rnd.randint(1, 3)} if action == "partial" else {}
            path = "void" if action == "void" else "post"
            r = await http.post(f"/api/transfers/{hold}/{path}", json=body, headers=headers)
            books.statuses[r.status_code] += 1
            assert r.status_code in (200, 422), r.text
            if r.status_code == 422:
                assert r.json()["error"]["code"] in (
                    "TRANSFER_NOT_PENDING",
                    "AMOUNT_EXCEEDS_PENDING",
                ), r.text


@pytest.fixture(params=[True, False], ids=["group-commit", "one-by-one"])
async def ledger_app(request, app, settings):
    if request.param:
        yield app
        return
    application = create_app(settings.with_overrides(group_commit=False))
    async with application.router.lifespan_context(application):
        yield application


async def test_books_balance_after_concurrent_chaos(ledger_app):
    transport = httpx.ASGITransport(app=ledger_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        tenant = await make_tenant(ledger_app, "chaos")
        usd = [
            await open_account(http, tenant, "USD", None),  # the source: no floor
            await open_account(http, tenant, "USD", 0),
            await open_account(http, tenant, "USD", 0),
            await open_account(http, tenant, "USD", 100),
            await open_account(http, tenant, "USD", 0),
        ]
        eur = await open_account(http, tenant, "EUR", 0)
        books = Books()
        await asyncio.gather(
            *(client_session(http, tenant, usd, eur, books, seed) for seed in range(CLIENTS))
        )
    assert books.statuses[201] > 100 and books.statuses[422] > 10  # the mix really happened
    await check_books(ledger_app, tenant, books, limits={usd[1]: 0, usd[2]: 0, usd[3]: 100,
                                                         usd[4]: 0, eur: 0})  # fmt: skip


async def check_books(app, tenant: Tenant, books: Books, limits: dict[str, int]) -> None:
    async with app.state.db.connection() as conn:
        sums = await (await conn.execute(
            "SELECT currency, sum(posted) FROM accounts WHERE tenant_id = %s GROUP BY currency",
            (tenant.tenant_id,),
        )).fetchall()  # fmt: skip
        accounts = await (await conn.execute(
            "SELECT id, posted, pending_debits, pending_credits FROM accounts"
            " WHERE tenant_id = %s", (tenant.tenant_id,),
        )).fetchall()  # fmt: skip
        entry_sums = dict(
            (r[0], (r[1], r[2]))
            for r in await (await conn.execute(
                "SELECT account_id, sum(amount), sum(pending_amount) FROM entries"
                " WHERE tenant_id = %s GROUP BY account_id", (tenant.tenant_id,),
            )).fetchall()
        )  # fmt: skip
        holds = await (await conn.execute(
            "SELECT debit_account_id, credit_account_id, amount FROM transfers"
            " WHERE tenant_id = %s AND status = 'pending'", (tenant.tenant_id,),
        )).fetchall()  # fmt: skip
        stored = await (await conn.execute(
            "SELECT id, amount, status, posted_amount FROM transfers WHERE tenant_id = %s",
            (tenant.tenant_id,),
        )).fetchall()  # fmt: skip

    # Conservation: per currency, posted balances sum to zero.
    assert all(total == 0 for _, total in sums), sums
    held_debits: dict[uuid.UUID, int] = defaultdict(int)
    held_credits: dict[uuid.UUID, int] = defaultdict(int)
    for debit, credit, amount in holds:
        held_debits[debit] += amount
        held_credits[credit] += amount
    for account_id, posted, pending_debits, pending_credits in accounts:
        # Each balance equals the sum of its entries.
        entry_posted, entry_pending = entry_sums.get(account_id, (0, 0))
        assert posted == entry_posted
        assert pending_credits - pending_debits == entry_pending
        # Pending balances equal the open holds.
        assert pending_debits == held_debits[account_id]
        assert pending_credits == held_credits[account_id]
        # Floors hold.
        limit = limits.get(str(account_id))
        if limit is not None:
            assert posted - pending_debits >= -limit, (account_id, posted, pending_debits)
    # Every 201 exists exactly once, and nothing exists that nobody was told of.
    assert {str(r[0]) for r in stored} == set(books.created)
    assert len(stored) == len(books.created)
    # One key, one transfer.
    assert all(len(ids) == 1 for ids in books.by_key.values())
    for _, amount, status, posted_amount in stored:
        assert (posted_amount is not None) == (status == "posted")
        assert posted_amount is None or 0 < posted_amount <= amount
