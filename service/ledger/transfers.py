"""Money movement: transfers, holds, posts, voids and expiry, through group commit.

Every write goes through `TransferEngine.submit`. A batch of queued requests
is applied in one transaction: lock the holds, then the accounts, then the
tenants' event counters (always in key order, so batches never deadlock),
decide every operation in arrival order with the `fastpath.kernel`, and write
all effects with one set-based statement. A rejected operation changes
nothing; with `atomic`, one rejection rejects its whole request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

from fastpath import kernel
from service import metrics
from service.coalesce import MAX_COALESCED_PAGE, MAX_PAGES_PER_QUERY, Coalescer
from service.db import idempotency as idem_sql
from service.db import transfers as sql
from service.db.ids import new_id
from service.db.pool import RETRYABLE, Database, DatabaseUnavailable
from service.ledger import idempotency
from service.ledger.batcher import GroupCommit
from service.ledger.idempotency import Claimed, IdempotencyClaim

log = logging.getLogger("tally.transfers")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
_EVENT_TYPES = {
    "posted": "transfer.posted",
    "post": "transfer.posted",
    "pending": "transfer.pending",
    "void": "transfer.voided",
    "expire": "transfer.expired",
}
_STATUS_AFTER = {"post": "posted", "void": "voided", "expire": "expired"}
_RETRIES = 3


@dataclass(slots=True)
class NewTransfer:
    """A transfer to create: posted at once, or a hold when `pending`."""

    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    pending: bool = False
    timeout_seconds: int | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(slots=True)
class Settle:
    """Post (all or `amount` of), void, or expire the hold `transfer_id`."""

    transfer_id: uuid.UUID
    kind: int  # kernel.POST, kernel.VOID or kernel.EXPIRE
    amount: int | None = None


Outcome = tuple[str | None, dict[str, Any] | None]
"""Per operation: (error code or None, the transfer as it stands after it)."""


@dataclass(slots=True)
class Request:
    """One client request: its operations, all-or-nothing when `atomic`.

    `render` turns the outcomes into the stored reply of an idempotent request;
    it runs inside the batch transaction so the reply commits with the work.
    With a `claim`, the key is claimed in that transaction too, and a request
    whose key is taken gets `Claimed` instead of outcomes.
    """

    tenant_id: uuid.UUID
    ops: list[NewTransfer | Settle]
    atomic: bool = False
    claim: IdempotencyClaim | None = None
    render: Callable[[list[Outcome]], tuple[int, bytes]] | None = None


def transfer_dict(row: tuple) -> dict[str, Any]:
    """A transfer row (db.transfers.TRANSFER_COLUMNS order) as its JSON object."""
    (tid, debit, credit, amount, currency, status, posted_amount, expires_at,
     description, metadata, created_at, updated_at) = row  # fmt: skip
    return {
        "id": str(tid),
        "debit_account_id": str(debit),
        "credit_account_id": str(credit),
        "amount": amount,
        "currency": currency,
        "status": status,
        "posted_amount": posted_amount,
        "expires_at": expires_at,
        "description": description,
        "metadata": metadata,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class TransferEngine:
    """Owns the group-commit queue of one worker process."""

    def __init__(
        self,
        db: Database,
        *,
        group_commit: bool = True,
        max_batch: int = 512,
        max_inflight: int = 1,
    ) -> None:
        self.db = db
        # Without group commit every request is its own transaction, with as
        # many in flight as the pool allows (the baseline benchmarks compare).
        self.queue: GroupCommit[Request, list[Outcome] | Claimed] = GroupCommit(
            self._flush,
            max_size=max_batch if group_commit else 1,
            max_inflight=max_inflight if group_commit else db.pool.max_size,
            size=lambda r: len(r.ops),
        )

    async def submit(self, request: Request) -> list[Outcome] | Claimed:
        return await self.queue.submit(request)

    async def _flush(self, requests: list[Request]) -> list[Any]:
        try:
            return await self._transaction(requests)
        except NotCommitted as failure:
            if len(requests) == 1 or isinstance(failure.cause, DatabaseUnavailable):
                raise
            # Should not happen (the kernel decides every rule); if it does,
            # keep one request's failure from failing its neighbours.
            log.exception("batch of %d failed; retrying one by one", len(requests))
            results: list[Any] = []
            for request in requests:
                try:
                    results.append((await self._transaction([request]))[0])
                except Exception as exc:
                    results.append(exc)
            return results

    async def _transaction(self, requests: list[Request]) -> list[list[Outcome] | Claimed]:
        """Apply and commit; a failure before COMMIT is raised as NotCommitted.

        A deadlock (batches spanning several tenants can meet on their event
        counters) or serialization failure rolls back everything, so the
        batch is simply run again.
        """
        for attempt in range(_RETRIES):
            applied = False
            try:
                async with self.db.connection() as conn, conn.transaction():
                    outcomes = await _apply(conn, requests)
                    applied = True
                    written = time.perf_counter()
                metrics.observe_group_commit_phase("commit", time.perf_counter() - written)
            except RETRYABLE as exc:
                if applied or attempt == _RETRIES - 1:
                    raise NotCommitted(exc) from exc
                log.warning("batch rolled back (%s); retrying", exc.sqlstate)
                continue
            except Exception as exc:
                if applied:  # COMMIT itself failed: the outcome is unknown
                    raise
                raise NotCommitted(exc) from exc
            return outcomes
        raise AssertionError("unreachable")


class NotCommitted(Exception):
    """The batch was rolled back (or never started): nothing of it was written."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _apply(
    conn: psycopg.AsyncConnection, all_requests: list[Request]
) -> list[list[Outcome] | Claimed]:
    lap = _Laps()
    refused = await _claim_keys(conn, all_requests)
    lap("claim")
    requests = [r for i, r in enumerate(all_requests) if i not in refused]
    if not requests:
        return [Claimed(refused[i]) for i in range(len(all_requests))]
    hold_keys = sorted(
        {(r.tenant_id, op.transfer_id) for r in requests for op in r.ops if isinstance(op, Settle)}
    )
    holds: dict[tuple[uuid.UUID, uuid.UUID], list[Any]] = {}
    transfers: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]] = {}
    account_keys: set[tuple[uuid.UUID, uuid.UUID]] = set()
    if hold_keys:
        for row in await sql.lock_holds(conn, hold_keys):
            tenant_id, data = row[0], transfer_dict(row[1:])
            key = (tenant_id, row[1])
            debit, credit = (tenant_id, row[2]), (tenant_id, row[3])
            expires = _micros(data["expires_at"]) if data["expires_at"] else None
            holds[key] = [debit, credit, data["amount"], data["status"], expires]
            transfers[key] = data
            account_keys.update((debit, credit))
    for r in requests:
        for op in r.ops:
            if isinstance(op, NewTransfer):
                account_keys.add((r.tenant_id, op.debit_account_id))
                account_keys.add((r.tenant_id, op.credit_account_id))
    accounts: dict[tuple[uuid.UUID, uuid.UUID], list[Any]] = {}
    if account_keys:
        for row in await sql.lock_accounts(conn, sorted(account_keys)):
            accounts[(row[0], row[1])] = list(row[2:])
    ts = await sql.clock(conn)
    lap("lock")
    now_us = _micros(ts)

    ops, new_by_key = _kernel_ops(requests, now_us, ts)
    results, effects = kernel.decide(ops, accounts, holds, now_us)

    writes = _Writes(ts)
    for effect in effects:
        writes.add(effect, new_by_key, transfers)
    for key in writes.touched:
        writes.account(key, accounts[key])
    outcomes = _outcomes(requests, results, ops, transfers)
    for request, request_outcomes in zip(requests, outcomes, strict=True):
        if request.claim is not None and request.render is not None:
            status, body = request.render(request_outcomes)
            writes.reply(request.tenant_id, request.claim, status, body)
    tables = writes.tables()
    lap("decide")
    await sql.write_batch(conn, writes.ts, tables)
    lap("write")
    applied = iter(outcomes)
    return [
        Claimed(refused[i]) if i in refused else next(applied) for i in range(len(all_requests))
    ]


class _Laps:
    """Times the phases of a batch for `tally_group_commit_phase_seconds`.

    Under load most of a batch's time can be waiting for another batch's
    locks (a shared account, or the tenant's event counter): the lock and
    write phases show it, apart from PostgreSQL's own work and the commit.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        metrics.observe_group_commit_phase(phase, now - self._last)
        self._last = now


async def _claim_keys(conn: psycopg.AsyncConnection, requests: list[Request]) -> dict[int, tuple]:
    """Claim the requests' idempotency keys; {request index: key row} for those
    that could not be claimed (the key is in use, or already answered)."""
    claims: list[tuple[int, uuid.UUID, IdempotencyClaim]] = []
    refused: dict[int, tuple] = {}
    first_hash: dict[tuple[uuid.UUID, uuid.UUID, str], bytes] = {}
    for index, r in enumerate(requests):
        claim = r.claim
        if claim is None:
            continue
        name = (r.tenant_id, claim.client_id, claim.key)
        if name in first_hash:
            # A repeat within this batch: the first is in flight right here.
            refused[index] = (idem_sql.IN_FLIGHT, first_hash[name], None, None)
            continue
        first_hash[name] = claim.request_hash
        claims.append((index, r.tenant_id, claim))
    if claims:
        refused.update(await idempotency.claim_many(conn, claims))
    return refused


def _kernel_ops(
    requests: list[Request], now_us: int, ts: datetime
) -> tuple[list[tuple[Any, ...]], dict[tuple[uuid.UUID, uuid.UUID], NewTransfer]]:
    ops: list[tuple[Any, ...]] = []
    new_by_key: dict[tuple[uuid.UUID, uuid.UUID], NewTransfer] = {}
    for index, r in enumerate(requests):
        group = index if r.atomic and len(r.ops) > 1 else -1
        for op in r.ops:
            if isinstance(op, NewTransfer):
                key = (r.tenant_id, op.id)
                new_by_key[key] = op
                expires = None
                if op.pending and op.timeout_seconds is not None:
                    expires = now_us + op.timeout_seconds * 1_000_000
                kind = kernel.PENDING if op.pending else kernel.TRANSFER
                ops.append((
                    kind, key, (r.tenant_id, op.debit_account_id),
                    (r.tenant_id, op.credit_account_id), op.amount, op.currency, expires, group,
                ))  # fmt: skip
            else:
                key = (r.tenant_id, op.transfer_id)
                ops.append((op.kind, key, None, None, op.amount, None, None, group))
    return ops, new_by_key


def _outcomes(
    requests: list[Request],
    results: list[str | None],
    ops: list[tuple[Any, ...]],
    transfers: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]],
) -> list[list[Outcome]]:
    outcomes: list[list[Outcome]] = []
    i = 0
    for r in requests:
        mine: list[Outcome] = []
        for _ in r.ops:
            code = results[i]
            mine.append((code, transfers.get(ops[i][1]) if code is None else None))
            i += 1
        outcomes.append(mine)
    return outcomes


class _Writes:
    """The rows of a batch's one write statement, per table (see db.transfers._WRITE)."""

    def __init__(self, ts: datetime) -> None:
        self.ts = ts
        self.touched: dict[tuple[uuid.UUID, uuid.UUID], None] = {}
        self.transfers: list[dict[str, Any]] = []
        self.settled: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.accounts: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.event_counts: dict[uuid.UUID, int] = {}

    def tables(self) -> dict[str, bytes]:
        counts = [{"t": t, "n": n} for t, n in sorted(self.event_counts.items())]
        return {
            "transfers": _encode(self.transfers),
            "settled": _encode(self.settled),
            "entries": _encode(self.entries),
            "accounts": _encode(self.accounts),
            "counts": _encode(counts),
            "events": _encode(self.events),
            "replies": _encode(self.replies),
        }

    def add(
        self,
        effect: tuple[Any, ...],
        new_by_key: dict[tuple[uuid.UUID, uuid.UUID], NewTransfer],
        transfers: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]],
    ) -> None:
        (_, kind, key, debit_key, credit_key, amount, posted_amount,
         d_posted, d_pd, d_pc, c_posted, c_pd, c_pc) = effect  # fmt: skip
        tenant_id, transfer_id = key
        if kind in ("posted", "pending"):
            op = new_by_key[key]
            expires = None
            if op.pending and op.timeout_seconds is not None:
                expires = self.ts + timedelta(seconds=op.timeout_seconds)
            status = "posted" if kind == "posted" else "pending"
            self.transfers.append({
                "t": tenant_id, "i": transfer_id, "d": op.debit_account_id,
                "c": op.credit_account_id, "a": amount, "cu": op.currency, "s": status,
                "p": posted_amount, "e": expires, "de": op.description, "m": op.metadata,
                "da": d_posted, "ca": c_posted,
            })  # fmt: skip
            transfers[key] = {
                "id": str(transfer_id), "debit_account_id": str(op.debit_account_id),
                "credit_account_id": str(op.credit_account_id), "amount": amount,
                "currency": op.currency, "status": status, "posted_amount": posted_amount,
                "expires_at": expires, "description": op.description, "metadata": op.metadata,
                "created_at": self.ts, "updated_at": self.ts,
            }  # fmt: skip
        else:
            status = _STATUS_AFTER[kind]
            self.settled.append({"t": tenant_id, "i": transfer_id, "s": status, "p": posted_amount})
            data = transfers[key]
            data["status"], data["posted_amount"] = status, posted_amount
            data["updated_at"] = self.ts
        # Entry amounts, from each account's point of view.
        moved = posted_amount or 0
        if kind == "pending":
            debit_pending, credit_pending = -amount, amount
        elif kind == "posted":
            debit_pending = credit_pending = 0
        else:  # the hold is released (and for "post", moved)
            debit_pending, credit_pending = amount, -amount
        for account_key, posted_delta, pending_delta, po, pd, pc in (
            (debit_key, -moved, debit_pending, d_posted, d_pd, d_pc),
            (credit_key, moved, credit_pending, c_posted, c_pd, c_pc),
        ):
            self.entries.append({
                "t": tenant_id, "ac": account_key[1], "i": transfer_id, "k": kind,
                "a": posted_delta, "pa": pending_delta, "po": po, "pd": pd, "pc": pc,
            })  # fmt: skip
            self.touched[account_key] = None
        count = self.event_counts[tenant_id] = self.event_counts.get(tenant_id, 0) + 1
        self.events.append({
            "t": tenant_id, "i": new_id(), "n": count, "k": _EVENT_TYPES[kind],
            "d": dict(transfers[key]),
        })  # fmt: skip

    def account(self, key: tuple[uuid.UUID, uuid.UUID], state: list[Any]) -> None:
        self.accounts.append(
            {"t": key[0], "i": key[1], "po": state[0], "pd": state[1], "pc": state[2]}
        )

    def reply(
        self, tenant_id: uuid.UUID, claim: IdempotencyClaim, status: int, body: bytes
    ) -> None:
        self.replies.append({
            "t": tenant_id, "c": claim.client_id, "k": claim.key, "s": status,
            "b": body.decode(),
        })  # fmt: skip


class TransferReader:
    """Reads transfers. Reads by id, and the common page (one account's newest
    transfers, maybe below a cursor, up to MAX_COALESCED_PAGE), are each read
    with every other such read asked for meanwhile in one query (see
    service.coalesce); other pages are a query of their own."""

    def __init__(self, db: Database, *, max_inflight: int = 2) -> None:
        self.db = db
        self.reads: Coalescer[tuple[uuid.UUID, uuid.UUID], tuple | None] = Coalescer(
            db.batch_query(sql.get_many), max_inflight=max_inflight
        )
        self.pages: Coalescer[sql.AccountPage, list[tuple]] = Coalescer(
            db.batch_query(sql.account_pages),
            max_size=MAX_PAGES_PER_QUERY,
            max_inflight=max_inflight,
        )


async def get_transfer(
    reader: TransferReader, tenant_id: uuid.UUID, transfer_id: uuid.UUID
) -> tuple | None:
    return await reader.reads.call((tenant_id, transfer_id))


async def list_transfers(
    reader: TransferReader, tenant_id: uuid.UUID, *, limit: int, **filters: Any
) -> tuple[list[tuple], bool]:
    """One page, newest first, and whether more follow; `filters` are those of
    db.transfers.page (before, account_id, status, created_from, created_to)."""
    others = (filters["status"], filters["created_from"], filters["created_to"])
    small = limit <= MAX_COALESCED_PAGE
    if filters["account_id"] is not None and others == (None, None, None) and small:
        page = (tenant_id, filters["account_id"], limit + 1, filters["before"])
        rows = await reader.pages.call(page)
    else:
        async with reader.db.connection() as conn:
            rows = await sql.page(conn, tenant_id, limit=limit + 1, **filters)
    return rows[:limit], len(rows) > limit
