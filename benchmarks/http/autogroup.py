"""The kernel's session autogroups (`kernel.sched_autogroup_enabled`), read and
optionally switched for the length of a bench run.

With autogroups on, the scheduler shares the CPU between sessions first, then
between the tasks of each. Every PostgreSQL backend starts its own session
(`setsid`), so on a machine where wrk, the granian workers and PostgreSQL
share two cores, each backend is scheduled as a group of its own against one
group holding wrk and both workers. `perf sched timehist` under
`GET /api/accounts/{id}` at 64 connections showed the backends serving the
coalesced reads waiting 10-67 ms on the run queue several times a second,
while the Python threads waited a few ms at most; each such wait holds a
coalesced read's 15 callers, and some 15-second runs had p99 above 10 ms.
With autogroups off, six runs in a row gave p99 4.6-4.9 ms (see README,
Performance).
For the same reason the harness keeps every server it measures in its own
session, with wrk: Tally in a session of its own lost a third of its
throughput to wrk's group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SYSCTL = Path("/proc/sys/kernel/sched_autogroup_enabled")


class AutogroupError(RuntimeError):
    pass


def state(path: Path = SYSCTL) -> str | None:
    """The state, "on" or "off"; None where the kernel has no autogroups."""
    try:
        return "on" if path.read_text().strip() != "0" else "off"
    except OSError:
        return None


@contextmanager
def switched(wanted: str | None, path: Path = SYSCTL) -> Iterator[str | None]:
    """Autogroups `wanted` ("on"/"off") while the block runs, then as they were;
    None leaves them alone. Yields the state the run sees."""
    before = state(path)
    if wanted is None or wanted == before:
        yield before
        return
    if before is None:
        raise AutogroupError(f"this kernel has no {path}: autogroups cannot be switched")
    try:
        path.write_text("1\n" if wanted == "on" else "0\n")
    except OSError as exc:
        raise AutogroupError(
            f"cannot write {path} ({exc.strerror}): switching autogroups needs root "
            f"(or `sudo sysctl kernel.sched_autogroup_enabled={int(wanted == 'on')}` first)"
        ) from exc
    try:
        yield wanted
    finally:
        path.write_text("1\n" if before == "on" else "0\n")
