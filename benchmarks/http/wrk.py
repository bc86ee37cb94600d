"""Running wrk with the route scripts in `lua/` and reading what their done() prints."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"


@dataclass
class WrkResult:
    """One measured wrk run. Errors: socket errors, timeouts and every status >= 400."""

    requests: int
    seconds: float
    errors_status: int
    errors_socket: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    idle: float = 0.0
    """Share of the machine's CPU time (all cores) left idle during the run.

    Near 0: everything on the machine together is CPU-bound. Well above 0
    with throughput flat: something waits (locks, round trips), not the CPUs.
    """
    app_over_10ms: float | None = None
    """For Tally's `GET /api/accounts/{id}` rows: the share of the run's requests
    that Tally's own latency histogram put over 10 ms (benchmarks/http/applatency.py);
    None elsewhere. Much below wrk's own share, the tail is around Tally, not in it."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.errors_status + self.errors_socket

    @property
    def ok_rps(self) -> float:
        """Successful (2xx/3xx) requests per second."""
        return max(0, self.requests - self.errors_status) / self.seconds if self.seconds else 0.0


def version() -> str:
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (proc.stdout or proc.stderr).splitlines()[0].split(" [")[0]


def require() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's open-file limit (inherited by wrk and the servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(
    url: str, script: str, *, connections: int, seconds: float, args: list[str] | None = None,
    threads: int | None = None, timeout_s: int = 10, count_statuses: bool = False,
) -> WrkResult:  # fmt: skip
    """wrk against `url` with lua/common.lua + lua/`script`.lua; `args` go to init().

    `count_statuses`: also count responses by status (a Lua callback per response).
    """
    threads = threads or min(connections, os.cpu_count() or 1)
    source = (LUA / "common.lua").read_text() + "\n" + (LUA / f"{script}.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(source)
        lua.flush()
        argv = ["wrk", "-t", str(threads), "-c", str(connections),
                "-d", f"{max(1, round(seconds))}s", "--timeout", f"{timeout_s}s",
                "-s", lua.name, url, "--", *(args or [])]  # fmt: skip
        env = {**os.environ, "WRK_COUNT_STATUSES": "1" if count_statuses else "0"}
        before = cpu_times()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        idle = idle_share(before, cpu_times())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    socket_errors = sum(raw[k] for k in ("errors_connect", "errors_read", "errors_write",
                                         "errors_timeout"))  # fmt: skip
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors_status=raw["errors_status"],
        errors_socket=socket_errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        statuses=raw.get("statuses", {}),
        idle=idle,
    )


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all cores, from /proc/stat (idle counts iowait too)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return fields[3] + fields[4], sum(fields[:8])


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0
