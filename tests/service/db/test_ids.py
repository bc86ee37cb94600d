"""parse_id: msgspec's fast path accepts exactly what uuid.UUID accepted."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from service.db.ids import parse_id


def _reference(text: str) -> uuid.UUID | None:
    """parse_id as it was, on uuid.UUID alone."""
    if len(text) not in (32, 36):
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


_HEXISH = st.sampled_from('0123456789abcdefABCDEF-_{}:urnidx \\"é\x00')


@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()),
                 st.text(_HEXISH, min_size=30, max_size=38)))  # fmt: skip
def test_parse_id_agrees_with_uuid(text):
    assert parse_id(text) == _reference(text)


def test_odd_forms_uuid_takes_are_still_taken():
    for text in ("1234-5678-1234-5678-1234567812345678", "{12345678123456781234567812345678}"[:36],
                 "01A2453B-56C3-7528-9BDF-B169EAAE34A0"):  # fmt: skip
        assert parse_id(text) == _reference(text)
    assert parse_id("01a2453b-56c3-7528-9bdf-b169eaae34a0") == uuid.UUID(
        "01a2453b-56c3-7528-9bdf-b169eaae34a0"
    )
    assert parse_id("x" * 36) is None and parse_id("") is None
