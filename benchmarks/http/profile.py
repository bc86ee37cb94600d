"""Where a Tally worker's time goes under wrk load: py-spy on every granian worker.

    python -m benchmarks.http.profile [--script get_account] [--connections 64] [--seconds 15]

Starts the same stack as `make bench` (one route only), drives it with wrk,
samples all worker processes with `py-spy record --subprocesses` (install
with `pip install -e '.[bench]'`), and prints the functions with the most
samples, by own time and by time including callees. The collapsed stacks and
a speedscope file are kept for a closer look.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from benchmarks.http import stack, wrk

OUT = Path(__file__).resolve().parent.parent / "results" / "profiles"


def _frame_name(frame: str) -> str:
    # py-spy's raw frames look like "function (path/to/file.py:123)".
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def summarize(collapsed: Path, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack_text.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} samples with Python frames (granian's native threads and idle time are"
             " not sampled)", "", "own time:"]  # fmt: skip
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:

    parser = argparse.ArgumentParser(prog="python -m benchmarks.http.profile")
    scripts = [
        "get_account",
        "post_transfer",
        "post_transfer_nokey",
        "list_transfers",
        "post_batch",
    ]
    parser.add_argument("--script", default="get_account", choices=scripts)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rate", type=int, default=97, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--native",
        action="store_true",
        help="native frames too (granian, uvloop, libpq; slows the workers)",
    )
    parser.add_argument("--tally-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    wrk.require()
    wrk.raise_fd_limit()
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"{args.script}-c{args.connections}"
    with stack.migrated_database("tally-profile") as (url, redis_url):
        (tenant,) = stack.setup_tenant(url, 10_000, rate_limit=10**9, burst=10**9)
        env = dict(kv.split("=", 1) for kv in args.tally_env)
        with stack.tally(url, redis_url, args.workers, **env) as (port, pid), \
                tempfile.NamedTemporaryFile("w", suffix=".ids") as ids:  # fmt: skip
            ids.write("\n".join(tenant.accounts) + "\n")
            ids.flush()
            token = stack.token(port, tenant)
            batch = "100" if args.script == "post_batch" else "1"
            base = f"http://127.0.0.1:{port}"
            wrk.run(base, args.script, connections=args.connections, seconds=3,
                    args=[token, ids.name, batch, "warm"])  # fmt: skip
            result: list[wrk.WrkResult] = []
            load = threading.Thread(target=lambda: result.append(wrk.run(
                base, args.script, connections=args.connections, seconds=args.seconds + 2,
                args=[token, ids.name, batch, "prof"])))  # fmt: skip
            load.start()
            # Native frames need the process paused while sampled.
            mode = ["--native"] if args.native else ["--nonblocking"]
            subprocess.run([py_spy, "record", "--pid", str(pid), "--subprocesses",
                            "--rate", str(args.rate), "--duration", str(args.seconds),
                            "--format", "raw", "--output", f"{stem}.txt", *mode],
                           check=True, capture_output=True)  # fmt: skip
            load.join()
    r = result[0]
    print(f"{args.script} -c {args.connections}: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, "
          f"p99 {r.p99_ms:.1f} ms, errors {r.errors} (while sampled)")  # fmt: skip
    report = summarize(Path(f"{stem}.txt"), args.top)
    Path(f"{stem}.summary.txt").write_text(report + "\n")
    print(report)
    print(f"\ncollapsed stacks: {stem}.txt")


if __name__ == "__main__":
    main()
