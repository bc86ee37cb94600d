# cython: boundscheck=True
# Bounds checks stay on (setup.py turns them off by default): ops and states come from
# the caller, and a short one must raise IndexError like the pure twin, not read past
# the end of a list. Each check is one comparison; wraparound stays off (indices are
# constants >= 0).
"""Compiled twin of `fastpath._kernel_py`: same public names, same results, less time.

Import `fastpath.kernel`, never this module directly. `_kernel_py.py` is the reference:
tests/fastpath checks that both twins agree on generated batches. Its specification,
repeated here:

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

What this twin does differently: the loop, the rules and the effect tuples are C, and
balances, amounts and limits that are exact ints within the signed 64-bit range (all
of them, in practice) are checked and updated as C integers, every overflow being
tested before the arithmetic, so nothing ever wraps. Any other number (a bool, an int
beyond 64 bits, a negative amount or limit) sends that one operation down an object
path that repeats the pure twin's arithmetic, so the results are the same for every
input. `accounts` and `pendings` must be dicts and the states lists, as documented
above (they are used through the dict and list C API).
"""

from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t


cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    # Never fails for an exact int: out of range only sets *overflow.
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow)


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

# Operation kinds, as decided: any kind that is not TRANSFER, PENDING, POST or EXPIRE
# releases the hold like VOID (as in the pure twin, which tests kind == EXPIRE and
# kind != POST).
cdef enum:
    _TRANSFER = 0
    _PENDING = 1
    _POST = 2
    _VOID = 3
    _EXPIRE = 4

# Account state slots.
cdef enum:
    _POSTED = 0
    _PD = 1
    _PC = 2
    _LIMIT = 3
    _STATUS = 4
    _CURRENCY = 5

# Pending state slots.
cdef enum:
    _DEBIT = 0
    _CREDIT = 1
    _AMOUNT = 2
    _PSTATUS = 3
    _EXPIRES = 4

# The limits as Python ints, for the object path.
cdef object _MAX = INT64_MAX
cdef object _MIN = INT64_MIN

cdef str GROUP_FAILED = "BATCH_ABORTED"


def decide(ops, dict accounts not None, dict pendings not None, now_us):
    """Apply `ops` in order to `accounts` and `pendings`; see the module docstring."""
    cdef Py_ssize_t n = len(ops)
    cdef list results = [None] * n
    cdef list effects = []
    cdef list undo = None
    cdef object group = -1
    cdef Py_ssize_t group_start = 0
    cdef Py_ssize_t group_effects = 0
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t end, j
    cdef int kind
    cdef int64_t now = 0
    cdef bint now_fast = _as_i64(now_us, &now)
    while i < n:
        op = ops[i]
        op_group = op[7]
        # An int is equal to itself: skip the comparison for the same (cached small) int.
        if not (op_group is group and PyLong_CheckExact(group)) and op_group != group:
            group = op_group
            group_start = i
            group_effects = len(effects)
            undo = [] if group >= 0 else None
        kind = _kind(op[0])
        if kind == _TRANSFER or kind == _PENDING:
            code = _new_transfer(i, kind, op, accounts, pendings, effects, undo)
        else:
            code = _settle(i, kind, op, accounts, pendings, now_us, now_fast, now, effects, undo)
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


cdef int _kind(object kind) except -1:
    cdef int overflow = 0
    cdef long long value
    if PyLong_CheckExact(kind):
        value = PyLong_AsLongLongAndOverflow(kind, &overflow)
        if overflow == 0 and _TRANSFER <= value <= _EXPIRE:
            return <int>value
        return _VOID
    # Anything else compares the way the pure twin compares it.
    if kind == TRANSFER:
        return _TRANSFER
    if kind == PENDING:
        return _PENDING
    if kind == POST:
        return _POST
    if kind == EXPIRE:
        return _EXPIRE
    return _VOID


cdef inline bint _as_i64(object value, int64_t *out) noexcept:
    """Store `value` in *out when it is an exact int within int64; else return False."""
    cdef int overflow = 0
    if not PyLong_CheckExact(value):
        return False
    out[0] = PyLong_AsLongLongAndOverflow(value, &overflow)
    return overflow == 0


cdef inline bint _breaches_floor(
    int64_t posted, int64_t pending_debits, int64_t amount, int64_t limit
) noexcept:
    """posted - pending_debits - amount < -limit, exactly, for amount >= 1 and limit >= 0."""
    if pending_debits >= 0:
        if posted < INT64_MIN + pending_debits:
            # posted - pending_debits < INT64_MIN, so the rest is below -INT64_MAX <= -limit.
            return True
    elif posted > INT64_MAX + pending_debits:
        # posted - pending_debits > INT64_MAX, so the rest is above 0 >= -limit.
        return False
    cdef int64_t available = posted - pending_debits
    if available < INT64_MIN + amount:
        return True
    return available - amount < -limit


cdef int _remember(list undo, dict table, object key, list state) except -1:
    # The pure twin looks `key` up again; `state` is what that finds (the caller just
    # found it under an equal key and nothing has replaced it since).
    undo.append((table, key, list(state) if state is not None else None))
    return 0


cdef int _rollback(list undo) except -1:
    cdef Py_ssize_t k
    cdef dict table
    for k in range(len(undo) - 1, -1, -1):
        entry = undo[k]
        table = entry[0]
        key = entry[1]
        old = entry[2]
        if old is None:
            table.pop(key, None)
        else:
            table[key][:] = old
    return 0


cdef inline tuple _effect(
    Py_ssize_t index,
    str kind,
    object transfer_key,
    object debit_key,
    object credit_key,
    object amount,
    object posted_amount,
    list debit,
    list credit,
):
    return (
        index, kind, transfer_key, debit_key, credit_key, amount, posted_amount,
        debit[_POSTED], debit[_PD], debit[_PC], credit[_POSTED], credit[_PD], credit[_PC],
    )  # fmt: skip


cdef object _new_transfer(
    Py_ssize_t index,
    int kind,
    object op,
    dict accounts,
    dict pendings,
    list effects,
    list undo,
):
    transfer_key = op[1]
    debit_key = op[2]
    credit_key = op[3]
    amount = op[4]
    currency = op[5]
    expires_at = op[6]
    cdef list debit = accounts.get(debit_key)
    cdef list credit = accounts.get(credit_key)
    # The pure twin compares the keys first. Equal keys find the same entry, so two
    # distinct states already prove the keys distinct, and the comparison (Python code
    # for UUID keys) is only needed otherwise; the outcome is the same.
    if (debit is None or credit is None or debit is credit) and debit_key == credit_key:
        return "SAME_ACCOUNT"
    if debit is None or credit is None:
        return "ACCOUNT_NOT_FOUND"
    if debit[_CURRENCY] != currency or credit[_CURRENCY] != currency:
        return "CURRENCY_MISMATCH"
    if debit[_STATUS] != "active" or credit[_STATUS] == "closed":
        return "ACCOUNT_NOT_ACTIVE"

    limit = debit[_LIMIT]
    cdef int64_t amt = 0, posted = 0, pending_debits = 0, credit_balance = 0, floor = 0
    # The credit balance that this kind raises: posted, or pending_credits for a hold.
    cdef bint fast = (
        debit is not credit
        and _as_i64(amount, &amt) and amt > 0
        and _as_i64(debit[_POSTED], &posted)
        and _as_i64(debit[_PD], &pending_debits)
        and _as_i64(credit[_POSTED if kind == _TRANSFER else _PC], &credit_balance)
        and (limit is None or (_as_i64(limit, &floor) and floor >= 0))
    )

    if fast:
        if kind == _TRANSFER:
            if posted < INT64_MIN + amt or credit_balance > INT64_MAX - amt:
                return "BALANCE_OVERFLOW"
        elif pending_debits > INT64_MAX - amt or credit_balance > INT64_MAX - amt:
            return "BALANCE_OVERFLOW"
        if limit is not None and _breaches_floor(posted, pending_debits, amt, floor):
            return "INSUFFICIENT_FUNDS"
    else:
        if kind == _TRANSFER:
            if debit[_POSTED] - amount < _MIN or credit[_POSTED] + amount > _MAX:
                return "BALANCE_OVERFLOW"
        elif debit[_PD] + amount > _MAX or credit[_PC] + amount > _MAX:
            return "BALANCE_OVERFLOW"
        if limit is not None and debit[_POSTED] - debit[_PD] - amount < -limit:
            return "INSUFFICIENT_FUNDS"

    if undo is not None:
        _remember(undo, accounts, debit_key, debit)
        _remember(undo, accounts, credit_key, credit)
    if kind == _TRANSFER:
        if fast:
            debit[_POSTED] = posted - amt
            credit[_POSTED] = credit_balance + amt
        else:
            debit[_POSTED] -= amount
            credit[_POSTED] += amount
        effects.append(
            _effect(index, "posted", transfer_key, debit_key, credit_key, amount, amount,
                    debit, credit)
        )  # fmt: skip
        return None
    if fast:
        debit[_PD] = pending_debits + amt
        credit[_PC] = credit_balance + amt
    else:
        debit[_PD] += amount
        credit[_PC] += amount
    if undo is not None:
        _remember(undo, pendings, transfer_key, pendings.get(transfer_key))
    pendings[transfer_key] = [debit_key, credit_key, amount, "pending", expires_at]
    effects.append(
        _effect(index, "pending", transfer_key, debit_key, credit_key, amount, None, debit, credit)
    )
    return None


cdef object _settle(
    Py_ssize_t index,
    int kind,
    object op,
    dict accounts,
    dict pendings,
    object now_us,
    bint now_fast,
    int64_t now,
    list effects,
    list undo,
):
    transfer_key = op[1]
    cdef list hold = pendings.get(transfer_key)
    if hold is None:
        return "TRANSFER_NOT_FOUND"
    if hold[_PSTATUS] != "pending":
        return "TRANSFER_NOT_PENDING"
    expires_at = hold[_EXPIRES]
    cdef int64_t expires = 0
    cdef bint due
    if expires_at is None:
        due = False
    elif now_fast and _as_i64(expires_at, &expires):
        due = expires <= now
    else:
        due = expires_at <= now_us
    if kind == _EXPIRE and not due:
        return "TRANSFER_NOT_EXPIRED"
    debit_key = hold[_DEBIT]
    credit_key = hold[_CREDIT]
    amount = hold[_AMOUNT]
    cdef list debit = accounts[debit_key]
    cdef list credit = accounts[credit_key]

    cdef bint posting = not due and kind == _POST
    posted_amount = None
    cdef str status, effect_kind
    if due:
        status, effect_kind = "expired", "expire"
    elif not posting:
        status, effect_kind = "voided", "void"
    else:
        posted_amount = amount if op[4] is None else op[4]
        status, effect_kind = "posted", "post"

    # Every new balance must fit in int64 for the C path; the pending counters only
    # fall short of that when the states are inconsistent, which the object path
    # handles like the pure twin.
    cdef int64_t amt = 0, debit_pending = 0, credit_pending = 0
    cdef int64_t part = 0, debit_posted = 0, credit_posted = 0
    cdef bint fast = (
        debit is not credit
        # Short states raise IndexError where the pure twin would, on the object path.
        and len(debit) > _PC and len(credit) > _PC
        and _as_i64(amount, &amt) and amt > 0
        and _as_i64(debit[_PD], &debit_pending) and debit_pending >= INT64_MIN + amt
        and _as_i64(credit[_PC], &credit_pending) and credit_pending >= INT64_MIN + amt
    )
    if posting:
        fast = (
            fast
            and _as_i64(posted_amount, &part) and part > 0
            and _as_i64(debit[_POSTED], &debit_posted)
            and _as_i64(credit[_POSTED], &credit_posted)
        )
        if fast:
            if part > amt:
                return "AMOUNT_EXCEEDS_PENDING"
            if debit_posted < INT64_MIN + part or credit_posted > INT64_MAX - part:
                return "BALANCE_OVERFLOW"
        else:
            if posted_amount > amount:
                return "AMOUNT_EXCEEDS_PENDING"
            if (
                debit[_POSTED] - posted_amount < _MIN
                or credit[_POSTED] + posted_amount > _MAX
            ):
                return "BALANCE_OVERFLOW"

    if undo is not None:
        _remember(undo, accounts, debit_key, debit)
        _remember(undo, accounts, credit_key, credit)
        _remember(undo, pendings, transfer_key, hold)
    if fast:
        debit[_PD] = debit_pending - amt
        credit[_PC] = credit_pending - amt
        if posting:
            debit[_POSTED] = debit_posted - part
            credit[_POSTED] = credit_posted + part
    else:
        debit[_PD] -= amount
        credit[_PC] -= amount
        if posting:
            debit[_POSTED] -= posted_amount
            credit[_POSTED] += posted_amount
    hold[_PSTATUS] = status
    effects.append(
        _effect(index, effect_kind, transfer_key, debit_key, credit_key, amount, posted_amount,
                debit, credit)
    )  # fmt: skip
    if due and kind != _EXPIRE:
        return "TRANSFER_NOT_PENDING"
    return None
