"""`service.orphans`: which processes follow the server, and what happens when it is gone.

The whole path (SIGKILL to `tally serve`, its workers drain and exit) runs in
tests/faults/test_faults.py against a real server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from service import orphans

_CHILD = (
    "import time; from service import orphans;"
    " print(orphans.exit_with_server(), flush=True); time.sleep(30)"
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")


@contextlib.contextmanager
def _child(server_pid: str) -> Iterator[subprocess.Popen[str]]:
    """A process that calls exit_with_server as a worker would; killed on the way out."""
    env = {**os.environ, orphans.SERVER_PID_ENV: server_pid}
    with subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE,
                          text=True) as child:  # fmt: skip
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()


def _dead_pid() -> int:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        proc.wait()
    return proc.pid


def test_outside_a_server_nothing_is_followed(monkeypatch):
    monkeypatch.delenv(orphans.SERVER_PID_ENV, raising=False)
    assert orphans.exit_with_server() is False
    monkeypatch.setenv(orphans.SERVER_PID_ENV, "not a pid")
    assert orphans.exit_with_server() is False
    # The server process itself (a test process that builds the app, say).
    monkeypatch.setenv(orphans.SERVER_PID_ENV, str(os.getpid()))
    assert orphans.exit_with_server() is False


@linux_only
def test_a_child_of_the_server_follows_it():
    with _child(str(os.getpid())) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "True"
        assert child.poll() is None  # its parent lives: it runs on


@linux_only
def test_a_process_started_by_another_one_does_not_follow_the_server():
    # The named server exists but is not this process's parent: nothing is set up.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            with _child(str(other.pid)) as child:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "False"
                assert child.poll() is None
        finally:
            other.kill()


@linux_only
def test_a_worker_whose_server_is_already_gone_stops_at_once():
    with _child(str(_dead_pid())) as child:
        assert child.wait(timeout=30) == -signal.SIGTERM
