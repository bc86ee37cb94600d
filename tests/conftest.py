"""Test session: real PostgreSQL and Redis/Valkey, a fresh database, a tenant per test.

With TALLY_DATABASE_URL / TALLY_REDIS_URL set, those servers are used (the
session creates and drops its own database on the PostgreSQL server);
otherwise embedded servers are started for the session and stopped after it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import tempfile
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette

from service import devservers, ratelimit
from service.app import create_app
from service.auth import clients as client_service
from service.auth import scopes
from service.config import Settings
from service.db import tenants as tenant_sql
from service.db.migrate import migrate


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(admin database URL, redis URL) of real servers for this session."""
    db_url = os.environ.get("TALLY_DATABASE_URL")
    redis_url = os.environ.get("TALLY_REDIS_URL")
    # Not under pytest's basetemp: pytest keeps that 0700, and the embedded
    # PostgreSQL runs as its own system user, which must reach its data dir.
    base = Path(tempfile.mkdtemp(prefix="tally-test-"))
    try:
        with devservers.embedded(base, db_url, redis_url) as urls:
            yield urls
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server of `admin_url`, migrated; dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_conninfo(admin_url, dbname=name)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A database created for this session, migrated, dropped at the end."""
    with fresh_database(servers[0], "tally_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> str:
    return servers[1]


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path_factory.mktemp("data"),
        jwt_secret=secrets.token_urlsafe(48),
        encryption_key=secrets.token_bytes(32),
        db_pool_min=1,
        db_pool_max=8,
        # Generous limits: the suite fires thousands of requests from one
        # address; the rate-limit tests build apps with tight ones.
        rate_limit=100_000.0,
        rate_burst=1_000_000,
        auth_rate_limit=100_000.0,
        auth_rate_burst=1_000_000,
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app of its own (like one more worker), its lifespan running, and a client for it."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield application, http


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        yield http


@dataclass
class Tenant:
    """A fresh tenant with one API client holding every scope."""

    app: Starlette
    tenant_id: uuid.UUID
    client_id: uuid.UUID
    client_secret: str

    def token(self, *granted: str) -> str:
        return self.app.state.tokens.issue(self.client_id, self.tenant_id, granted or scopes.ALL)

    def headers(self, *granted: str) -> dict[str, str]:
        """Bearer headers with the given scopes (all scopes when none are given)."""
        return {"Authorization": f"Bearer {self.token(*granted)}"}

    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def make_tenant(app: Starlette, name: str = "test") -> Tenant:
    db = app.state.db
    async with db.connection() as conn:
        tenant_id = await tenant_sql.create_tenant(conn, name)
    new = await client_service.create_client(db, tenant_id, scopes.ALL, name)
    return Tenant(app, tenant_id, new.client_id, new.client_secret)


@pytest.fixture
async def tenant(app: Starlette) -> Tenant:
    return await make_tenant(app, "tenant-a")


@pytest.fixture
async def other_tenant(app: Starlette) -> Tenant:
    return await make_tenant(app, "tenant-b")


@pytest.fixture
def lease_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The rate limiter's clock, moved by hand (`lease_clock[0] += ...`): lease
    windows and expiry without depending on how fast this machine runs the
    takes. It starts at the real clock's reading; Redis keeps its own clock."""
    now = [time.monotonic()]
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
