"""The `make bench` table's arithmetic: ratios, paired rounds and the SPEC verdicts
(no server is started; the runs are given)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.http import autogroup, harness
from benchmarks.http.wrk import WrkResult


def _run(rps: float, p99_ms: float = 5.0, errors: int = 0) -> WrkResult:
    return WrkResult(int(rps * 10), 10.0, errors, 0, 1.0, p99_ms, 20.0, {})


def _row(target: str, route: str, rps: float, p99_ms: float = 5.0) -> harness.Row:
    return harness.Row(target, route, 64, rps, "req/s", 1.0, p99_ms, 0)


def test_paired_rounds_give_medians_and_the_median_of_each_rounds_ratio():
    b = [_run(40_000), _run(30_000), _run(35_000)]
    c = [_run(19_000), _run(16_000, p99_ms=12), _run(17_000)]
    bare, tally = harness.paired_rows(b, c, 64)
    assert (bare.throughput, tally.throughput) == (35_000, 17_000)
    assert tally.notes["rounds_ratio"] == [0.475, 0.533, 0.486]
    assert round(tally.ratio, 3) == 0.486
    assert tally.p99_ms == 5.0 and tally.meets_spec is False
    assert bare.notes["rounds_req_s"] == [40_000, 30_000, 35_000]


def test_a_paired_ratio_is_per_round_not_of_the_medians():
    # Rounds 0.35, 0.52, 0.55: median 0.52; the medians' ratio would be 14,000 / 30,000.
    b = [_run(40_000), _run(20_000), _run(30_000)]
    c = [_run(14_000), _run(10_400), _run(16_500)]
    bare, tally = harness.paired_rows(b, c, 64)
    assert round(tally.ratio, 3) == 0.52
    assert round(tally.throughput / bare.throughput, 3) == 0.467
    assert tally.meets_spec is True


def test_paired_verdict_needs_the_latency_and_no_errors():
    b = [_run(30_000)] * 3
    slow = harness.paired_rows(b, [_run(16_000, p99_ms=11)] * 3, 64)[1]
    failing = harness.paired_rows(b, [_run(16_000, errors=1)] * 3, 64)[1]
    assert slow.ratio > 0.5 and slow.meets_spec is False
    assert failing.meets_spec is False


def test_with_paired_rounds_the_single_row_gives_no_verdict():
    rows = [
        _row("(a) bare ASGI", "GET / (static JSON)", 50_000),
        _row("(b) bare Starlette", harness.GET_ACCOUNT, 36_000),
        _row("(c) Tally", harness.GET_ACCOUNT, 18_500),
        *harness.paired_rows([_run(35_000)], [_run(16_000)], 64),
    ]
    harness.add_ratios(rows)
    single, paired = rows[2], rows[4]
    assert round(single.ratio, 3) == 0.514 and single.meets_spec is None
    assert paired.meets_spec is False and round(paired.ratio, 3) == 0.457
    assert rows[3].ratio is None  # the paired (b) is not set against (a), minutes apart


def test_without_paired_rounds_the_single_row_gives_the_verdict():
    rows = [
        _row("(b) bare Starlette", harness.GET_ACCOUNT, 36_000),
        _row("(c) Tally", harness.GET_ACCOUNT, 18_500),
    ]
    harness.add_ratios(rows)
    assert rows[1].spec == harness.GET_SPEC and rows[1].meets_spec is True


def test_a_later_run_the_same_day_does_not_overwrite_the_first(tmp_path):
    from datetime import UTC, datetime

    started = datetime(2026, 11, 25, 2, 51, tzinfo=UTC)
    first = harness.result_path(started, quick=False, results=tmp_path)
    assert first.name == "2026-11-25.json"
    first.write_text("{}")
    assert harness.result_path(started, False, tmp_path).name == "2026-11-25-0251.json"
    assert harness.result_path(started, True, tmp_path).name == "2026-11-25-quick.json"


def test_autogroup_state_reads_the_sysctl(tmp_path):
    sysctl = tmp_path / "sched_autogroup_enabled"
    sysctl.write_text("1\n")
    assert autogroup.state(sysctl) == "on"
    sysctl.write_text("0\n")
    assert autogroup.state(sysctl) == "off"
    assert autogroup.state(tmp_path / "absent") is None


def test_autogroup_switched_for_the_run_then_restored(tmp_path):
    sysctl = tmp_path / "sched_autogroup_enabled"
    sysctl.write_text("1\n")
    with autogroup.switched("off", sysctl) as seen:
        assert seen == "off"
        assert sysctl.read_text() == "0\n"
    assert sysctl.read_text() == "1\n"
    with pytest.raises(ValueError), autogroup.switched("off", sysctl):
        raise ValueError("a failed run restores them too")
    assert sysctl.read_text() == "1\n"


def test_autogroup_left_alone_by_default(tmp_path):
    sysctl = tmp_path / "sched_autogroup_enabled"
    sysctl.write_text("1\n")
    with autogroup.switched(None, sysctl) as seen:
        assert seen == "on"
    assert sysctl.read_text() == "1\n"


def test_autogroup_switch_without_the_sysctl_is_a_clear_error(tmp_path):
    with pytest.raises(autogroup.AutogroupError, match="no"), \
            autogroup.switched("off", tmp_path / "absent"):  # fmt: skip
        pass


def test_autogroup_switch_without_permission_is_a_clear_error(tmp_path, monkeypatch):
    sysctl = tmp_path / "sched_autogroup_enabled"
    sysctl.write_text("1\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(autogroup.AutogroupError, match="needs root"), \
            autogroup.switched("off", sysctl):  # fmt: skip
        pass
    monkeypatch.undo()
    assert sysctl.read_text() == "1\n"


def test_the_table_names_the_autogroup_setting():
    meta = {
        "started_at": "2026-12-05 10:00 UTC", "mode": "quick", "warmup_s": 1, "seconds": 3,
        "machine": {"cpu_model": "cpu", "cores": 2, "memory_gib": 1, "kernel": "k",
                    "python": "3.11", "granian": "2", "wrk": "wrk"},
        "postgres": {"version": "18", "fsync": "on", "synchronous_commit": "on"},
        "load_before": "0", "load_after": "0", "granian_settings": {},
        "sched_autogroup": "off",
    }  # fmt: skip
    row = harness.Row("pgbench", "-b tpcb-like", 16, 1000.0, "TPS", None, None, 0)
    assert "kernel.sched_autogroup_enabled: off" in harness.table([row], meta)


def test_tally_own_latency_share_goes_into_the_notes():
    measured = _run(20_000)
    measured.app_over_10ms = 0.0012345
    row = harness._http_row("(c) Tally", harness.GET_ACCOUNT, 64, measured)
    assert row.notes["app_over_10ms"] == 0.00123
    assert "app_over_10ms" not in harness._http_row("(b) x", "GET /", 64, _run(1)).notes
    c = [_run(17_000), _run(18_000), _run(16_000)]
    c[0].app_over_10ms, c[2].app_over_10ms = 0.001, 0.004
    bare, tally = harness.paired_rows([_run(35_000)] * 3, c, 64)
    assert tally.notes["rounds_app_over_10ms"] == [0.001, None, 0.004]
    assert "rounds_app_over_10ms" not in bare.notes


def test_reading_tallys_server_settings_leaves_this_process_alone(tmp_path, monkeypatch):
    """The harness and each baseline read `tally serve`'s granian settings by running
    its _serve against a recorder: that must neither change their environment (every
    server they start inherits it) nor empty a metrics directory a Tally is using."""
    from benchmarks.http import serve

    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    before = dict(os.environ)
    settings = serve.tally_granian_settings(8123, 2)
    assert settings["workers"] == 2 and settings["target"] == "service.app:create_app"
    assert dict(os.environ) == before
    assert (shared / "counter_123.db").exists()
