"""Where the machine's CPU goes per request: every thread and process, under wrk load.

    python -m benchmarks.http.cpu [--target tally|starlette|read] [--script get_account]
        [--connections 64] [--seconds 8]

Serves Tally (or the bare Starlette baseline of `make bench`, with the same
granian settings), drives it with wrk, and reads the CPU time of every
thread on the machine from /proc before and after a window in the middle of
the run. It prints each group's share of the machine and its microseconds of
CPU per request: the granian workers' event-loop threads (where the app's
Python runs), their Rust runtime threads and their other threads, PostgreSQL,
Redis/Valkey, wrk, the rest, idle time, the whole machine, and how much of
it the kernel spent in softirq (the loopback network, inside the threads'
figures).

Unlike a sampling profiler, nothing is paused and nothing is inferred: py-spy
with `--native` reports granian's spinning runtime threads (sched_yield) as a
third of the samples, while their measured CPU time is about a sixth of the
workers'. Compare a Tally row with a `--target starlette` row to see which
part grows with Tally's work, and with `--target read` (the bare route plus
Tally's coalesced account read, nothing else) to see what the read costs and
what the rest of Tally adds to it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks.http import apps, stack, wrk

_HZ = os.sysconf("SC_CLK_TCK")


def _ppid(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == pid]


def _thread_ticks() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, tid) -> (thread name, user + system clock ticks), for every thread."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(int(pid), int(tid))] = (name, int(fields[11]) + int(fields[12]))
    return out


def _machine_ticks() -> dict[str, int]:
    """The machine's softirq, idle and total ticks (all CPUs) from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {"softirq": fields[6], "idle": fields[3] + fields[4], "total": sum(fields[:8])}


def _group(pid: int, tid: int, name: str, workers: set[int], servers: set[int]) -> str:
    if pid in workers:
        if tid == pid:
            return "granian worker: event loop (the app's Python)"
        if name.startswith("tokio"):
            return "granian worker: Rust runtime threads"
        return "granian worker: other threads"
    if pid in servers:
        return "granian main process"
    if name.startswith("postgres"):
        return "PostgreSQL"
    if name.startswith(("valkey", "redis")):
        return "Redis / Valkey"
    if name.startswith("wrk"):
        return "wrk"
    return "everything else"


def measure(port: int, server_pid: int, script: str, args: Callable[[str], list[str]],
            connections: int, seconds: float) -> None:  # fmt: skip
    """`args(phase)`: the wrk script's arguments for the warm-up and the measured run
    (writes need a different Idempotency-Key prefix in each)."""
    base = f"http://127.0.0.1:{port}"
    wrk.run(base, script, connections=connections, seconds=3, args=args("warm"))
    result: list[wrk.WrkResult] = []
    load = threading.Thread(target=lambda: result.append(wrk.run(
        base, script, connections=connections, seconds=seconds + 4, args=args("cpu"))))  # fmt: skip
    load.start()
    time.sleep(2)
    workers = set(_children(server_pid))
    before, machine_before, started = _thread_ticks(), _machine_ticks(), time.monotonic()
    time.sleep(seconds)
    after, machine_after, window = _thread_ticks(), _machine_ticks(), time.monotonic() - started
    load.join()
    r = result[0]
    spent: Counter[str] = Counter()
    for key, (name, ticks) in after.items():
        used = ticks - before.get(key, (name, 0))[1]
        if used > 0:
            spent[_group(key[0], key[1], name, workers, {server_pid})] += used
    machine = {k: machine_after[k] - machine_before[k] for k in machine_after}
    spent["idle"] = machine["idle"]
    cpus = machine["total"] / _HZ / window
    print(f"{script} -c {connections}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
          f"p99 {r.p99_ms:.2f} ms, errors {r.errors}; {cpus:.1f} CPUs, "
          f"{window:.1f} s window")  # fmt: skip
    print(f"  {'':48}  {'machine':>7}  {'us/request':>10}")

    def line(group: str, ticks: int) -> None:
        share = ticks / machine["total"]
        per_request = ticks / _HZ / window / r.rps * 1e6
        print(f"  {group:48}  {share:7.1%}  {per_request:10.1f}")

    for group, ticks in spent.most_common():
        line(group, ticks)
    line("the machine (all CPUs)", machine["total"])
    # Softirq work runs on whichever thread the interrupt found, and is in
    # that thread's system time above: shown, not added.
    line("  of which kernel softirq (loopback network)", machine["softirq"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http.cpu",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--target", choices=["tally", "starlette", "read"], default="tally")
    parser.add_argument(
        "--script",
        default="get_account",
        choices=["get_account", "post_transfer", "list_transfers", "post_batch"],
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tally-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    wrk.require()
    wrk.raise_fd_limit()
    with tempfile.NamedTemporaryFile("w", suffix=".ids") as ids:
        if args.target == "starlette":
            if args.script != "get_account":
                parser.error("the Starlette baseline serves get_account only")
            ids.write("\n".join(str(uuid.uuid4()) for _ in range(10_000)) + "\n")
            ids.flush()
            with stack.baseline("starlette", args.workers) as (port, pid):
                measure(port, pid, "get_account", lambda _: ["x", ids.name], args.connections,
                        args.seconds)  # fmt: skip
            return
        with stack.migrated_database("tally-cpu") as (url, redis_url):
            (tenant,) = stack.setup_tenant(url, 10_000, rate_limit=10**9, burst=10**9)
            ids.write("\n".join(tenant.accounts) + "\n")
            ids.flush()
            if args.target == "read":
                if args.script != "get_account":
                    parser.error("--target read serves get_account only")
                env = {apps.READ_DATABASE_ENV: url, apps.READ_TENANT_ENV: tenant.tenant_id}
                with stack.baseline("read", args.workers, **env) as (port, pid):
                    measure(port, pid, "get_account", lambda _: ["x", ids.name],
                            args.connections, args.seconds)  # fmt: skip
                return
            env = dict(kv.split("=", 1) for kv in args.tally_env)
            with stack.tally(url, redis_url, args.workers, **env) as (port, pid):
                batch = "100" if args.script == "post_batch" else "1"
                token = stack.token(port, tenant)
                measure(port, pid, args.script, lambda phase: [token, ids.name, batch, phase],
                        args.connections, args.seconds)  # fmt: skip


if __name__ == "__main__":
    main()
