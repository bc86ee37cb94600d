"""`make bench-compare`: run the pytest-benchmark suite against the saved baseline.

The baseline is the newest `NNNN_baseline.json` that `make bench-baseline`
saved for this machine under benchmarks/results/micro/. Exits non-zero when a
benchmark got slower than that baseline by more than the threshold
(BENCH_COMPARE_FAIL, default `mean:10%`; `median:10%` shrugs off a noisy
neighbour better). Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

STORAGE = Path(__file__).resolve().parent / "results" / "micro"


def newest_baseline() -> Path | None:
    from pytest_benchmark.utils import get_machine_id

    found = sorted((STORAGE / get_machine_id()).glob("[0-9][0-9][0-9][0-9]_baseline.json"))
    return found[-1] if found else None


def main() -> int:
    baseline = newest_baseline()
    if baseline is None:
        print(f"no baseline for this machine under {STORAGE}: run `make bench-baseline` first")
        return 2
    threshold = os.environ.get("BENCH_COMPARE_FAIL", "mean:10%")
    print(f"comparing with {baseline.name} (fail on {threshold} slower)")
    return int(
        pytest.main(
            [
                str(STORAGE.parent.parent),
                "-q",
                "-p",
                "no:cacheprovider",
                "--benchmark-only",
                f"--benchmark-storage=file://{STORAGE}",
                f"--benchmark-compare={baseline.name.split('_', 1)[0]}",
                f"--benchmark-compare-fail={threshold}",
                "--benchmark-columns=min,median,mean,stddev,rounds",
                *sys.argv[1:],
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
