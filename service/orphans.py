"""Child processes must not outlive the `tally serve` / `tally dev` process that
started them.

When that process is killed outright (SIGKILL, the OOM killer), nothing
stops its granian workers: they keep the port and go on serving, and the
next `tally serve` on that port cannot bind it (the webhook worker that
`tally dev` starts would likewise run on). So each such child asks the
kernel (Linux's `PR_SET_PDEATHSIG`) for a SIGTERM when its parent dies, and
SIGTERM is their graceful stop: in-flight requests finish, queued transfers
commit, then the process exits. Elsewhere this is a no-op; a supervisor that
stops the whole process group (systemd, a container runtime) covers it there.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

SERVER_PID_ENV = "TALLY_SERVER_PID"
"""Set by `tally serve` and `tally dev` before they start children: the parent to follow."""

_PR_SET_PDEATHSIG = 1

log = logging.getLogger("tally.server")


def exit_with_server() -> bool:
    """In a child of `tally serve` or `tally dev`: SIGTERM this process when it dies.

    Returns whether this worker follows the server (False outside such a
    worker). If the server is already gone, the SIGTERM comes at once.
    """
    raw = os.environ.get(SERVER_PID_ENV, "")
    if not raw.isdigit() or int(raw) == os.getpid() or sys.platform != "linux":
        return False
    server = int(raw)
    if os.getppid() != server:
        if _exists(server):  # started by something else: the kernel would follow that
            return False
        log.warning("the server process %d is gone: stopping", server)
        os.kill(os.getpid(), signal.SIGTERM)
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot follow the server process: %s", os.strerror(ctypes.get_errno()))
        return False
    if os.getppid() != server:  # it died before the request took effect
        log.warning("the server process %d is gone: stopping", server)
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
