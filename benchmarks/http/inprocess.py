"""Python CPU per request without an HTTP server: Tally's app called directly.

    python -m benchmarks.http.inprocess [--route get|post|list|entries|balance|transfer]
        [--concurrency 64] [--requests 300] [--repeat 3] [--profile]

Calls `GET /api/accounts/{id}` (or, with `--route post`, `POST
/api/transfers` with an Idempotency-Key, as `make bench` does; with `--route
list`, `GET /api/transfers?limit=20&account_id=`, and with `--route entries`,
`GET /api/accounts/{id}/entries?limit=20`, and with `--route transfer`, `GET
/api/transfers/{id}`, all three after 64,000 transfers made through the
API, about 13 on each account; with `--route balance`, `GET
/api/accounts/{id}/balance`) on Tally's
ASGI app (real PostgreSQL and Redis: embedded unless TALLY_DATABASE_URL /
TALLY_REDIS_URL are set) and `GET` on the bare Starlette baseline of `make
bench`, from `--concurrency` concurrent callers, and prints the process CPU
time per request of each. What granian adds (about the same for both) is not
in these figures, and neither is PostgreSQL's own CPU, so a lever on Tally's
own Python shows here without the noise of a loaded machine. Add `--profile`
for cProfile's top functions of Tally's run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import itertools
import os
import pstats
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import uvloop

from benchmarks.http import stack
from benchmarks.http.apps import bare_starlette
from service.app import create_app
from service.config import Settings

Call = tuple[str, str, list[tuple[bytes, bytes]], bytes]
"""One request: method, path, headers, body (for a GET: the query string)."""


async def _drive(app: Any, make: Callable[[], Call], concurrency: int, each: int,
                 expect: int) -> None:  # fmt: skip
    async def caller() -> None:
        for _ in range(each):
            method, path, headers, body = make()

            query = b""
            if method == "GET":
                query, body = body, b""

            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": query, "root_path": "", "headers": headers,
                "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            }  # fmt: skip
            statuses: list[int] = []

            async def send(message: dict[str, Any], statuses: list[int] = statuses) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(scope, receive, send)
            if statuses != [expect]:
                raise RuntimeError(f"{method} {path}: {statuses}")

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def _measure(app: Any, make: Callable[[], Call], args: argparse.Namespace,
                   expect: int = 200, profile: bool = False) -> float:  # fmt: skip
    """CPU microseconds per request (the best of `--repeat` runs)."""
    await _drive(app, make, args.concurrency, 50, expect)  # warm-up
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        await _drive(app, make, args.concurrency, args.requests, expect)
        spent = time.process_time() - started
        best = min(best, spent / (args.concurrency * args.requests) * 1e6)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await _drive(app, make, args.concurrency, args.requests, expect)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return best


def _gets(
    paths: list[str], headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> Callable[[], Call]:
    """GET of a random one of `paths`."""
    return lambda: ("GET", random.choice(paths), headers, query)


def _lists(accounts: list[str], headers: list[tuple[bytes, bytes]]) -> Callable[[], Call]:
    """A random account's newest transfers, first page (as wrk's list_transfers.lua)."""
    queries = [f"limit=20&account_id={a}".encode() for a in accounts]
    return lambda: ("GET", "/api/transfers", headers, random.choice(queries))


def _posts(accounts: list[str], headers: list[tuple[bytes, bytes]]) -> Callable[[], Call]:
    """Transfers between random accounts, each with its own Idempotency-Key (as wrk's)."""
    prefix, sent = uuid.uuid4().hex[:12], itertools.count()
    headers = [*headers, (b"content-type", b"application/json")]

    def make() -> Call:
        debit, credit = random.sample(accounts, 2)
        body = msgspec.json.encode({
            "debit_account_id": debit, "credit_account_id": credit,
            "amount": random.randint(1, 1000), "currency": "USD",
        })  # fmt: skip
        key = f"{prefix}-{next(sent)}".encode()
        return "POST", "/api/transfers", [*headers, (b"idempotency-key", key)], body

    return make


async def _run(args: argparse.Namespace, database_url: str, redis_url: str) -> None:
    (tenant,) = stack.setup_tenant(database_url, 10_000, rate_limit=10**9, burst=10**9)
    accounts = [f"/api/accounts/{a}" for a in tenant.accounts]
    bare = await _measure(bare_starlette(), _gets(accounts, [(b"host", b"bench")]), args)
    settings = Settings.from_env({
        "TALLY_ENV": "test", "TALLY_DATABASE_URL": database_url, "TALLY_REDIS_URL": redis_url,
        "TALLY_JWT_SECRET": os.urandom(32).hex(),
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    })  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token = app.state.tokens.issue(
            uuid.UUID(tenant.client_id), uuid.UUID(tenant.tenant_id),
            ("ledger:read", "ledger:write"),
        )  # fmt: skip
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
        if args.route == "post":
            route, make, expect = "POST /api/transfers", _posts(tenant.accounts, headers), 201
        elif args.route in ("list", "entries", "transfer"):
            await _drive(app, _posts(tenant.accounts, headers), 64, 1000, 201)
            if args.route == "list":
                route, make, expect = "GET /api/transfers", _lists(tenant.accounts, headers), 200
            elif args.route == "entries":
                make = _gets([f"{a}/entries" for a in accounts], headers, b"limit=20")
                route, expect = "GET .../{id}/entries", 200
            else:
                async with app.state.db.connection() as conn:
                    cur = await conn.execute("SELECT id FROM transfers LIMIT 20000")
                    paths = [f"/api/transfers/{row[0]}" for row in await cur.fetchall()]
                route, make, expect = "GET /api/transfers/{id}", _gets(paths, headers), 200

        elif args.route == "balance":
            make = _gets([f"{a}/balance" for a in accounts], headers)
            route, expect = "GET .../{id}/balance", 200
        else:
            route, make, expect = "GET /api/accounts/{id}", _gets(accounts, headers), 200
        tally = await _measure(app, make, args, expect, args.profile)
    print(f"{args.concurrency} concurrent callers, best of {args.repeat} x "
          f"{args.concurrency * args.requests} requests:")  # fmt: skip
    print(f"  bare Starlette  GET   {bare:6.1f} us CPU per request")
    print(f"  Tally  {route:<22} {tally:6.1f} us CPU per request ({tally / bare:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    routes = ["get", "post", "list", "entries", "balance", "transfer"]
    parser.add_argument("--route", choices=routes, default="get")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="per caller and run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with stack.migrated_database("tally-inprocess") as (url, redis_url):
        uvloop.run(_run(args, url, redis_url))


if __name__ == "__main__":
    main()
