"""fastpath.codec: the compiled twin against the pure one, one benchmark group per function.

Run with `make bench` (or `pytest benchmarks`); each group's table compares "c" with "py".
"""

from __future__ import annotations

import importlib
import json
import uuid
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest

from fastpath import _codec_py

ACCOUNT_ID = uuid.UUID("0190f5a2-7c3e-7d41-9a6b-3c2d1e0f4a5b")

ACCOUNT_ROW = (
    ACCOUNT_ID,
    "Operating account",
    "EUR",
    "open",
    50_000_00,
    1_254_300_17,
    12_500_00,
    3_400_00,
    {"name": "Acme Trading GmbH", "email": "finance@acme.example", "country": "DE"},
    {"team": "payments", "cost_centre": "4200", "region": "eu-central"},
    42,
    datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC),
    datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC),
)

# The shape of a POST /transfers body after msgspec.to_builtins, all clean (the usual case).
TRANSFER_BODY: dict[str, Any] = {
    "debit_account_id": "0190f5a2-7c3e-7d41-9a6b-3c2d1e0f4a5b",
    "credit_account_id": "0190f5a3-1b2c-7e8f-8a9b-0c1d2e3f4a5b",
    "amount": 125_00,
    "currency": "EUR",
    "description": "Invoice INV-2025-0042 settlement for Café Müller, Zürich",
    "reference": "pay_7f3c2a9e41d84b0c",
    "pending": False,
    "metadata": {
        "order_id": "ORD-2025-118734",
        "customer_id": "cus_9Hq2LkXw01",
        "invoice": "INV-2025-0042",
        "channel": "web",
        "campaign": "spring-sale",
        "ip_country": "CH",
        "merchant": "Café Müller",
        "batch": "2025-06-01T12:00:00Z",
        "note": "Split payment 2 of 3",
        "source": "checkout-service/v2.14.1",
    },
}

TRANSFER_JSON = json.dumps(TRANSFER_BODY, ensure_ascii=False).encode()

CURSOR = _codec_py.encode_cursor(ACCOUNT_ID)

# Without warm-up, pytest-benchmark calibrates on the first (cold) call, often settles on one
# call per round, and then mostly measures its timer: sub-microsecond ratios came out ~2x off.
pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=10_000)


@pytest.fixture(scope="module", params=["py", "c"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "py":
        return _codec_py
    try:
        return importlib.import_module("fastpath._codec_c")
    except ImportError:
        pytest.skip("fastpath._codec_c is not built")


def test_account_to_dict(benchmark: Any, twin: ModuleType) -> None:
    benchmark.group = "account_to_dict"
    result = benchmark(twin.account_to_dict, ACCOUNT_ROW, True)
    assert result["balance"]["available"] == 1_241_800_17


def test_control_char_fields(benchmark: Any, twin: ModuleType) -> None:
    benchmark.group = "control_char_fields"
    assert benchmark(twin.control_char_fields, TRANSFER_BODY) == []


def test_decode_cursor(benchmark: Any, twin: ModuleType) -> None:
    benchmark.group = "decode_cursor"
    assert benchmark(twin.decode_cursor, CURSOR) == ACCOUNT_ID


def test_repeated_key(benchmark: Any, twin: ModuleType) -> None:
    """The scan every JSON body gets after its decode (a POST /transfers body
    with ten metadata keys, none repeated: the whole body is read)."""
    benchmark.group = "repeated_key"
    assert benchmark(twin.repeated_key, TRANSFER_JSON) is None
