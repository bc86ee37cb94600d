"""Group commit on against off: POST /api/transfers throughput, with pgbench for scale.

Superseded as the main benchmark by `make bench` (`benchmarks/http/`); kept as
the one-lever check for group commit: `python -m benchmarks.transfers_ratio`.
Uses TALLY_DATABASE_URL / TALLY_REDIS_URL when set, else embedded servers.
The load comes from the raw-socket generator in `benchmarks/loadgen.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import httpx

from benchmarks import loadgen
from benchmarks.http import stack
from service import devservers
from service.db.migrate import migrate


def pgbench_tps(admin_url: str, seconds: float, clients: list[int]) -> tuple[float, int]:
    """Best tpcb-like TPS over the client counts tried, and that count."""
    best = (0.0, 0)
    with stack.Pgbench(admin_url).prepared() as pgbench:
        for count in clients:
            tps = pgbench.run("tpcb-like", count, seconds).tps
            print(f"  pgbench tpcb-like -c {count:<4} {tps:9.0f} TPS")
            best = max(best, (tps, count))
    return best


def measure_transfers(
    port: int, client_id: str, secret: str, accounts: list[str], connections: int,
    seconds: float,
) -> loadgen.Result:  # fmt: skip
    token = httpx.post(
        f"http://127.0.0.1:{port}/api/auth/token",
        json={"client_id": client_id, "client_secret": secret},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rnd = random.Random(7)

    def transfer(_: int) -> bytes:
        debit, credit = rnd.sample(accounts, 2)
        body = json.dumps(
            {
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": rnd.randint(1, 10_000),
                "currency": "USD",
            }
        ).encode()
        return loadgen.build_request("POST", "/api/transfers", headers, body)

    return asyncio.run(
        loadgen.run("127.0.0.1", port, transfer, connections=connections, seconds=seconds)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--pgbench-clients", default="16,64")
    args = parser.parse_args()
    try:
        import uvloop  # the server runs on uvloop; so does the load generator

        uvloop.install()
    except ImportError:
        pass

    data_dir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    try:
        with devservers.embedded(
            data_dir, os.environ.get("TALLY_DATABASE_URL"), os.environ.get("TALLY_REDIS_URL")
        ) as (admin_url, redis_url):
            print(f"pgbench (same PostgreSQL, {args.seconds:.0f} s per run):")
            clients = [int(c) for c in args.pgbench_clients.split(",")]
            pg_tps, pg_clients = pgbench_tps(admin_url, args.seconds, clients)
            results = {}
            for label, group_commit in (("group commit", "1"), ("one by one", "0")):
                with stack.fresh_database(admin_url, "tally_bench") as url:
                    migrate(url)
                    (tenant,) = stack.setup_tenant(url, args.accounts)
                    with stack.tally(url, redis_url, args.workers, TALLY_GROUP_COMMIT=group_commit,
                                     TALLY_DB_POOL_MAX="16") as (port, _):  # fmt: skip
                        result = measure_transfers(port, tenant.client_id, tenant.client_secret,
                                                   tenant.accounts, args.connections,
                                                   args.seconds)  # fmt: skip
                results[label] = result
                print(f"POST /api/transfers, {label:<12} ({args.connections} conns): "
                      f"{result.summary()}")  # fmt: skip
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    group, single = results["group commit"], results["one by one"]
    print()
    print(f"pgbench tpcb-like best:          {pg_tps:9.0f} TPS (-c {pg_clients})")
    print(f"transfers/s with group commit:   {group.statuses[201] / group.seconds:9.0f}")
    print(f"transfers/s one by one:          {single.statuses[201] / single.seconds:9.0f}")
    print(f"ratio group commit / pgbench:    {group.statuses[201] / group.seconds / pg_tps:9.2f}"
          "   (SPEC target >= 2.00)")  # fmt: skip
    print(f"ratio one by one / pgbench:      {single.statuses[201] / single.seconds / pg_tps:9.2f}")
    print(f"ratio group commit / one by one: "
          f"{group.statuses[201] / max(1, single.statuses[201]):9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
