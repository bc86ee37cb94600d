"""`make bench`: Tally's routes against same-machine baselines, printed as one table.

Order: pgbench (select-only and tpcb-like) on the PostgreSQL Tally uses, then
(a) a bare ASGI app, (b) a bare Starlette route, (c) Tally, one server at a
time, all under granian with `tally serve`'s settings (see `serve.py`). Every
HTTP target is driven by wrk on 127.0.0.1 at each connection count, after a
warm-up; Tally's requests carry a bearer token and pass the rate limiter (the
bench client's bucket is set high enough never to refuse). The table and a
JSON copy (benchmarks/results/<date>.json) carry the machine's description and
its load average before and after, and each row the share of the machine's CPU
time left idle while it ran (0 %: CPU-bound; well above: something waits).

Last, `--pairs` rounds (3; quick: none) measure `GET /api/accounts/{id}` at 64
connections on (b) and on (c) back to back, both servers up and only one
driven at a time, in alternating order (b c, c b, ...), after a warm-up of
three times the usual on each. This machine's speed
drifts by up to a third within minutes, so the ratio of two rows measured
minutes apart is partly drift; the median of the paired rounds' ratios is the
SPEC verdict when they run.

The kernel's session autogroups (`--sched-autogroup on|off`; by default left
as the machine has them, and recorded) decide how long PostgreSQL's backends
wait for a core while the granian workers and wrk keep both busy: see
benchmarks/http/autogroup.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.http import applatency, autogroup, stack, wrk
from benchmarks.http.serve import describe, tally_granian_settings

RESULTS = Path(__file__).resolve().parent.parent / "results"
GET_ACCOUNT = "GET /api/accounts/{id}"
POST_TRANSFER = "POST /api/transfers"
LIST_TRANSFERS = "GET /api/transfers?account_id="
POST_BATCH = "POST /api/transfers/batch"
GET_ACCOUNT_PAIRED = "GET /api/accounts/{id}, paired"
GET_SPEC = ">= 0.50x (b), p99 <= 10 ms"


@dataclass
class Row:
    target: str  # "pgbench", "(a) bare ASGI", "(b) bare Starlette", "(c) Tally"
    route: str
    connections: int
    throughput: float  # req/s, TPS or transfers/s: see unit
    unit: str
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    requests: int = 0
    baseline: str = ""
    ratio: float | None = None
    spec: str = ""
    meets_spec: bool | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _meets_get_spec(row: Row) -> bool:
    """GET_SPEC: at least 0.50x (b), with p99 at most 10 ms."""
    return row.ratio is not None and row.ratio >= 0.5 and (row.p99_ms or 0) <= 10


def _machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    import granian

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": granian.__version__,
        "wrk": wrk.version(),
    }


def _measure(
    url: str, script: str, conns: int, args: argparse.Namespace,
    wrk_args: Callable[[], list[str]] = list, *, seconds: float | None = None,
    count_statuses: bool = False, app_route: str | None = None,
) -> wrk.WrkResult:  # fmt: skip
    """A warm-up run (discarded), then the measured one; `wrk_args()` is asked for each.

    `app_route` ("GET /api/accounts/{id}", Tally only): also read Tally's own
    latency for the measured run from its /metrics (`app_over_10ms`), waiting
    for the workers' flush before and after it.
    """
    options: dict[str, Any] = {"connections": conns, "count_statuses": count_statuses}
    if args.warmup > 0:
        _settle(wrk.run(url, script, seconds=args.warmup, args=wrk_args(), **options))
    before = _app_histogram(url, app_route)
    result = wrk.run(url, script, seconds=seconds or args.seconds, args=wrk_args(), **options)
    _settle(result)
    if app_route is not None:
        after = _app_histogram(url, app_route)
        result.app_over_10ms = applatency.share_over(before, after, 0.01)
    statuses = f"  statuses {result.statuses}" if result.statuses else ""
    app = "" if result.app_over_10ms is None else f"  in-app >10 ms {result.app_over_10ms:.2%}"
    print(f"    {script:<15} -c {conns:<5} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms"
          f"  p99 {result.p99_ms:7.2f} ms  errors {result.errors}  idle {result.idle:4.0%}"
          f"{statuses}{app}", flush=True)  # fmt: skip
    return result


def _app_histogram(url: str, app_route: str | None) -> dict[float, float] | None:
    if app_route is None:
        return None
    time.sleep(applatency.FLUSH_SECONDS)  # what came before is in the files
    method, _, route = app_route.partition(" ")
    return applatency.scrape(url, method, route)


def _settle(result: wrk.WrkResult) -> None:
    """Let the server finish what wrk left in flight, so it does not slow the next run.

    In-flight work lasts about as long as a request's latency; a run in which no
    request completed left the most behind.
    """
    if result.requests == 0:
        time.sleep(10)
    elif result.p99_ms > 200:
        time.sleep(min(10.0, result.p99_ms / 1000))


def _http_row(target: str, route: str, conns: int, r: wrk.WrkResult, *, per_request: int = 1,
              unit: str = "req/s") -> Row:  # fmt: skip
    # Throughput counts successful requests only: an error is not work done.
    notes: dict[str, Any] = {"statuses": r.statuses} if r.statuses else {}
    notes["cpu_idle"] = round(r.idle, 3)
    if r.app_over_10ms is not None:
        notes["app_over_10ms"] = round(r.app_over_10ms, 5)
    if r.errors_socket:
        notes["socket_errors"] = r.errors_socket
    return Row(target, route, conns, r.ok_rps * per_request, unit, r.p50_ms, r.p99_ms,
               r.errors, r.requests, notes=notes)  # fmt: skip


def run_pgbench(admin_url: str, args: argparse.Namespace) -> list[Row]:
    rows = []
    print("pgbench (scale 10, same PostgreSQL):", flush=True)
    with stack.Pgbench(admin_url).prepared() as pgbench:
        for script in ("select-only", "tpcb-like"):
            for clients in args.pgbench_clients:
                before = wrk.cpu_times()
                run = pgbench.run(script, clients, args.seconds)
                idle = wrk.idle_share(before, wrk.cpu_times())
                print(f"    {script:<15} -c {clients:<5} {run.tps:9.0f} TPS  "
                      f"latency avg {run.latency_avg_ms:.2f} ms  idle {idle:4.0%}",
                      flush=True)  # fmt: skip
                rows.append(Row("pgbench", f"-b {script}" + (" (-S)" if script == "select-only"
                                else ""), clients, run.tps, "TPS", None, None, run.failed,
                                notes={"latency_avg_ms": run.latency_avg_ms,
                                       "cpu_idle": round(idle, 3)}))  # fmt: skip
    return rows


def run_baselines(args: argparse.Namespace, ids_file: str) -> list[Row]:
    rows = []
    print(f"(a) bare ASGI app, static JSON ({args.workers} granian workers):", flush=True)
    with stack.baseline("asgi", args.workers) as (port, _):
        for conns in args.connections:
            r = _measure(f"http://127.0.0.1:{port}/", "static", conns, args)
            rows.append(_http_row("(a) bare ASGI", "GET / (static JSON)", conns, r))
    print("(b) bare Starlette route, msgspec JSON:", flush=True)
    with stack.baseline("starlette", args.workers) as (port, _):
        for conns in args.connections:
            # The very requests Tally gets (token header included, ignored here).
            r = _measure(f"http://127.0.0.1:{port}", "get_account", conns, args,
                         lambda: ["x", ids_file])  # fmt: skip
            rows.append(_http_row("(b) bare Starlette", GET_ACCOUNT, conns, r))
    return rows


@contextmanager
def _tally_serving(admin_url: str, redis_url: str, args: argparse.Namespace,
                   database: str) -> Iterator[tuple[int, str, str]]:  # fmt: skip
    """Tally on a fresh database `database` holding the bench tenant: yields
    (port, the file of the tenant's account ids for wrk, a bearer token)."""
    from service.db.migrate import migrate

    with stack.fresh_database(admin_url, database) as url:
        migrate(url)
        # A bucket too big to refuse: every request still takes its token from Redis.
        (tenant,) = stack.setup_tenant(url, args.accounts, rate_limit=10**9, burst=10**9)
        env = dict(kv.split("=", 1) for kv in args.tally_env)
        with stack.tally(url, redis_url, args.workers, **env) as (port, _), \
                tempfile.NamedTemporaryFile("w", suffix=".ids") as ids:  # fmt: skip
            ids.write("\n".join(tenant.accounts) + "\n")
            ids.flush()
            yield port, ids.name, stack.token(port, tenant)


def run_tally(admin_url: str, redis_url: str, args: argparse.Namespace) -> list[Row]:
    rows = []
    env = dict(kv.split("=", 1) for kv in args.tally_env)
    print(f"(c) Tally ({args.workers} granian workers{', ' + str(env) if env else ''}):",
          flush=True)  # fmt: skip
    with _tally_serving(admin_url, redis_url, args, "tally_bench") as (port, ids, token):
        base = f"http://127.0.0.1:{port}"

        # Every wrk run gets its own Idempotency-Key prefix: no key is ever reused.
        def wrk_args(batch: int = 1) -> Callable[[], list[str]]:
            return lambda: [token, ids, str(batch), secrets.token_hex(6)]

        plan = [
            (GET_ACCOUNT, "get_account", 1, "req/s"),
            (POST_TRANSFER, "post_transfer", 1, "transfers/s"),
            (LIST_TRANSFERS, "list_transfers", 1, "req/s"),
            (POST_BATCH, "post_batch", args.batch_size, "transfers/s"),
        ]
        for route, script, per_request, unit in plan:
            if args.scripts and script not in args.scripts:
                continue
            for conns in args.connections:
                # A batch of 100 per connection at 256 connections takes seconds to
                # answer: measure it long enough for answers to come back.
                seconds = max(args.seconds, 10) if per_request > 1 else None
                writes = script.startswith("post")
                app_route = GET_ACCOUNT if script == "get_account" else None
                r = _measure(base, script, conns, args, wrk_args(per_request),
                             seconds=seconds, count_statuses=writes,
                             app_route=app_route)  # fmt: skip
                row = _http_row("(c) Tally", route, conns, r, per_request=per_request,
                                unit=unit)  # fmt: skip
                if per_request > 1:
                    row.notes["batch_size"] = per_request
                    row.notes["requests_per_s"] = r.ok_rps
                rows.append(row)
        if args.many_connections:
            conns = args.many_connections
            # Opening thousands of connections takes a while: measure for longer.
            r = _measure(base, "get_account", conns, args, wrk_args(),
                         seconds=max(args.seconds, 10), count_statuses=True)  # fmt: skip
            row = _http_row("(c) Tally", GET_ACCOUNT, conns, r)
            row.spec, row.meets_spec = "0 errors", r.errors == 0
            rows.append(row)
    return rows


def run_pairs(admin_url: str, redis_url: str, args: argparse.Namespace) -> list[Row]:
    """`args.pairs` rounds of GET account at 64 connections on (b), then (c),
    back to back (alternating which goes first): a (b) and a (c) summary row,
    each the median of its runs, with every run in the notes."""
    conns = 64
    print(f"(b) and (c) paired, GET /api/accounts/{{id}} -c {conns}, {args.pairs} rounds:",
          flush=True)  # fmt: skip
    runs: dict[str, list[wrk.WrkResult]] = {"b": [], "c": []}
    with _tally_serving(admin_url, redis_url, args, "tally_pairs") as (c_port, ids, token), \
            stack.baseline("starlette", args.workers) as (b_port, _):  # fmt: skip
        targets = {
            "b": (f"http://127.0.0.1:{b_port}", lambda: ["x", ids]),
            "c": (f"http://127.0.0.1:{c_port}", lambda: [token, ids, "1", "-"]),
        }
        # A fresh Tally serves slower for its first 10 s or so (pools filling,
        # statements prepared per connection, caches): warm both up first.
        for url_, wrk_args in targets.values():
            _settle(wrk.run(url_, "get_account", seconds=3 * args.warmup, args=wrk_args(),
                            connections=conns))  # fmt: skip
        for round_ in range(args.pairs):
            for name in ("b", "c") if round_ % 2 == 0 else ("c", "b"):
                print(f"    round {round_ + 1} ({name})", end="", flush=True)
                url_, wrk_args = targets[name]
                app_route = GET_ACCOUNT if name == "c" else None
                runs[name].append(
                    _measure(url_, "get_account", conns, args, wrk_args, app_route=app_route)
                )
    return paired_rows(runs["b"], runs["c"], conns)


def paired_rows(b: list[wrk.WrkResult], c: list[wrk.WrkResult], conns: int) -> list[Row]:
    """The (b) and (c) rows of paired rounds: medians, the ratio the median of
    each round's (c)/(b), and the SPEC verdict on it."""
    rows = []
    for target, results in (("(b) bare Starlette", b), ("(c) Tally", c)):
        row = Row(
            target, GET_ACCOUNT_PAIRED, conns,
            statistics.median(r.ok_rps for r in results), "req/s",
            statistics.median(r.p50_ms for r in results),
            statistics.median(r.p99_ms for r in results),
            sum(r.errors for r in results), sum(r.requests for r in results),
        )  # fmt: skip
        row.notes = {
            "rounds_req_s": [round(r.ok_rps) for r in results],
            "rounds_p99_ms": [round(r.p99_ms, 2) for r in results],
            "cpu_idle": round(statistics.median(r.idle for r in results), 3),
        }
        app = [r.app_over_10ms for r in results]
        if any(share is not None for share in app):
            row.notes["rounds_app_over_10ms"] = [
                None if share is None else round(share, 5) for share in app
            ]
        rows.append(row)
    ratios = [rc.ok_rps / rb.ok_rps for rb, rc in zip(b, c, strict=True) if rb.ok_rps]
    tally = rows[1]
    if ratios:
        tally.baseline = f"(b) paired, median of {len(ratios)}"
        tally.ratio = statistics.median(ratios)
        tally.notes["rounds_ratio"] = [round(x, 3) for x in ratios]
        tally.spec = GET_SPEC
        tally.meets_spec = _meets_get_spec(tally) and not tally.errors
    return rows


def add_ratios(rows: list[Row]) -> None:
    """Each Tally route against its baseline, and the SPEC's targets where it has one."""
    by = {(r.target, r.route, r.connections): r for r in rows}
    pg_tpcb = max((r for r in rows if r.target == "pgbench" and "tpcb" in r.route),
                  key=lambda r: r.throughput, default=None)  # fmt: skip
    paired = any(r.route == GET_ACCOUNT_PAIRED and r.meets_spec is not None for r in rows)
    for row in rows:
        if row.target == "(b) bare Starlette" and row.route == GET_ACCOUNT:
            base = by.get(("(a) bare ASGI", "GET / (static JSON)", row.connections))
            if base and base.throughput:
                row.baseline = f"(a) -c {row.connections}"
                row.ratio = row.throughput / base.throughput
        if row.target != "(c) Tally" or row.route == GET_ACCOUNT_PAIRED:
            continue  # a paired row has its ratio from run_pairs
        if row.route in (GET_ACCOUNT, LIST_TRANSFERS):
            base = by.get(("(b) bare Starlette", GET_ACCOUNT, row.connections))
            if base and base.throughput:
                row.baseline = f"(b) -c {row.connections}"
                row.ratio = row.throughput / base.throughput
            if row.route == GET_ACCOUNT and row.connections == 64 and row.ratio is not None:
                if paired:
                    row.spec = "verdict: paired row"
                else:
                    row.spec = GET_SPEC
                    row.meets_spec = _meets_get_spec(row)
        elif row.route in (POST_TRANSFER, POST_BATCH) and pg_tpcb and pg_tpcb.throughput:
            row.baseline = f"pgbench tpcb-like -c {pg_tpcb.connections}"
            row.ratio = row.throughput / pg_tpcb.throughput
            if row.route == POST_TRANSFER and row.connections == 256:
                row.spec = ">= 2.00x pgbench, p99 <= 50 ms"
                row.meets_spec = row.ratio >= 2 and (row.p99_ms or 0) <= 50


def _fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def table(rows: list[Row], meta: dict[str, Any]) -> str:
    m, pg = meta["machine"], meta["postgres"]
    lines = [
        f"Tally HTTP benchmark, {meta['started_at']} ({meta['mode']} mode: warm-up "
        f"{meta['warmup_s']:g} s, {meta['seconds']:g} s measured per row)",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, granian {m['granian']}, {m['wrk']}",
        f"PostgreSQL {pg['version']} (fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']}), load average before {meta['load_before']} / after "
        f"{meta['load_after']}",
        f"granian (all three servers): {meta['granian_settings']}",
        f"kernel.sched_autogroup_enabled: {meta.get('sched_autogroup') or 'absent'}",
        "",
    ]
    header = ("target", "route", "conns", "throughput", "unit", "p50 ms", "p99 ms", "errors",
              "idle", "vs baseline", "ratio", "SPEC")  # fmt: skip
    body = []
    for r in rows:
        verdict = "" if r.meets_spec is None else ("PASS " if r.meets_spec else "FAIL ")
        idle = r.notes.get("cpu_idle")
        body.append((r.target, r.route, str(r.connections), f"{r.throughput:.0f}", r.unit,
                     _fmt(r.p50_ms), _fmt(r.p99_ms), str(r.errors),
                     "-" if idle is None else f"{idle:.0%}", r.baseline,
                     _fmt(r.ratio), (verdict + r.spec).strip()))  # fmt: skip
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    numeric = {2, 3, 5, 6, 7, 8, 10}

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.rjust(w) if i in numeric else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # fmt: skip
        return "  ".join(padded).rstrip()

    lines += [line(header), line(tuple("-" * w for w in widths)), *map(line, body)]
    return "\n".join(lines)


def result_path(started: datetime, quick: bool, results: Path = RESULTS) -> Path:
    """results/<date>.json (quick: <date>-quick.json); a later run the same day
    gets its start time too (<date>-<HHMM>.json), never overwriting a kept one."""
    day = started.strftime("%Y-%m-%d")
    suffix = "-quick" if quick else ""
    path = results / f"{day}{suffix}.json"
    if path.exists():
        path = results / f"{day}-{started:%H%M}{suffix}.json"
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs: done in < 2 minutes")
    parser.add_argument("--seconds", type=float, help="measured seconds per row (15; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per row (5; quick 1)")
    parser.add_argument("--connections", default="64,256", help="connection counts")
    parser.add_argument("--many-connections", type=int, default=5000,
                        help="the keep-alive check's connection count (0: skip)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--pairs", type=int, help="paired (b)/(c) GET rounds (3; quick 0)")
    parser.add_argument("--pgbench-clients", help="pgbench client counts (16,64; quick 64)")
    parser.add_argument(
        "--tally-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for Tally, to try a lever (repeatable)",
    )
    parser.add_argument(
        "--script",
        dest="scripts",
        action="append",
        choices=["get_account", "post_transfer", "list_transfers", "post_batch"],
        help="measure only these Tally routes (repeatable; default all), to try a lever",
    )
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/"
                        "<date>.json, quick runs <date>-quick.json)")  # fmt: skip
    parser.add_argument(
        "--sched-autogroup",
        choices=["on", "off"],
        help="switch the kernel's session autogroups for the run, then back (needs root;"
        " default: as the machine has them)",
    )
    parser.add_argument(
        "--only",
        choices=["pgbench", "baselines", "tally"],
        action="append",
        help="run only these parts (repeatable; ratios need all three)",
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (3.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0)
    args.pairs = args.pairs if args.pairs is not None else (0 if args.quick else 3)
    args.connections = [int(c) for c in args.connections.split(",")]
    clients = args.pgbench_clients or ("64" if args.quick else "16,64")
    args.pgbench_clients = [int(c) for c in clients.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    from service import devservers

    args = parse_args(argv)
    wrk.require()
    fd_limit = wrk.raise_fd_limit()
    started = datetime.now(UTC)
    meta: dict[str, Any] = {
        "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "workers": args.workers,
        "accounts": args.accounts,
        "batch_size": args.batch_size,
        "tally_env": args.tally_env,
        "open_file_limit": fd_limit,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "machine": _machine(),
        "granian_settings": describe(tally_granian_settings(0, args.workers)),
    }
    parts = set(args.only or ("pgbench", "baselines", "tally"))
    rows: list[Row] = []
    data_dir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    try:
        servers = devservers.embedded(
            data_dir, os.environ.get("TALLY_DATABASE_URL"), os.environ.get("TALLY_REDIS_URL")
        )
        with autogroup.switched(args.sched_autogroup) as meta["sched_autogroup"], \
                servers as (admin_url, redis_url):  # fmt: skip
            meta["postgres"] = stack.postgres_facts(admin_url)
            meta["postgres"]["embedded"] = not os.environ.get("TALLY_DATABASE_URL")
            if "pgbench" in parts:
                rows += run_pgbench(admin_url, args)
            if "baselines" in parts:
                with tempfile.NamedTemporaryFile("w", suffix=".ids") as ids:
                    import uuid

                    ids.write("\n".join(str(uuid.uuid4()) for _ in range(args.accounts)) + "\n")
                    ids.flush()
                    rows += run_baselines(args, ids.name)
            if "tally" in parts:
                rows += run_tally(admin_url, redis_url, args)
            if args.pairs and {"baselines", "tally"} <= parts:
                rows += run_pairs(admin_url, redis_url, args)
    except autogroup.AutogroupError as exc:
        raise SystemExit(f"make bench: {exc}") from exc
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    add_ratios(rows)
    print()
    print(table(rows, meta))
    out = args.output or result_path(started, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    print(f"\nwritten to {out} ({meta['duration_s']:.0f} s)")
