"""Plain SQL migrations, applied in file-name order and recorded in schema_migrations."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

log = logging.getLogger("tally.migrate")

MIGRATIONS = Path(__file__).with_name("migrations")
# Serialises concurrent migrators (several workers or CLI runs at once).
_LOCK_ID = 0x7A11_0001


def pending(conn: psycopg.Connection) -> list[Path]:
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [p for p in sorted(MIGRATIONS.glob("*.sql")) if p.stem not in applied]


def migrate(conninfo: str) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied."""
    done: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for path in pending(conn):
                with conn.transaction():
                    conn.execute(path.read_text().encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,)
                    )
                log.info("applied migration %s", path.stem)
                done.append(path.stem)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return done
