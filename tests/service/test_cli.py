"""The `tally` command, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest


@pytest.fixture
def tally(database_url, repo_root, settings):
    import base64

    env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_ENV": "test",
        # The session's keys: a rotated data key must open with the app's master key.
        "TALLY_JWT_SECRET": settings.jwt_secret,
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(settings.encryption_key).decode(),
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


def test_migrate_is_idempotent(tally):
    assert "none pending" in tally("migrate").stdout


def test_create_tenant_and_client_json(tally, database_url):
    tenant = json.loads(tally("tenants", "create", "acme", "--json").stdout)
    proc = tally(
        "clients",
        "create",
        "--tenant",
        tenant["tenant_id"],
        "--scopes",
        "ledger:read ledger:write",
        "--json",
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout
    record = json.loads(lines[0])
    assert set(record) == {"tenant_id", "client_id", "client_secret", "scopes"}
    assert record["tenant_id"] == tenant["tenant_id"]
    assert record["scopes"] == "ledger:read ledger:write"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT secret_hash::text, scopes FROM api_clients WHERE id = %s",
            (record["client_id"],),
        ).fetchone()
    assert row is not None
    assert record["client_secret"] not in row[0]
    assert row[1] == ["ledger:read", "ledger:write"]


def test_client_by_tenant_name_and_list_hides_secret(tally):
    tally("tenants", "create", "named-tenant")
    record = json.loads(tally("clients", "create", "--tenant", "named-tenant", "--json").stdout)
    listing = tally("clients", "list", "--tenant", "named-tenant").stdout
    assert record["client_id"] in listing
    assert record["client_secret"] not in listing
    assert "active" in listing


def test_revoke(tally):
    tally("tenants", "create", "revoker")
    record = json.loads(tally("clients", "create", "--tenant", "revoker", "--json").stdout)
    assert "revoked" in tally("clients", "revoke", record["client_id"]).stdout
    assert "revoked" in tally("clients", "list", "--tenant", "revoker").stdout
    again = tally("clients", "revoke", record["client_id"], ok=False)
    assert again.returncode != 0 and "no active client" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("clients", "create", "--tenant", "no-such-tenant"), "no tenant"),
        (("clients", "create", "--tenant", "x", "--scopes", "ledger:fly"), "unknown scope"),
        (("clients", "create", "--tenant", "x", "--scopes", ""), "at least one scope"),
        (("clients", "revoke", "not-a-uuid"), "must be a UUID"),
        (("tenants", "create", ""), "1 to 200"),
        (("tenants", "create", "t" * 201), "1 to 200"),
        (("tenants", "create", "a\x1b[2Jb"), "control characters"),
        (("tenants", "create", "a\u0085b"), "control characters"),
        (("clients", "create", "--tenant", "x", "--name", "n" * 201), "at most 200"),
        (("clients", "create", "--tenant", "x", "--name", "a\x07"), "control characters"),
        # Rates and bursts are PostgreSQL integers: past 2**31 - 1 was a traceback.
        (("clients", "create", "--tenant", "x", "--rate", str(2**31)), "--rate"),
        (("clients", "create", "--tenant", "x", "--burst", "9" * 23), "--burst"),
        (
            ("clients", "update", "01a249e7-0000-7000-8000-000000000000", "--rate", str(2**31)),
            "--rate",
        ),
        (
            ("clients", "update", "01a249e7-0000-7000-8000-000000000000", "--burst", "0"),
            "--burst",
        ),
    ],
)
def test_bad_input_is_a_clear_error(tally, args, message):
    proc = tally(*args, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_revoked_client_cannot_get_token(tally, database_url):
    tally("tenants", "create", "gone")
    record = json.loads(tally("clients", "create", "--tenant", "gone", "--json").stdout)
    tally("clients", "revoke", record["client_id"])
    with psycopg.connect(database_url) as conn:
        status = conn.execute(
            "SELECT status FROM api_clients WHERE id = %s", (record["client_id"],)
        ).fetchone()
    assert status == ("revoked",)


def test_keys_rotate_adds_a_data_key(tally, database_url):
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT count(*) FROM keys").fetchone()[0]
    out = tally("keys", "rotate").stdout
    assert out.startswith("added data key d")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM keys").fetchone()[0] == before + 1


def test_the_largest_rate_and_burst_are_stored(tally, database_url):
    tally("tenants", "create", "big-limits")
    made = tally("clients", "create", "--tenant", "big-limits", "--json",
                 "--rate", str(2**31 - 1), "--burst", str(2**31 - 1))  # fmt: skip
    client_id = json.loads(made.stdout)["client_id"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT rate_limit, burst FROM api_clients WHERE id = %s", (client_id,)
        ).fetchone()
    assert row == (2**31 - 1, 2**31 - 1)
