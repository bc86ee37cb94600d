"""The per-request helpers on the hot path: token check, rate limit, decode + validate, encode.

Run with `make bench-micro` (or `pytest benchmarks`). Nothing here touches the
network except the Redis rate-limit round trip, which runs when
TALLY_REDIS_URL is set (or a Redis answers on 127.0.0.1:6379) and is skipped
otherwise.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import uuid_utils
import uvloop

from service import watchdog
from service.api.decoding import decode_json
from service.api.routing import json_response
from service.auth.tokens import TokenService
from service.config import Settings
from service.ledger.transfers import transfer_dict
from service.ratelimit import LEASE_SHARE, RateLimiter, _LocalBuckets
from service.schemas import AccountCreate, TransferBatch, TransferCreate

pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=2_000)

CLIENT_ID = uuid.UUID("0190f5a2-0000-7000-8000-000000000001")
TENANT_ID = uuid.UUID("0190f5a2-0000-7000-8000-000000000002")
SCOPES = ("ledger:read", "ledger:write")

TRANSFER = msgspec.json.encode(
    {
        "debit_account_id": str(uuid.uuid4()),
        "credit_account_id": str(uuid.uuid4()),
        "amount": 125_00,
        "currency": "USD",
        "description": "Invoice INV-2025-0042",
        "metadata": {"order_id": "ORD-2025-118734", "channel": "web"},
    }
)
BATCH = msgspec.json.encode(
    {
        "atomic": True,
        "transfers": [
            {
                "debit_account_id": str(uuid.uuid4()),
                "credit_account_id": str(uuid.uuid4()),
                "amount": i + 1,
                "currency": "USD",
            }
            for i in range(100)
        ],
    }
)
ACCOUNT = msgspec.json.encode(
    {"name": "Operating account", "currency": "EUR", "overdraft_limit": 50_000}
)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TRANSFER_ROW = (
    uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 125_00, "USD", "posted", None, None,
    "Invoice INV-2025-0042", {"order_id": "ORD-2025-118734"}, NOW, NOW,
)  # fmt: skip


def _tokens(algorithm: str = "HS256") -> TokenService:
    settings = Settings(env="test", jwt_secret=secrets.token_urlsafe(48), jwt_algorithm=algorithm)
    return TokenService(settings)


def test_token_verify_cached(benchmark: Any) -> None:
    """A client's repeated token: the verified-token cache answers."""
    benchmark.group = "token"
    tokens = _tokens()
    token = tokens.issue(CLIENT_ID, TENANT_ID, SCOPES)
    assert benchmark(tokens.verify, token).tenant_id == TENANT_ID


def test_token_verify_uncached(benchmark: Any) -> None:
    """A token seen for the first time: header, HS256 signature and claims."""
    benchmark.group = "token"
    tokens = _tokens()
    token = tokens.issue(CLIENT_ID, TENANT_ID, SCOPES)
    assert benchmark(tokens._verify, token)[0].tenant_id == TENANT_ID


def test_rate_limit_local(benchmark: Any) -> None:
    """The in-process bucket (used while Redis is unreachable)."""
    benchmark.group = "ratelimit"
    buckets = _LocalBuckets()
    assert benchmark(buckets.take, "client:bench", 1e9, 10**9)[0]


def _redis_url() -> str | None:
    url = os.environ.get("TALLY_REDIS_URL")
    if url:
        return url
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.2).close()
    except OSError:
        return None
    return "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="module")
def limiter() -> Iterator[tuple[RateLimiter, asyncio.AbstractEventLoop]]:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis (set TALLY_REDIS_URL)")
    import redis.asyncio as aioredis

    loop = asyncio.new_event_loop()
    client = aioredis.from_url(url)
    yield RateLimiter(client), loop
    loop.run_until_complete(client.aclose())
    loop.close()


def test_rate_limit_redis(benchmark: Any, limiter: tuple[RateLimiter, Any]) -> None:
    """One token bucket check: one EVALSHA round trip to Redis on loopback.

    A burst under LEASE_SHARE is never leased, so every take is a round trip.
    """
    benchmark.group = "ratelimit"
    rl, loop = limiter
    key = f"bench:{secrets.token_hex(4)}"
    decision = benchmark(lambda: loop.run_until_complete(rl.take(key, 1e9, LEASE_SHARE - 1)))
    assert decision.allowed


def test_rate_limit_leased(benchmark: Any, limiter: tuple[RateLimiter, Any]) -> None:
    """A busy bucket: most takes come from the worker's lease, about one round trip per lease."""
    benchmark.group = "ratelimit"
    rl, loop = limiter
    key = f"bench:{secrets.token_hex(4)}"
    trips = rl.takes.round_trips
    decision = benchmark(lambda: loop.run_until_complete(rl.take(key, 1e9, 10**9)))
    assert decision.allowed
    assert rl.takes.round_trips - trips < benchmark.stats.stats.rounds


@pytest.mark.parametrize(
    ("kind", "body"),
    [(TransferCreate, TRANSFER), (AccountCreate, ACCOUNT), (TransferBatch, BATCH)],
    ids=["transfer", "account", "batch100"],
)
def test_decode_validate(benchmark: Any, kind: type, body: bytes) -> None:
    """A request body: typed msgspec decode, schema rules, control-character screen."""
    benchmark.group = "decode"
    assert isinstance(benchmark(decode_json, body, kind), kind)


def test_encode_transfer(benchmark: Any) -> None:
    """A transfer row to its JSON response (dict, msgspec encode, Starlette Response)."""
    benchmark.group = "encode"

    def encode() -> Any:
        return json_response({"data": transfer_dict(TRANSFER_ROW)}, 201)

    assert benchmark(encode).status_code == 201


@pytest.mark.parametrize(
    "make_id",
    [lambda: uuid.uuid4().hex, lambda: uuid_utils.uuid4().hex],
    ids=["stdlib_uuid4", "uuid_utils_uuid4"],
)
def test_request_id(benchmark: Any, make_id: Any) -> None:
    """A request id for a request that brings none (the Envelope uses uuid_utils:
    the standard library's uuid4 makes a system call for its random bits)."""
    benchmark.group = "request id"
    assert len(benchmark(make_id)) == 32


_READS = 1_000


async def _ready_body() -> dict[str, Any]:
    return {"type": "http.request", "body": TRANSFER, "more_body": False}


async def _plain_reads() -> None:
    for _ in range(_READS):
        await _ready_body()


async def _timeout_reads() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(_READS):
        async with asyncio.timeout_at(loop.time() + 30):
            await _ready_body()


async def _watchdog_reads() -> None:
    for _ in range(_READS):
        await watchdog.wait_until(time.monotonic() + 30, _ready_body())


@pytest.mark.parametrize(
    "reads",
    [_plain_reads, _timeout_reads, _watchdog_reads],
    ids=["no_deadline", "asyncio_timeout", "watchdog"],
)
def test_body_read_deadline(benchmark: Any, reads: Any) -> None:
    """1,000 reads of a body that is already there, under uvloop: bare, with
    asyncio.timeout's timer each, and with the Envelope's deadline
    (service.watchdog: a dict entry each, one sweeper per loop)."""
    benchmark.group = "body deadline (1,000 reads)"
    loop = uvloop.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(reads()))
    finally:
        loop.close()
