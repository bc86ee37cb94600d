"""Serve a baseline app with exactly the granian settings `tally serve` uses.

    python -m benchmarks.http.serve asgi|starlette PORT WORKERS

The settings are not copied: `service.cli._serve` is run against a stand-in
for `granian.Granian` that records its arguments, and the baseline is then
served with those arguments (workers, loop, interface, backpressure, ...), only
the target swapped. So a change to Tally's server settings moves the
baselines with it.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from unittest import mock

TARGETS = {
    "asgi": ("benchmarks.http.apps:bare_asgi", False),
    "starlette": ("benchmarks.http.apps:bare_starlette", True),
    "read": ("benchmarks.http.apps:starlette_read", True),
}


def tally_granian_settings(port: int, workers: int) -> dict[str, Any]:
    """The keyword arguments `tally serve` passes to granian.Granian (plus the target)."""
    from service import cli
    from service.config import Settings

    captured: dict[str, Any] = {}

    class _Recorder:
        def __init__(self, target: str, **kwargs: Any) -> None:
            captured.update(kwargs, target=target)

        def serve(self) -> None:
            pass

    settings = Settings(env="production", port=port, workers=workers)
    # Only the arguments: none of _serve's side effects on this process. Its
    # metrics directory set-up empties PROMETHEUS_MULTIPROC_DIR, and its
    # environment goes to every server started after it: a baseline started
    # beside a running Tally (the paired rounds) wiped Tally's metric files.
    with (
        mock.patch("granian.Granian", _Recorder),
        mock.patch.object(cli.prometheus, "prepare_multiprocess_dir"),
        mock.patch.dict(os.environ),
    ):
        cli._serve(settings)
    return captured


def describe(settings: dict[str, Any]) -> dict[str, str]:
    """The settings that matter for speed, as text for the report."""
    keys = ("interface", "loop", "workers", "runtime_threads", "runtime_mode", "http",
            "backpressure", "blocking_threads", "log_access")  # fmt: skip
    return {k: str(getattr(settings[k], "value", settings[k])) for k in keys if k in settings}


def main() -> None:
    name, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    from granian import Granian

    kwargs = tally_granian_settings(port, workers)
    kwargs.pop("target")
    # Tally's log config and TLS files are Tally's; the baselines log nothing.
    kwargs.pop("log_dictconfig", None)
    kwargs.update(ssl_cert=None, ssl_key=None)
    target, factory = TARGETS[name]
    kwargs["factory"] = factory
    Granian(target, **kwargs).serve()


if __name__ == "__main__":
    main()
