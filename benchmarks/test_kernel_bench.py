"""fastpath.kernel: `decide` on a realistic group-commit batch, compiled twin against pure one.

Run with `make bench` (or `pytest benchmarks`); each group's table compares "c" with "py".
The batch: 256 operations over 20 accounts of one tenant - transfers, holds, posts (some
partial), voids and expiries of earlier holds, a few all-or-nothing groups, and the usual
rejections (insufficient funds, a frozen account, an unknown hold). Every round starts
from fresh copies of the states, since `decide` updates them in place.
"""

from __future__ import annotations

import importlib
import random
import uuid
from types import ModuleType
from typing import Any

import pytest

from fastpath import _kernel_py

TRANSFER, PENDING, POST, VOID, EXPIRE = 0, 1, 2, 3, 4
NOW = 1_750_000_000_000_000
N_ACCOUNTS = 20
N_OPS = 256

pytestmark = pytest.mark.benchmark(warmup=True)


def _batch(keys: str) -> tuple[list[tuple[Any, ...]], dict[Any, list[Any]], dict[Any, list[Any]]]:
    """(ops, accounts, pendings); keys "uuid": (tenant_id, id) pairs of uuid.UUID, as the
    server uses, each operation holding its own (equal) key objects as parsed from its
    request; keys "int": small ints, to show the cost of the loop itself."""
    rng = random.Random(20250601)
    tenant = uuid.UUID(int=rng.getrandbits(128))
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(N_ACCOUNTS + 20 + N_OPS)]

    def key(i: int) -> Any:
        # A new key object per use: rows and requests never share them.
        return (uuid.UUID(int=tenant.int), uuid.UUID(int=ids[i].int)) if keys == "uuid" else i

    accounts: dict[Any, list[Any]] = {}
    for i in range(N_ACCOUNTS):
        limit = None if i < 4 else (0 if i < 16 else 50_000)
        status = "frozen" if i == 19 else "active"
        accounts[key(i)] = [rng.randrange(0, 2_000_000), 0, 0, limit, status, "EUR"]

    # Holds made before this batch: 20 of them, some due by now.
    pendings: dict[Any, list[Any]] = {}
    old_holds = []
    for h in range(20):
        debit, credit = rng.sample(range(N_ACCOUNTS - 1), 2)
        amount = rng.randrange(100, 20_000)
        expires = NOW - 1_000 if h % 5 == 0 else NOW + 3_600_000_000
        hold_key = key(N_ACCOUNTS + h)
        pendings[hold_key] = [key(debit), key(credit), amount, "pending", expires]
        accounts[key(debit)][1] += amount
        accounts[key(credit)][2] += amount
        old_holds.append(N_ACCOUNTS + h)

    ops: list[tuple[Any, ...]] = []
    next_key = N_ACCOUNTS + 20
    group = 0
    while len(ops) < N_OPS - 1:
        roll = rng.random()
        if roll < 0.05 and len(ops) + 3 < N_OPS:
            # An all-or-nothing group of three transfers.
            for _ in range(3):
                debit, credit = rng.sample(range(N_ACCOUNTS), 2)
                ops.append((TRANSFER, key(next_key), key(debit), key(credit),
                            rng.randrange(1, 50_000), "EUR", None, group))  # fmt: skip
                next_key += 1
            group += 1
            continue
        if roll < 0.80 or not old_holds:
            debit, credit = rng.sample(range(N_ACCOUNTS), 2)
            kind = TRANSFER if roll < 0.72 else PENDING
            expires = NOW + 3_600_000_000 if kind == PENDING else None
            ops.append((kind, key(next_key), key(debit), key(credit), rng.randrange(1, 50_000),
                        "EUR", expires, -1))  # fmt: skip
        else:
            hold_key = key(old_holds.pop(rng.randrange(len(old_holds))))
            kind = POST if roll < 0.90 else (VOID if roll < 0.96 else EXPIRE)
            amount = rng.choice([None, None, 50]) if kind == POST else None
            ops.append((kind, hold_key, None, None, amount, None, None, -1))
        next_key += 1
    ops.append((POST, key(next_key), None, None, None, None, None, -1))  # no such hold
    return ops, accounts, pendings


@pytest.fixture(scope="module", params=["py", "c"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "py":
        return _kernel_py
    try:
        return importlib.import_module("fastpath._kernel_c")
    except ImportError:
        pytest.skip("fastpath._kernel_c is not built")


@pytest.mark.parametrize("keys", ["uuid", "int"])
def test_decide(benchmark: Any, twin: ModuleType, keys: str) -> None:
    benchmark.group = f"decide: 256 ops, {keys} keys"
    ops, accounts, pendings = _batch(keys)

    def fresh_states() -> tuple[tuple[Any, ...], dict[str, Any]]:
        copies = (
            {k: list(v) for k, v in accounts.items()},
            {k: list(v) for k, v in pendings.items()},
        )
        return (ops, *copies, NOW), {}

    results, effects = benchmark.pedantic(
        twin.decide, setup=fresh_states, rounds=300, warmup_rounds=30, iterations=1
    )
    # The same outcome as the pure twin, and a realistic mix of outcomes.
    args, _ = fresh_states()
    assert (results, effects) == _kernel_py.decide(*args)
    assert len(results) == N_OPS
    assert 0.7 * N_OPS < results.count(None) < N_OPS
    assert {"INSUFFICIENT_FUNDS", "ACCOUNT_NOT_ACTIVE", "TRANSFER_NOT_FOUND"} <= set(results)
    assert {e[1] for e in effects} == {"posted", "pending", "post", "void", "expire"}
