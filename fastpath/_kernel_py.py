"""The transfer decision loop (pure-Python twin of `_kernel_c`).

`decide` applies a batch of ledger operations, in arrival order, to account
and pending-transfer states that the caller has locked in the database. It
decides each operation against the balances left by the ones before it,
mutates the states in place, and returns what to write. It does no I/O.

States (mutable lists, keyed by any hashable key, e.g. (tenant_id, id)):

- account: [posted, pending_debits, pending_credits, overdraft_limit | None,
  status, currency]. available = posted - pending_debits; with an
  overdraft_limit, available may not go below -overdraft_limit.
- pending transfer: [debit_key, credit_key, amount, status, expires_at_us | None],
  status one of "pending", "posted", "voided", "expired".

An operation is a tuple (kind, transfer_key, debit_key, credit_key, amount,
currency, expires_at_us, group):

- TRANSFER / PENDING: a new transfer (posted at once, or a hold). `amount` > 0.
  A new PENDING is added to `pendings` under `transfer_key`.
- POST: post pending `transfer_key`, `amount` of it (None: all of it); the rest
  is released. VOID: release it. EXPIRE: release it as expired, if it is due.
  debit_key, credit_key and currency are ignored (None).
- group: -1 for a lone operation; operations sharing a group >= 0 are
  contiguous and all-or-nothing.

Returns (results, effects). results[i] is None when operation i was applied,
else its error code. Each effect is a flat tuple (op_index, kind, transfer_key,
debit_key, credit_key, amount, posted_amount, debit_posted, debit_pending_debits,
debit_pending_credits, credit_posted, credit_pending_debits,
credit_pending_credits) with both accounts' balances after it; kind is one of
"posted", "pending", "post", "void", "expire". A POST or VOID that finds its
hold past expires_at first emits an "expire" effect, then fails with
TRANSFER_NOT_PENDING, so a hold is released exactly once.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXPIRE",
    "PENDING",
    "POST",
    "TRANSFER",
    "VOID",
    "decide",
]

TRANSFER = 0
PENDING = 1
POST = 2
VOID = 3
EXPIRE = 4

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# Account state slots.
_POSTED, _PD, _PC, _LIMIT, _STATUS, _CURRENCY = range(6)
# Pending state slots.
_DEBIT, _CREDIT, _AMOUNT, _PSTATUS, _EXPIRES = range(5)

GROUP_FAILED = "BATCH_ABORTED"


def decide(
    ops: list[tuple[Any, ...]],
    accounts: dict[Any, list[Any]],
    pendings: dict[Any, list[Any]],
    now_us: int,
) -> tuple[list[str | None], list[tuple[Any, ...]]]:
    """Apply `ops` in order to `accounts` and `pendings`; see the module docstring."""
    results: list[str | None] = [None] * len(ops)
    effects: list[tuple[Any, ...]] = []
    undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]] | None = None
    group = -1
    group_start = 0
    group_effects = 0
    i = 0
    n = len(ops)
    while i < n:
        op = ops[i]
        op_group = op[7]
        if op_group != group:
            group = op_group
            group_start = i
            group_effects = len(effects)
            undo = [] if group >= 0 else None
        code = _apply(i, op, accounts, pendings, now_us, effects, undo)
        if code is not None and undo is not None:
            _rollback(undo)
            del effects[group_effects:]
            end = i + 1
            while end < n and ops[end][7] == group:
                end += 1
            for j in range(group_start, end):
                results[j] = GROUP_FAILED
            results[i] = code
            i = end
            group = -1
            undo = None
            continue
        results[i] = code
        i += 1
    return results, effects


def _remember(
    undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]] | None,
    table: dict[Any, list[Any]],
    key: Any,
) -> None:
    if undo is not None:
        state = table.get(key)
        undo.append((table, key, list(state) if state is not None else None))


def _rollback(undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]]) -> None:
    for table, key, old in reversed(undo):
        if old is None:
            table.pop(key, None)
        else:
            table[key][:] = old


def _effect(
    index: int,
    kind: str,
    transfer_key: Any,
    debit_key: Any,
    credit_key: Any,
    amount: int,
    posted_amount: int | None,
    debit: list[Any],
    credit: list[Any],
) -> tuple[Any, ...]:
    return (
        index, kind, transfer_key, debit_key, credit_key, amount, posted_amount,
        debit[_POSTED], debit[_PD], debit[_PC], credit[_POSTED], credit[_PD], credit[_PC],
    )  # fmt: skip


def _apply(
    index: int,
    op: tuple[Any, ...],
    accounts: dict[Any, list[Any]],
    pendings: dict[Any, list[Any]],
    now_us: int,
    effects: list[tuple[Any, ...]],
    undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]] | None,
) -> str | None:
    kind = op[0]
    if kind in (TRANSFER, PENDING):
        return _new_transfer(index, op, accounts, pendings, effects, undo)
    return _settle(index, op, accounts, pendings, now_us, effects, undo)


def _new_transfer(
    index: int,
    op: tuple[Any, ...],
    accounts: dict[Any, list[Any]],
    pendings: dict[Any, list[Any]],
    effects: list[tuple[Any, ...]],
    undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]] | None,
) -> str | None:
    kind, transfer_key, debit_key, credit_key, amount, currency, expires_at = op[:7]
    if debit_key == credit_key:
        return "SAME_ACCOUNT"
    debit = accounts.get(debit_key)
    credit = accounts.get(credit_key)
    if debit is None or credit is None:
        return "ACCOUNT_NOT_FOUND"
    if debit[_CURRENCY] != currency or credit[_CURRENCY] != currency:
        return "CURRENCY_MISMATCH"
    if debit[_STATUS] != "active" or credit[_STATUS] == "closed":
        return "ACCOUNT_NOT_ACTIVE"
    if kind == TRANSFER:
        if debit[_POSTED] - amount < INT64_MIN or credit[_POSTED] + amount > INT64_MAX:
            return "BALANCE_OVERFLOW"
    elif debit[_PD] + amount > INT64_MAX or credit[_PC] + amount > INT64_MAX:
        return "BALANCE_OVERFLOW"
    limit = debit[_LIMIT]
    if limit is not None and debit[_POSTED] - debit[_PD] - amount < -limit:
        return "INSUFFICIENT_FUNDS"
    _remember(undo, accounts, debit_key)
    _remember(undo, accounts, credit_key)
    if kind == TRANSFER:
        debit[_POSTED] -= amount
        credit[_POSTED] += amount
        effects.append(
            _effect(index, "posted", transfer_key, debit_key, credit_key, amount, amount,
                    debit, credit)
        )  # fmt: skip
        return None
    debit[_PD] += amount
    credit[_PC] += amount
    _remember(undo, pendings, transfer_key)
    pendings[transfer_key] = [debit_key, credit_key, amount, "pending", expires_at]
    effects.append(
        _effect(index, "pending", transfer_key, debit_key, credit_key, amount, None, debit, credit)
    )
    return None


def _settle(
    index: int,
    op: tuple[Any, ...],
    accounts: dict[Any, list[Any]],
    pendings: dict[Any, list[Any]],
    now_us: int,
    effects: list[tuple[Any, ...]],
    undo: list[tuple[dict[Any, list[Any]], Any, list[Any] | None]] | None,
) -> str | None:
    kind, transfer_key = op[0], op[1]
    hold = pendings.get(transfer_key)
    if hold is None:
        return "TRANSFER_NOT_FOUND"
    if hold[_PSTATUS] != "pending":
        return "TRANSFER_NOT_PENDING"
    expires_at = hold[_EXPIRES]
    due = expires_at is not None and expires_at <= now_us
    if kind == EXPIRE and not due:
        return "TRANSFER_NOT_EXPIRED"
    debit_key, credit_key, amount = hold[_DEBIT], hold[_CREDIT], hold[_AMOUNT]
    debit = accounts[debit_key]
    credit = accounts[credit_key]
    posted_amount = None
    if due or kind != POST:
        status, effect_kind = ("expired", "expire") if due else ("voided", "void")
    else:
        posted_amount = amount if op[4] is None else op[4]
        if posted_amount > amount:
            return "AMOUNT_EXCEEDS_PENDING"
        if (
            debit[_POSTED] - posted_amount < INT64_MIN
            or credit[_POSTED] + posted_amount > INT64_MAX
        ):
            return "BALANCE_OVERFLOW"
        status, effect_kind = "posted", "post"
    _remember(undo, accounts, debit_key)
    _remember(undo, accounts, credit_key)
    _remember(undo, pendings, transfer_key)
    debit[_PD] -= amount
    credit[_PC] -= amount
    if posted_amount is not None:
        debit[_POSTED] -= posted_amount
        credit[_POSTED] += posted_amount
    hold[_PSTATUS] = status
    effects.append(
        _effect(index, effect_kind, transfer_key, debit_key, credit_key, amount, posted_amount,
                debit, credit)
    )  # fmt: skip
    if due and kind != EXPIRE:
        return "TRANSFER_NOT_PENDING"
    return None
