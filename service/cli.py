"""The `tally` command: serve, dev, migrate, tenants and API clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from fastpath import codec
from service import devservers, logs, orphans
from service import metrics as prometheus
from service.auth import clients as client_service
from service.auth import scopes as scope_names
from service.config import ConfigError, Settings, chosen_log_format
from service.db import tenants as tenant_sql
from service.db.ids import parse_id
from service.db.migrate import migrate as apply_migrations
from service.db.pool import Database

T = TypeVar("T")
log = logging.getLogger("tally.cli")


def _data_dir() -> Path:
    return Path(os.environ.get("TALLY_DATA_DIR", ".tally"))


def _is_dev() -> bool:
    return os.environ.get("TALLY_ENV", "production") == "dev"


@contextlib.contextmanager
def _database_url() -> Iterator[str]:
    """TALLY_DATABASE_URL, or in dev mode the embedded server (started if needed)."""
    url = os.environ.get("TALLY_DATABASE_URL")
    if url:
        yield url
        return
    if not _is_dev():
        raise click.ClickException("TALLY_DATABASE_URL is not set (or set TALLY_ENV=dev)")
    pg = devservers.EmbeddedPostgres(_data_dir() / "pg")
    try:
        yield pg.start()
    finally:
        pg.stop()


# Rates and bucket sizes are PostgreSQL integers (api_clients.rate_limit, burst).
_LIMIT = click.IntRange(min=1, max=2**31 - 1)


def _label(value: str, hint: str, *, required: bool) -> None:
    """A tenant's or client's name: at most 200 characters (at least one when
    `required`), without control characters, which `tally ... list` would
    print to an operator's terminal as they are."""
    if len(value) > 200 or (required and not value):
        rule = "1 to 200 characters" if required else "at most 200 characters"
        raise click.BadParameter(f"must be {rule}", param_hint=hint)
    if codec.has_control_char(value):
        raise click.BadParameter("must not contain control characters", param_hint=hint)


def _with_db(work: Callable[[Database], Awaitable[T]]) -> T:
    with _database_url() as url:
        apply_migrations(url)
        return _with_db_url(url, work)


@click.group()
def main() -> None:
    """Tally, the double-entry ledger service."""
    logs.configure(_log_format())


def _log_format() -> str:
    """The settings' log format, before they can be read (JSON if it is not valid:
    the command then reports the bad setting)."""
    chosen = chosen_log_format(os.environ)
    return chosen if chosen in logs.FORMATS else "json"


@main.command()
def migrate() -> None:
    """Apply pending database migrations."""
    with _database_url() as url:
        done = apply_migrations(url)
    click.echo(f"applied {len(done)} migration(s): {', '.join(done) or 'none pending'}")


@main.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def tenants_create(name: str, as_json: bool) -> None:
    """Create a tenant called NAME."""
    _label(name, "NAME", required=True)

    async def work(db: Database) -> Any:
        async with db.connection() as conn:
            return await tenant_sql.create_tenant(conn, name)

    tenant_id = _with_db(work)
    if as_json:
        click.echo(json.dumps({"tenant_id": str(tenant_id), "name": name}))
    else:
        click.echo(f"tenant {name}: {tenant_id}")


@tenants.command("list")
def tenants_list() -> None:
    """List tenants."""

    async def work(db: Database) -> Any:
        async with db.connection() as conn:
            return await tenant_sql.list_tenants(conn)

    for tenant_id, name, created in _with_db(work):
        click.echo(f"{tenant_id}  {created:%Y-%m-%d %H:%M}  {name}")


@main.group()
def clients() -> None:
    """Manage API clients (credentials for POST /api/auth/token)."""


@clients.command("create")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant id or name.")
@click.option(
    "--scopes",
    "scope_text",
    default=" ".join(scope_names.DEFAULT),
    show_default=True,
    help="Space-separated scopes.",
)
@click.option("--name", default="", help="A label for the client.")
@click.option(
    "--rate",
    type=_LIMIT,
    default=None,
    help="Requests per second (default: TALLY_RATE_LIMIT).",
)
@click.option(
    "--burst",
    type=_LIMIT,
    default=None,
    help="Bucket size (default: TALLY_RATE_BURST).",
)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def clients_create(
    tenant_ref: str,
    scope_text: str,
    name: str,
    rate: int | None,
    burst: int | None,
    as_json: bool,
) -> None:
    """Create an API client; its secret is printed once and stored only as a hash."""
    try:
        wanted = scope_names.parse(scope_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    if not wanted:
        raise click.BadParameter("give at least one scope", param_hint="--scopes")
    _label(name, "--name", required=False)

    async def work(db: Database) -> Any:
        async with db.connection() as conn:
            tenant_id = await tenant_sql.find_tenant(conn, tenant_ref)
        if tenant_id is None:
            raise click.ClickException(f"no tenant {tenant_ref!r}")
        return await client_service.create_client(db, tenant_id, wanted, name, rate, burst)

    new = _with_db(work)
    record = {
        "tenant_id": str(new.tenant_id),
        "client_id": str(new.client_id),
        "client_secret": new.client_secret,
        "scopes": " ".join(new.scopes),
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    for key, value in record.items():
        click.echo(f"{key}: {value}")
    click.echo("Store the secret now: it is not shown again.", err=True)


@clients.command("list")
@click.option("--tenant", "tenant_ref", default=None, help="Only this tenant (id or name).")
def clients_list(tenant_ref: str | None) -> None:
    """List API clients (never their secrets)."""

    async def work(db: Database) -> Any:
        async with db.connection() as conn:
            tenant_id = None
            if tenant_ref is not None:
                tenant_id = await tenant_sql.find_tenant(conn, tenant_ref)
                if tenant_id is None:
                    raise click.ClickException(f"no tenant {tenant_ref!r}")
            return await tenant_sql.list_clients(conn, tenant_id)

    for c in _with_db(work):
        limits = f"rate={c.rate_limit or 'default'} burst={c.burst or 'default'}"
        click.echo(
            f"{c.id}  tenant={c.tenant_id}  {c.status:<7}  {limits}  {' '.join(c.scopes)}  {c.name}"
        )


@clients.command("update")
@click.argument("client_id")
@click.option("--rate", type=_LIMIT, default=None, help="Requests per second.")
@click.option("--burst", type=_LIMIT, default=None, help="Bucket size.")
@click.option("--default-limits", is_flag=True, help="Go back to the configured defaults.")
def clients_update(
    client_id: str, rate: int | None, burst: int | None, default_limits: bool
) -> None:
    """Change a client's rate limit (applies within TALLY_CLIENT_CACHE_SECONDS)."""
    parsed = parse_id(client_id)
    if parsed is None:
        raise click.BadParameter("must be a UUID", param_hint="CLIENT_ID")
    if default_limits == (rate is not None or burst is not None):
        raise click.UsageError("give --rate and/or --burst, or --default-limits")

    async def work(db: Database) -> bool:
        async with db.connection() as conn:
            row = await tenant_sql.get_client(conn, parsed)
            if row is None:
                return False
            new_rate = None if default_limits else (rate or row.rate_limit)
            new_burst = None if default_limits else (burst or row.burst)
            return await tenant_sql.set_client_limits(conn, parsed, new_rate, new_burst)

    if not _with_db(work):
        raise click.ClickException(f"no client {client_id}")
    click.echo(f"updated {client_id}")


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client: it can no longer obtain tokens."""
    parsed = parse_id(client_id)
    if parsed is None:
        raise click.BadParameter("must be a UUID", param_hint="CLIENT_ID")

    async def work(db: Database) -> bool:
        async with db.connection() as conn:
            return await tenant_sql.revoke_client(conn, parsed)

    if not _with_db(work):
        raise click.ClickException(f"no active client {client_id}")
    click.echo(f"revoked {client_id}")


@main.group()
def keys() -> None:
    """Manage the key ring: data keys, token signing keys, the master key."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Add a data key; new ciphertexts use it, and workers re-seal old ones in the background."""
    from service.ledger import vault

    master = _settings().encryption_key

    async def work(db: Database) -> str:
        return await vault.rotate(db, master)

    click.echo(f"added data key {_with_db(work)}")


@keys.command("rotate-jwt")
@click.option(
    "--algorithm",
    type=click.Choice(["HS256", "EdDSA"]),
    default=None,
    help="Default: TALLY_JWT_ALGORITHM.",
)
def keys_rotate_jwt(algorithm: str | None) -> None:
    """Add a token signing key: it signs from the workers' next reload (within 30 s)
    and the previous key keeps verifying for one token lifetime more."""
    from service.auth import signing

    settings = _settings()
    chosen = algorithm or settings.jwt_algorithm

    async def work(db: Database) -> str:
        return await signing.rotate(db, settings.encryption_key, chosen)

    click.echo(f"added {chosen} signing key {_with_db(work)}")


@keys.command("retire-jwt")
@click.argument("kid")
def keys_retire_jwt(kid: str) -> None:
    """Stop a superseded signing key verifying tokens (within 30 s on running workers)."""
    from service.auth import signing

    async def work(db: Database) -> bool:
        return await signing.retire(db, kid)

    if not _with_db(work):
        raise click.ClickException(
            f"no live signing key {kid} older than the newest (rotate first to replace it)"
        )
    click.echo(f"retired signing key {kid}")


@keys.command("list")
def keys_list() -> None:
    """The key ring: id, purpose, algorithm, created, retired (never key material)."""

    async def work(db: Database) -> list[tuple[Any, ...]]:
        async with db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, purpose, coalesce(algorithm, 'AES-256-GCM'), created_at, retired_at"
                " FROM keys ORDER BY purpose, created_at, id"
            )
            return await cur.fetchall()

    for kid, purpose, algorithm, created, retired in _with_db(work):
        state = f"retired {retired:%Y-%m-%dT%H:%M:%SZ}" if retired else "live"
        click.echo(f"{kid}\t{purpose}\t{algorithm}\t{created:%Y-%m-%dT%H:%M:%SZ}\t{state}")


@keys.command("rotate-master")
def keys_rotate_master() -> None:
    """Re-seal every key under TALLY_ENCRYPTION_KEY (the new master key).

    Set the old master key(s) in TALLY_PREVIOUS_ENCRYPTION_KEYS, on the
    workers too, until this has run; see README "Key rotation".
    """
    from service.ledger import vault

    settings = _settings()
    if not settings.previous_encryption_keys:
        raise click.ClickException("set TALLY_PREVIOUS_ENCRYPTION_KEYS to the old master key(s)")

    async def work(db: Database) -> int:
        return await vault.rotate_master(
            db, settings.encryption_key, settings.previous_encryption_keys
        )

    from service.crypto import DecryptionFailed

    try:
        count = _with_db(work)
    except DecryptionFailed as exc:
        raise click.ClickException(f"{exc}; nothing was changed") from None
    click.echo(f"re-sealed {count} keys under the new master key")


def _serve(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # Before the workers fork: they write their samples there, /metrics adds them up.
    prometheus.prepare_multiprocess_dir()
    # The workers follow this process: killed outright, it takes them with it.
    os.environ[orphans.SERVER_PID_ENV] = str(os.getpid())
    Granian(
        "service.app:create_app",
        factory=True,
        log_dictconfig=logs.dict_config(settings.log_format),
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        address=settings.host,
        port=settings.port,
        workers=max(1, settings.workers),
        # Two Rust I/O threads per worker: its event loop, where Tally's
        # Python runs, then hands off more of the sockets' work (README
        # "Performance": GET /api/accounts/{id} 0.48x -> 0.52x the bare route).
        runtime_threads=max(1, settings.runtime_threads),
        log_access=False,
        # A crashed worker is replaced instead of leaving the server short.
        respawn_failed_workers=True,
        # Drain for up to this long on SIGTERM/SIGINT, then kill the worker:
        # granian workers can deadlock on shutdown (emmett-framework/granian#875).
        workers_kill_timeout=settings.shutdown_timeout_seconds,
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
    ).serve()


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def serve() -> None:
    """Serve the API with granian (uses TALLY_DATABASE_URL and TALLY_REDIS_URL)."""
    settings = _settings()
    if not settings.database_url or not settings.redis_url:
        raise click.ClickException("TALLY_DATABASE_URL and TALLY_REDIS_URL must be set")
    apply_migrations(settings.database_url)
    _serve(settings)


@main.command()
@click.option(
    "--tenant",
    "tenant_ids",
    multiple=True,
    help="Deliver only this tenant's events (a tenant id; repeatable). Default: all tenants.",
)
def worker(tenant_ids: tuple[str, ...]) -> None:
    """Deliver webhooks (several workers may run at once); stops on SIGTERM or SIGINT."""
    from service.webhooks.dispatcher import run_worker

    settings = _settings()
    if not settings.database_url:
        raise click.ClickException("TALLY_DATABASE_URL must be set")
    tenants = []
    for ref in tenant_ids:
        parsed = parse_id(ref)
        if parsed is None:
            raise click.BadParameter("must be a tenant id (UUID)", param_hint="--tenant")
        tenants.append(parsed)
    apply_migrations(settings.database_url)
    asyncio.run(run_worker(settings, tenants or None))


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@main.command()
def dev() -> None:
    """What `make run` does: embedded servers if needed, migrate, dev client, serve."""
    os.environ.setdefault("TALLY_ENV", "dev")
    settings = _settings()
    # `main` configured logging before TALLY_ENV was set here: again, as dev.
    logs.configure(settings.log_format)
    with devservers.embedded(settings.data_dir, settings.database_url, settings.redis_url) as (
        db_url,
        redis_url,
    ):
        os.environ["TALLY_DATABASE_URL"] = db_url
        os.environ["TALLY_REDIS_URL"] = redis_url
        # Before any child starts: processes of this host share one metrics directory.
        prometheus.prepare_multiprocess_dir()
        settings = settings.with_overrides(database_url=db_url, redis_url=redis_url)
        apply_migrations(db_url)
        creds = _with_db_url(db_url, lambda db: _ensure_dev_client(db, settings.data_dir))
        _print_banner(settings, creds)
        # The webhook dispatcher runs beside the server, as `tally worker` would,
        # and like the server's workers stops if this process is killed outright.
        os.environ[orphans.SERVER_PID_ENV] = str(os.getpid())
        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"])
        try:
            _serve(settings)
        finally:
            _stop_worker(worker)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup(file: Path) -> None:
    """Dump the database to FILE (pg_dump custom format)."""
    from service import backup as pg

    with _database_url() as url:
        try:
            tool = pg.find_tool("pg_dump", _pg_bin(), pg.server_major(url))
            pg.backup(url, file, tool)
        except pg.BackupError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"backed up to {file} ({file.stat().st_size} bytes)")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--clean", is_flag=True, help="Drop what the dump holds first (else: empty only).")
def restore(file: Path, clean: bool) -> None:
    """Restore FILE (from `tally backup`) into the database, in one transaction."""
    from service import backup as pg

    with _database_url() as url:
        try:
            tool = pg.find_tool("pg_restore", _pg_bin(), pg.server_major(url))
            pg.restore(url, file, tool, clean=clean)
        except pg.BackupError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"restored {file}")


def _pg_bin() -> Path | None:
    raw = os.environ.get("TALLY_PG_BIN")
    return Path(raw) if raw else None


def _with_db_url(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(url, min_size=1, max_size=2)
        await db.pool.open(wait=True, timeout=10)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


async def _ensure_dev_client(db: Database, data_dir: Path) -> dict[str, str]:
    """The dev tenant's client; its secret is kept in .tally/ (dev mode only)."""
    path = data_dir / "dev-client.json"
    if path.exists():
        saved = json.loads(path.read_text())
        ok = await client_service.authenticate(db, saved["client_id"], saved["client_secret"])
        if ok is not None:
            return dict(saved)
    async with db.connection() as conn:
        tenant_id = await tenant_sql.find_tenant(conn, "dev")
        if tenant_id is None:
            tenant_id = await tenant_sql.create_tenant(conn, "dev")
    new = await client_service.create_client(db, tenant_id, scope_names.ALL, "dev")
    saved = {
        "tenant_id": str(new.tenant_id),
        "client_id": str(new.client_id),
        "client_secret": new.client_secret,
        "scopes": " ".join(new.scopes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh)
    return saved


def _print_banner(settings: Settings, creds: dict[str, str]) -> None:
    base = f"http://{settings.host}:{settings.port}"
    body = json.dumps({"client_id": creds["client_id"], "client_secret": creds["client_secret"]})
    click.echo(
        f"""
Tally (dev) on {base}   database: {settings.database_url}   redis: {settings.redis_url}

dev tenant  {creds["tenant_id"]}
client_id   {creds["client_id"]}
secret      {creds["client_secret"]}
scopes      {creds["scopes"]}

Get a token and open an account:

  TOKEN=$(curl -s {base}/api/auth/token -H 'Content-Type: application/json' \\
      -d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s {base}/api/accounts -H "Authorization: Bearer $TOKEN" \\
      -H 'Content-Type: application/json' -d '{{"name": "Wallet", "currency": "USD"}}'

API reference: {base}/openapi.json    Ctrl-C stops the server and the embedded databases.
""",
        err=False,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
