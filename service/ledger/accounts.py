"""Opening, reading, listing and changing accounts."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from fastpath import codec
from service.coalesce import Coalescer
from service.db import accounts as sql
from service.db import events
from service.db.ids import new_id
from service.db.pool import Database
from service.ledger import idempotency
from service.ledger.errors import LedgerError, NotFound, VersionMismatch
from service.ledger.idempotency import Claimed, IdempotencyClaim
from service.ledger.vault import Vault
from service.schemas import AccountCreate, AccountPatch

MAX_METADATA_KEYS = 50
_encode = msgspec.json.Encoder().encode
_COL = {name: i for i, name in enumerate(sql.ACCOUNT_COLUMNS)}
# A closed account is terminal; frozen accounts may be reactivated.
_TRANSITIONS = {
    "active": {"active", "frozen", "closed"},
    "frozen": {"active", "frozen", "closed"},
    "closed": {"closed"},
}


async def open_account(
    db: Database,
    vault: Vault,
    tenant_id: uuid.UUID,
    spec: AccountCreate,
    claim: IdempotencyClaim | None = None,
) -> tuple | Claimed:
    """Create an account with zero balances; returns its row (holder sealed).

    With a `claim`, its key is claimed in the same transaction: when another
    request holds it or has answered it, nothing is created and the key's row
    comes back as `Claimed`. The answer stored for the key is a reference to
    the account (`opened_account_id` reads it), never the holder's data.
    """
    account_id = new_id()
    holder = None
    if spec.holder is not None:
        holder = await vault.seal_holder(tenant_id, account_id, msgspec.to_builtins(spec.holder))
    async with db.connection() as conn, conn.transaction():
        if claim is not None:
            taken = await idempotency.claim_one(conn, tenant_id, claim)
            if taken is not None:
                return taken
        row = await sql.insert(
            conn,
            tenant_id,
            account_id,
            spec.name,
            spec.currency,
            spec.overdraft_limit,
            holder,
            spec.metadata,
        )
        await events.append(conn, tenant_id, "account.created", _event_data(row))
        if claim is not None:
            reference = _encode({"id": account_id}).decode()
            await idempotency.store_reply(conn, tenant_id, claim, 201, reference)
    return row


def opened_account_id(stored_body: str) -> uuid.UUID:
    """The account an Idempotency-Key's stored answer (see open_account) names."""
    return uuid.UUID(msgspec.json.decode(stored_body)["id"])


async def reveal_holder(vault: Vault, tenant_id: uuid.UUID, row: tuple) -> tuple:
    """The row with its holder decrypted (for readers with pii:read)."""
    sealed = row[_COL["holder"]]
    if sealed is None:
        return row
    holder = await vault.open_holder(tenant_id, row[_COL["id"]], bytes(sealed))
    return (*row[: _COL["holder"]], holder, *row[_COL["holder"] + 1 :])


class AccountReader:
    """Reads accounts by id; concurrent reads share one query (see service.coalesce)."""

    def __init__(self, db: Database, *, max_inflight: int = 2) -> None:
        self.db = db
        self.reads: Coalescer[tuple[uuid.UUID, uuid.UUID], tuple | None] = Coalescer(
            db.batch_query(sql.get_many), max_inflight=max_inflight
        )


async def get_account(reader: AccountReader, tenant_id: uuid.UUID, account_id: uuid.UUID) -> tuple:
    """The account's row, or NotFound (also for another tenant's account)."""
    row = await reader.reads.call((tenant_id, account_id))
    if row is None:
        raise NotFound("account")
    return row


async def list_accounts(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    before: uuid.UUID | None,
    currency: str | None,
    status: str | None,
) -> tuple[list[tuple], bool]:
    """One page of accounts, newest first, and whether more follow."""
    async with db.connection() as conn:
        rows = await sql.page(
            conn, tenant_id, limit=limit + 1, before=before, currency=currency, status=status
        )
    return rows[:limit], len(rows) > limit


async def update_account(
    db: Database,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    patch: AccountPatch,
    if_match: frozenset[int] | None,
) -> tuple:
    """Apply a PATCH under a row lock, enforcing If-Match (the versions it
    accepts; None: any) and the status rules."""
    async with db.connection() as conn, conn.transaction():
        row = await sql.get(conn, tenant_id, account_id, lock=True)
        if row is None:
            raise NotFound("account")
        if if_match is not None and row[_COL["version"]] not in if_match:
            raise VersionMismatch(row[_COL["version"]])
        changes = _changes(row, patch)
        if not changes:
            return row
        updated = await sql.update(conn, tenant_id, account_id, changes)
        await events.append(conn, tenant_id, "account.updated", _event_data(updated))
        return updated


def _event_data(row: tuple) -> dict[str, Any]:
    # Events go to other systems: never with the holder's personal data.
    return codec.account_to_dict(row, False)


def _changes(row: tuple, patch: AccountPatch) -> dict[str, Any]:
    status = row[_COL["status"]]
    changes: dict[str, Any] = {}
    if status == "closed":
        raise LedgerError("ACCOUNT_CLOSED", "A closed account cannot be changed.")
    if patch.name is not msgspec.UNSET:
        changes["name"] = patch.name
    if patch.overdraft_limit is not msgspec.UNSET:
        _check_floor(row, patch.overdraft_limit)
        changes["overdraft_limit"] = patch.overdraft_limit
    if patch.metadata is not msgspec.UNSET:
        changes["metadata"] = _merge_metadata(row[_COL["metadata"]], patch.metadata)
    if patch.status is not msgspec.UNSET and patch.status != status:
        if patch.status not in _TRANSITIONS[status]:
            raise LedgerError("ACCOUNT_CLOSED", "A closed account cannot be reopened.", "status")
        if patch.status == "closed":
            _check_empty(row)
        changes["status"] = patch.status
    return changes


def _check_floor(row: tuple, limit: int | None) -> None:
    available = row[_COL["posted"]] - row[_COL["pending_debits"]]
    if limit is not None and available < -limit:
        raise LedgerError(
            "VALIDATION_ERROR",
            f"The available balance ({available}) is already below -{limit}.",
            "overdraft_limit",
        )


def _check_empty(row: tuple) -> None:
    if row[_COL["posted"]] or row[_COL["pending_debits"]] or row[_COL["pending_credits"]]:
        raise LedgerError(
            "ACCOUNT_NOT_EMPTY",
            "Only an account with zero balances and no pending transfers can be closed.",
            "status",
        )


def _merge_metadata(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = {**current, **patch}
    result = {k: v for k, v in merged.items() if v is not None}
    if len(result) > MAX_METADATA_KEYS:
        raise LedgerError(
            "VALIDATION_ERROR",
            f"metadata would hold {len(result)} keys; at most {MAX_METADATA_KEYS} are allowed.",
            "metadata",
        )
    return result
