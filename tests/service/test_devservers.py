"""Embedded servers left running by a `tally dev` that was killed outright are
taken over by the next start, not leaked; one whose owner still runs is shared.

Each test starts the first owner as a child process (as `make run` would be),
so that it can be SIGKILLed like a crashed `tally dev`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from service.devservers import EmbeddedPostgres, EmbeddedValkey, Owner

pytestmark = pytest.mark.server

_OWNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from service.devservers import EmbeddedPostgres, EmbeddedValkey

    kind, where = sys.argv[1], Path(sys.argv[2])
    server = EmbeddedPostgres(where) if kind == "pg" else EmbeddedValkey(where)
    print(server.start(), flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
    server.stop()
    """
)


class Owned:
    """A child process that starts an embedded server and holds it."""

    def __init__(self, kind: str, where: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _OWNER, kind, str(where)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url, "the owner did not start its server"

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_pipes()

    def finish(self) -> None:
        """Let the owner stop its server and exit, as a Ctrl-C'd `tally dev` does."""
        self._close_pipes()  # its stdin at end of file: it stops its server
        assert self.proc.wait(timeout=60) == 0

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as its own
    # system user, which must reach its data directory.
    where = Path(tempfile.mkdtemp(prefix="tally-devservers-"))
    os.chmod(where, 0o755)
    try:
        yield where
    finally:
        _kill_servers_in(where)
        shutil.rmtree(where, ignore_errors=True)


def _servers_in(where: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory is in `where`: the owner
    children, postgres (its -D) and valkey-server (it sets its own title, but
    runs in its data directory)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        places = [*(process.info["cmdline"] or ()), process.info["cwd"] or ""]
        if process.pid != os.getpid() and any(str(where) in place for place in places):
            found.append(process)
    return [p for p in found if _alive(p)]


def _kill_servers_in(where: Path) -> None:
    for process in _servers_in(where):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _valkey_pid(where: Path) -> int:
    return int((where / "valkey.pid").read_text())


def _postmaster(where: Path) -> psutil.Process | None:
    try:
        pid = int((where / "postmaster.pid").read_text().split()[0])
        process = psutil.Process(pid)
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None
    return process if _alive(process) else None


def test_valkey_left_by_a_killed_owner_is_restarted_and_keeps_its_data(base: Path) -> None:
    where = base / "valkey"
    first = Owned("valkey", where)
    with redis.Redis.from_url(first.url) as client:
        client.set("balance-cache", "kept")
    orphan = psutil.Process(_valkey_pid(where))
    first.kill()
    assert _alive(orphan), "the server should outlive its killed owner (the case under test)"

    server = EmbeddedValkey(where)
    url = server.start()
    try:
        assert not _alive(orphan), "the orphaned valkey-server was left running"
        assert server.owner.alive()
        with redis.Redis.from_url(url) as client:
            assert client.get("balance-cache") == b"kept"
        restarted = psutil.Process(_valkey_pid(where))
        assert restarted.pid != orphan.pid
    finally:
        server.stop()
    assert not _alive(restarted)
    assert not (where / "owner").exists()


def test_valkey_of_a_running_owner_is_shared_and_left_running(base: Path) -> None:
    where = base / "valkey"
    first = Owned("valkey", where)
    running = psutil.Process(_valkey_pid(where))

    second = EmbeddedValkey(where)
    assert second.start() == first.url
    second.stop()
    assert _alive(running), "stopping a borrowed server stopped its owner's"
    with redis.Redis.from_url(first.url) as client:
        assert client.ping()

    first.finish()
    assert not _alive(running)


def test_postgres_is_shared_while_its_owner_runs_and_adopted_once_it_is_killed(
    base: Path,
) -> None:
    pgdata = base / "pg"
    first = Owned("pg", pgdata)
    postmaster = _postmaster(pgdata)
    assert postmaster is not None

    borrower = EmbeddedPostgres(pgdata)
    assert borrower.start() == first.url
    assert not borrower.owned
    borrower.stop()
    assert _alive(postmaster), "stopping a borrowed server stopped its owner's"

    first.kill()
    assert _alive(postmaster), "the server should outlive its killed owner (the case under test)"
    heir = EmbeddedPostgres(pgdata)
    url = heir.start()
    assert heir.owned
    assert _postmaster(pgdata) is not None and _postmaster(pgdata).pid == postmaster.pid
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    heir.stop()
    assert _postmaster(pgdata) is None, "the adopted PostgreSQL was left running"
    assert not heir.owner.path.exists()


def test_owner_is_alive_only_for_the_same_process(base: Path) -> None:
    owner = Owner(base / "owner")
    assert not owner.alive()  # no file
    owner.claim()
    assert owner.alive()
    me = psutil.Process()
    # The same pid with another start time: the pid was reused by a new process.
    owner.path.write_text(f"{me.pid} {me.create_time() - 100.0!r}\n")
    assert not owner.alive()
    owner.path.write_text("not a pid\n")
    assert not owner.alive()
    # release() removes only this process's claim.
    owner.path.write_text(f"{me.pid + 1_000_000} {me.create_time()!r}\n")
    owner.release()
    assert owner.path.exists()
    owner.claim()
    owner.release()
    assert not owner.path.exists()
