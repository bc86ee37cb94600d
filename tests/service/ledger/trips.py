"""Counting a coalescer's round trips around the calls a test makes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from service.coalesce import Coalescer


@contextlib.contextmanager
def round_trips(coalescer: Coalescer, expected: int) -> Iterator[None]:
    """Assert that the block sends exactly `expected` queries through `coalescer`."""
    before = coalescer.round_trips
    yield
    assert coalescer.round_trips - before == expected, "round trips to the database"
