"""`make load`: locust headless against Tally, with CSV and HTML reports.

Without --host, starts what it needs (PostgreSQL and Redis from
TALLY_DATABASE_URL / TALLY_REDIS_URL, else embedded; a fresh database; Tally
under `tally serve` on a free port) and creates one API client per simulated
user, with the server's default rate limits. With --host, uses that server
and the credentials the locustfile finds. Prints locust's summary and the
failure ratio; exits non-zero when any request failed (an intended 4xx/429 is
not a failure). Reports go to loadtests/results/<time>/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _summary(prefix: Path) -> None:
    with open(f"{prefix}_stats.csv") as f:
        rows = list(csv.DictReader(f))
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if total is None:
        return
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    print(f"\n{'route':<34} {'requests':>9} {'fails':>6} {'req/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7}")  # fmt: skip
    for r in rows:
        print(f"{(r['Type'] + ' ' + r['Name'])[:34]:<34} {r['Request Count']:>9} "
              f"{r['Failure Count']:>6} {float(r['Requests/s']):8.1f} {r['50%']:>7} "
              f"{r['99%']:>7}")  # fmt: skip
    ratio = failures / requests if requests else 0.0
    print(f"\nfailure ratio (load_stats.csv): {failures}/{requests} = {ratio:.4%}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", default="60s", help="locust --run-time, e.g. 30s, 5m")
    parser.add_argument("--user-rps", type=float, default=0.0,
                        help="tasks per second per user (0: 0-50 ms pauses)")  # fmt: skip
    parser.add_argument("--host", help="a running Tally (default: start one)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="report directory")
    args = parser.parse_args()

    out = args.out or HERE / "results" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    with ExitStack() as stack_:
        host = args.host
        if host is None:
            from benchmarks.http import stack
            from service import devservers
            from service.db.migrate import migrate

            data_dir = Path(tempfile.mkdtemp(prefix="tally-load-"))
            stack_.callback(shutil.rmtree, data_dir, True)
            admin_url, redis_url = stack_.enter_context(devservers.embedded(
                data_dir, os.environ.get("TALLY_DATABASE_URL"), os.environ.get("TALLY_REDIS_URL")
            ))  # fmt: skip
            url = stack_.enter_context(stack.fresh_database(admin_url, "tally_load"))
            migrate(url)
            tenants = stack.setup_tenant(url, 0, clients=args.users)
            clients = out / "clients.json"
            clients.write_text(json.dumps([{"client_id": t.client_id,
                                            "client_secret": t.client_secret}
                                           for t in tenants]))  # fmt: skip
            env["TALLY_LOAD_CLIENTS"] = str(clients)
            port, _ = stack_.enter_context(stack.tally(url, redis_url, args.workers))
            host = f"http://127.0.0.1:{port}"
        print(f"locust: {args.users} users (spawn {args.spawn_rate}/s) for {args.duration} "
              f"against {host}; reports in {out}", flush=True)  # fmt: skip
        prefix = out / "load"
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
             "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.duration,
             "--host", host, "--user-rps", str(args.user_rps), "--csv", str(prefix),
             "--html", str(out / "report.html"), "--only-summary", "--stop-timeout", "10"],
            env=env,
        )  # fmt: skip
        (out / "clients.json").unlink(missing_ok=True)  # secrets: not kept with the report
    _summary(prefix)
    print(f"reports: {prefix}_stats.csv, {prefix}_failures.csv, {out / 'report.html'}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
