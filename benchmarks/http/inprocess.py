"""Python CPU per request without an HTTP server: Tally's app called directly.

    python -m benchmarks.http.inprocess [--concurrency 64] [--requests 300] [--repeat 3]

Calls `GET /api/accounts/{id}` on Tally's ASGI app (real PostgreSQL and
Redis: embedded unless TALLY_DATABASE_URL / TALLY_REDIS_URL are set) and on
the bare Starlette baseline of `make bench`, from `--concurrency` concurrent
callers, and prints the process CPU time per request of each. What granian
adds (about the same for both) is not in these figures, so a lever on Tally's
own Python shows here without the noise of a loaded machine. Add
`--profile` for cProfile's top functions of Tally's run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import pstats
import random
import time
import uuid
from typing import Any

import uvloop

from benchmarks.http import stack
from benchmarks.http.apps import bare_starlette
from service.app import create_app
from service.config import Settings


async def _drive(app: Any, paths: list[str], headers: list[tuple[bytes, bytes]],
                 concurrency: int, each: int) -> None:  # fmt: skip
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def caller() -> None:
        for _ in range(each):
            path = random.choice(paths)
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "headers": headers,
                "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            }  # fmt: skip
            statuses: list[int] = []

            async def send(message: dict[str, Any], statuses: list[int] = statuses) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(scope, receive, send)
            if statuses != [200]:
                raise RuntimeError(f"{path}: {statuses}")

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def _measure(app: Any, paths: list[str], headers: list[tuple[bytes, bytes]],
                   args: argparse.Namespace, profile: bool = False) -> float:  # fmt: skip
    """CPU microseconds per request (the best of `--repeat` runs)."""
    await _drive(app, paths, headers, args.concurrency, 50)  # warm-up
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        await _drive(app, paths, headers, args.concurrency, args.requests)
        spent = time.process_time() - started
        best = min(best, spent / (args.concurrency * args.requests) * 1e6)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await _drive(app, paths, headers, args.concurrency, args.requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return best


async def _run(args: argparse.Namespace, database_url: str, redis_url: str) -> None:
    (tenant,) = stack.setup_tenant(database_url, 10_000, rate_limit=10**9, burst=10**9)
    paths = [f"/api/accounts/{a}" for a in tenant.accounts]
    bare = await _measure(bare_starlette(), paths, [(b"host", b"bench")], args)
    settings = Settings.from_env({
        "TALLY_ENV": "test", "TALLY_DATABASE_URL": database_url, "TALLY_REDIS_URL": redis_url,
        "TALLY_JWT_SECRET": os.urandom(32).hex(),
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    })  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token = app.state.tokens.issue(
            uuid.UUID(tenant.client_id), uuid.UUID(tenant.tenant_id), ("ledger:read",)
        )
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
        tally = await _measure(app, paths, headers, args, args.profile)
    print(f"GET /api/accounts/{{id}}, {args.concurrency} concurrent callers, "
          f"best of {args.repeat} x {args.concurrency * args.requests} requests:")  # fmt: skip
    print(f"  bare Starlette  {bare:6.1f} us CPU per request")
    print(f"  Tally           {tally:6.1f} us CPU per request ({tally / bare:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="per caller and run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with stack.migrated_database("tally-inprocess") as (url, redis_url):
        uvloop.run(_run(args, url, redis_url))


if __name__ == "__main__":
    main()
