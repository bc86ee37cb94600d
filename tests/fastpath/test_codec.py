"""fastpath.codec: fixed cases run against both twins, and properties that the twins agree."""

from __future__ import annotations

import base64
import importlib
import importlib.machinery
import inspect
import json
import os
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpath.codec as codec
from fastpath import _codec_py

PUBLIC_NAMES = {
    "ACCOUNT_COLUMNS",
    "account_to_dict",
    "control_char_fields",
    "decode_cursor",
    "encode_cursor",
    "has_control_char",
    "repeated_key",
}

# No example database: it would leave a .hypothesis/ directory in the working tree.
# No deadline: the first call of a freshly loaded twin is slow enough to trip it.
PROPERTY = settings(database=None, deadline=None, max_examples=300)


def _extensions_disabled() -> bool:
    return os.environ.get("TALLY_NO_EXTENSIONS", "") not in ("", "0")


def _compiled_twin() -> ModuleType:
    try:
        return importlib.import_module("fastpath._codec_c")
    except ImportError as exc:
        if _extensions_disabled():
            pytest.skip("TALLY_NO_EXTENSIONS is set and fastpath._codec_c is not built")
        pytest.fail(f"fastpath._codec_c is not built: {exc}")


@pytest.fixture(scope="module", params=["py", "c"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return _codec_py if request.param == "py" else _compiled_twin()


@pytest.fixture(scope="module")
def c_twin() -> ModuleType:
    return _compiled_twin()


# ---------------------------------------------------------------------------------------
# Module selection


def test_twins_export_the_same_names(c_twin: ModuleType) -> None:
    assert set(_codec_py.__all__) == PUBLIC_NAMES
    assert set(c_twin.__all__) == PUBLIC_NAMES
    assert set(codec.__all__) == PUBLIC_NAMES | {"IMPLEMENTATION"}
    for name in PUBLIC_NAMES:
        assert hasattr(c_twin, name)
        assert hasattr(_codec_py, name)


def test_twins_take_the_same_parameters(c_twin: ModuleType) -> None:
    # Call sites may pass arguments by keyword, so names and defaults must match too.
    def parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
        params = inspect.signature(func).parameters.values()
        return [(p.name, p.kind, p.default) for p in params]

    for name in PUBLIC_NAMES - {"ACCOUNT_COLUMNS"}:
        assert parameters(getattr(c_twin, name)) == parameters(getattr(_codec_py, name)), name


def test_account_columns_are_the_same_in_both_twins(c_twin: ModuleType) -> None:
    assert isinstance(c_twin.ACCOUNT_COLUMNS, tuple)
    assert c_twin.ACCOUNT_COLUMNS == _codec_py.ACCOUNT_COLUMNS
    assert _codec_py.ACCOUNT_COLUMNS[0] == "id"
    assert len(_codec_py.ACCOUNT_COLUMNS) == 13


def test_every_public_function_has_a_docstring(twin: ModuleType) -> None:
    for name in PUBLIC_NAMES - {"ACCOUNT_COLUMNS"}:
        assert getattr(twin, name).__doc__, name


# ---------------------------------------------------------------------------------------
# account_to_dict

ACCOUNT_ID = uuid.UUID("0190f5a2-7c3e-7d41-9a6b-3c2d1e0f4a5b")
CREATED = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
UPDATED = datetime(2025, 1, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
HOLDER = {"name": "Ada Lovelace", "email": "ada@example.com"}
METADATA = {"team": "payments", "cost_centre": "42"}


def _row(**changes: Any) -> tuple[Any, ...]:
    values = {
        "id": ACCOUNT_ID,
        "name": "Operating",
        "currency": "EUR",
        "status": "open",
        "overdraft_limit": 5_000,
        "posted": 120_000,
        "pending_debits": 2_500,
        "pending_credits": 700,
        "holder": HOLDER,
        "metadata": METADATA,
        "version": 7,
        "created_at": CREATED,
        "updated_at": UPDATED,
    }
    values.update(changes)
    return tuple(values[column] for column in _codec_py.ACCOUNT_COLUMNS)


def test_account_to_dict_builds_the_api_shape(twin: ModuleType) -> None:
    result = twin.account_to_dict(_row(), True)
    assert result == {
        "id": "0190f5a2-7c3e-7d41-9a6b-3c2d1e0f4a5b",
        "name": "Operating",
        "currency": "EUR",
        "status": "open",
        "overdraft_limit": 5_000,
        "balance": {"posted": 120_000, "pending": -1_800, "available": 117_500},
        "holder": HOLDER,
        "metadata": METADATA,
        "version": 7,
        "created_at": CREATED,
        "updated_at": UPDATED,
    }
    assert list(result) == [
        "id",
        "name",
        "currency",
        "status",
        "overdraft_limit",
        "balance",
        "holder",
        "metadata",
        "version",
        "created_at",
        "updated_at",
    ]
    assert list(result["balance"]) == ["posted", "pending", "available"]
    assert result["created_at"] is CREATED
    assert result["updated_at"] is UPDATED


def test_account_to_dict_hides_the_holder(twin: ModuleType) -> None:
    assert twin.account_to_dict(_row(), False)["holder"] is None
    assert twin.account_to_dict(_row(holder=None), True)["holder"] is None


def test_account_to_dict_keeps_a_missing_overdraft_limit(twin: ModuleType) -> None:
    assert twin.account_to_dict(_row(overdraft_limit=None), True)["overdraft_limit"] is None


@pytest.mark.parametrize(
    ("posted", "debits", "credits"),
    [
        (2**63 - 1, -(2**63), 2**63 - 1),
        (-(2**63), 2**63 - 1, -(2**63)),
        (2**200, -(2**200), 3),
        (0, 0, 0),
    ],
)
def test_account_to_dict_balance_does_not_overflow(
    twin: ModuleType, posted: int, debits: int, credits: int
) -> None:
    row = _row(posted=posted, pending_debits=debits, pending_credits=credits)
    balance = twin.account_to_dict(row, True)["balance"]
    assert balance == {
        "posted": posted,
        "pending": credits - debits,
        "available": posted - debits,
    }


@pytest.mark.parametrize(
    "account_id",
    [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.UUID(int=0x0123456789ABCDEF << 64 | 0xF)],
)
def test_account_to_dict_formats_ids_like_str(twin: ModuleType, account_id: uuid.UUID) -> None:
    assert twin.account_to_dict(_row(id=account_id), True)["id"] == str(account_id)


class _ShoutingUUID(uuid.UUID):
    def __str__(self) -> str:
        return super().__str__().upper()


def test_account_to_dict_respects_a_uuid_subclass_str(twin: ModuleType) -> None:
    account_id = _ShoutingUUID(int=0xABC)
    assert twin.account_to_dict(_row(id=account_id), True)["id"] == str(account_id)


class _RowTuple(tuple[Any, ...]):
    """Stands in for a named-tuple row factory: a tuple subclass."""


@pytest.mark.parametrize("make", [list, _RowTuple], ids=["list", "tuple-subclass"])
def test_account_to_dict_accepts_any_sequence(
    twin: ModuleType, make: Callable[[tuple[Any, ...]], Any]
) -> None:
    assert twin.account_to_dict(make(_row()), True) == twin.account_to_dict(_row(), True)


@pytest.mark.parametrize("length", [0, 12, 14])
def test_account_to_dict_rejects_a_row_of_the_wrong_length(twin: ModuleType, length: int) -> None:
    row = (_row() + _row())[:length]
    with pytest.raises(ValueError, match=f"has {length} values, expected 13"):
        twin.account_to_dict(row, True)


def test_account_to_dict_output_encodes_with_msgspec(twin: ModuleType) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(twin.account_to_dict(_row(), True)))
    assert decoded["id"] == str(ACCOUNT_ID)
    assert decoded["created_at"] == "2025-01-02T03:04:05.678901Z"
    assert decoded["updated_at"] == "2025-01-03T04:05:06+05:30"


# ---------------------------------------------------------------------------------------
# Control characters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", False),
        ("plain text", False),
        ("tab\there", True),
        ("new\nline", True),
        ("\r", True),
        ("\x00", True),
        ("\x1f", True),
        (" ~", False),
        ("\x7f", True),
        ("\x80", True),
        ("next line \x85", True),
        ("\x9f", True),
        ("no-break\xa0space", False),
        ("soft\xadhyphen", False),
        ("café", False),
        ("line\u2028separator", False),
        ("emoji 😀", False),
        ("€" * 100 + "\x85", True),
        ("😀" * 50 + "\n", True),
        ("😀" * 50 + "\x9f😀", True),
        ("€" * 100, False),
    ],
)
def test_has_control_char(twin: ModuleType, text: str, expected: bool) -> None:
    assert twin.has_control_char(text) is expected


@pytest.mark.parametrize("value", [None, b"\x00", 0])
def test_has_control_char_wants_a_str(twin: ModuleType, value: Any) -> None:
    with pytest.raises(TypeError):
        twin.has_control_char(value)


@pytest.mark.parametrize(
    ("obj", "prefix", "expected"),
    [
        ({}, "", []),
        ([], "", []),
        ({"a": {}, "b": []}, "", []),
        ("fine", "", []),
        (None, "", []),
        ({"n": 1, "f": 1.5, "b": True, "z": None}, "", []),
        ({"name": "a\tb"}, "", ["name"]),
        ({"name": "a\tb"}, "body", ["body.name"]),
        ({"metadata": {"order_id": "x\x7f"}}, "", ["metadata.order_id"]),
        ({"transfers": [{}, {}, {}, {"description": "\n"}]}, "", ["transfers[3].description"]),
        (["ok", "\x00"], "", ["[1]"]),
        (["ok", "\x00"], "items", ["items[1]"]),
        ([["\x00"]], "", ["[0][0]"]),
        ({"x": "\x85"}, "", ["x"]),
        ({"note": "café\xa0😀\u2028"}, "", []),
        ("\x00", "", [""]),
        ("\x00", "body", ["body"]),
        ({"z": "\x00", "a": "\x01", "m": "ok"}, "", ["z", "a"]),
        ({"a\x00b": 1}, "", ["a\x00b"]),
        ({"a\x00b": "\x01"}, "", ["a\x00b"]),
        ({"k\x01": {"x": "\x02"}}, "", ["k\x01", "k\x01.x"]),
        ({"a.b": "\x00", "a": {"b": "\x01"}}, "", ["a.b"]),
        ({"a": [{"b\n": ["ok", {"c": "\x9f"}]}]}, "", ["a[0].b\n", "a[0].b\n[1].c"]),
        ({1: "\x00"}, "", ["1"]),
    ],
)
def test_control_char_fields(twin: ModuleType, obj: Any, prefix: str, expected: list[str]) -> None:
    assert twin.control_char_fields(obj, prefix) == expected


def test_control_char_fields_defaults_to_no_prefix(twin: ModuleType) -> None:
    assert twin.control_char_fields({"name": "\x00"}) == ["name"]


def test_control_char_fields_handles_moderate_nesting(twin: ModuleType) -> None:
    nested: Any = "\x00"
    for _ in range(200):
        nested = [nested]
    assert twin.control_char_fields(nested) == ["[0]" * 200]


def test_control_char_fields_raises_recursion_error_on_absurd_nesting(twin: ModuleType) -> None:
    nested: Any = "\x00"
    for _ in range(sys.getrecursionlimit() * 10):
        nested = {"a": [nested]}
    with pytest.raises(RecursionError):
        twin.control_char_fields(nested)


# ---------------------------------------------------------------------------------------
# Repeated keys


@pytest.mark.parametrize(
    "text, expected",
    [
        (b'{"amount": 1, "amount": 1000000}', "amount"),
        (b'{"a":1,"b":2}', None),
        (b'{"a":"a","b":"a","c":["a","a"]}', None),  # repeated values are no repeated keys
        (b'{"metadata": {"k": "1", "k": "2"}}', "metadata.k"),
        (b'{"transfers": [{"amount": 1}, {"amount": 2, "amount": 3}]}', "transfers[1].amount"),
        (b'{"a": {"x": 1}, "b": {"x": 1}}', None),  # the same key in two objects
        (b'[{"x": 1}, [{"y": [1, {"z": 1, "z": 2}]}]]', "[1][0].y[1].z"),
        (b'{"a": 1, "\\u0061": 2}', "a"),  # compared as decoded
        (b'{"\\u00e9": 1, "\xc3\xa9": 2}', "\u00e9"),
        (b'{"a\\"": 1, "a\\\\": 2, "a": 3}', None),  # escapes inside keys
        (b'{"k": "x\\\\", "k": 1}', "k"),  # a value ending in an escaped backslash
        (b'{"k": "{\\"k\\": 1}", "j": "[,]"}', None),  # brackets and commas in strings
        (b' { "a" : 1 ,\n "a" : 2 } ', "a"),
        (b'{"a": {}, "b": [], "a": null}', "a"),
        (b'{"a.b": 1, "a": {"b": 2}}', None),
        (b'"just a string"', None),
        (b"12", None),
        (b"[]", None),
    ],
)
def test_repeated_key(twin: ModuleType, text: bytes, expected: str | None) -> None:
    assert twin.repeated_key(text) == expected


def test_repeated_key_takes_bytes_only(twin: ModuleType) -> None:
    with pytest.raises(TypeError):
        twin.repeated_key('{"a": 1}')


@pytest.mark.parametrize("text", [b"]", b"}", b",", b'"a"]', b'{"a":1}}', b"1,2"])
def test_repeated_key_refuses_what_is_plainly_not_json(twin: ModuleType, text: bytes) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        twin.repeated_key(text)


@PROPERTY
@given(
    text=st.binary(max_size=64)
    | st.text(st.sampled_from('{}[],:"\\ab\u00e9'), max_size=40).map(str.encode)
)
def test_twins_agree_on_any_bytes(c_twin: ModuleType, text: bytes) -> None:
    """Not JSON is not what the scan is for, but it must not crash on it: both
    twins give the same answer or raise the same ValueError."""
    outcomes = []
    for twin in (_codec_py, c_twin):
        try:
            outcomes.append(twin.repeated_key(text))
        except ValueError as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


def test_repeated_key_handles_deep_nesting(twin: ModuleType) -> None:
    depth = sys.getrecursionlimit() * 10  # a scan with its own stack, no recursion
    text = b'{"a":[' * depth + b'{"z":1,"z":2}' + b"]}" * depth
    assert twin.repeated_key(text) == "a[0]." * depth + "z"


# ---------------------------------------------------------------------------------------
# Cursors


@pytest.mark.parametrize(
    ("value", "cursor"),
    [
        (uuid.UUID(int=0), "A" * 22),
        (uuid.UUID(int=2**128 - 1), "_" * 21 + "w"),
        (ACCOUNT_ID, base64.urlsafe_b64encode(ACCOUNT_ID.bytes).decode().rstrip("=")),
    ],
)
def test_cursor_known_values(twin: ModuleType, value: uuid.UUID, cursor: str) -> None:
    assert twin.encode_cursor(value) == cursor
    assert twin.decode_cursor(cursor) == value


def test_decoded_cursor_is_a_proper_uuid(twin: ModuleType) -> None:
    decoded = twin.decode_cursor(twin.encode_cursor(ACCOUNT_ID))
    assert type(decoded) is uuid.UUID
    assert decoded == ACCOUNT_ID
    assert hash(decoded) == hash(ACCOUNT_ID)
    assert str(decoded) == str(ACCOUNT_ID)
    assert decoded.is_safe is uuid.SafeUUID.unknown
    assert pickle.loads(pickle.dumps(decoded)) == ACCOUNT_ID
    with pytest.raises(TypeError):
        decoded.int = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "A" * 21,
        "A" * 23,
        "A" * 21 + "B",
        "A" * 21 + "P",
        "A" * 20 + "==",
        "A" * 21 + "=",
        "+" + "A" * 21,
        "/" + "A" * 21,
        "A" * 10 + " " + "A" * 11,
        "A" * 21 + "\n",
        "Á" * 22,
        "\x00" * 22,
        "\uff21" * 22,  # fullwidth A
        "😀" * 22,
        None,
        0,
        b"A" * 22,
        bytearray(b"A" * 22),
        ["A"] * 22,
        ACCOUNT_ID,
    ],
)
def test_decode_cursor_rejects_anything_else(twin: ModuleType, cursor: Any) -> None:
    assert twin.decode_cursor(cursor) is None


def test_decode_cursor_accepts_a_str_subclass(twin: ModuleType) -> None:
    class Text(str):
        pass

    assert twin.decode_cursor(Text(twin.encode_cursor(ACCOUNT_ID))) == ACCOUNT_ID


@pytest.mark.parametrize("value", [str(ACCOUNT_ID), ACCOUNT_ID.bytes, ACCOUNT_ID.int, None])
def test_encode_cursor_wants_a_uuid(twin: ModuleType, value: Any) -> None:
    with pytest.raises(TypeError):
        twin.encode_cursor(value)


# ---------------------------------------------------------------------------------------
# Properties: the compiled twin agrees with the pure one

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ANY_INT = st.one_of(
    INT64,
    st.integers(),
    st.sampled_from([-(2**63), 2**63 - 1, -(2**63) - 1, 2**63, 2**64, -(2**128), 2**300]),
)
EDGE_CHARS = "\x00\t\n\r\x1f \x7e\x7f\x80\x85\x9f\xa0\xad\u2028\ufeff\U0001f600"
CHARS = st.one_of(
    st.characters(),
    st.characters(max_codepoint=0xFF),
    st.sampled_from(EDGE_CHARS),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)
TEXT = st.text(CHARS, max_size=24)
JSON = st.recursive(
    st.none() | st.booleans() | ANY_INT | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=40,
)
DATETIMES = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=13))])
)
ROWS = st.tuples(
    st.uuids(),
    TEXT,
    TEXT,
    st.sampled_from(["open", "frozen", "closed"]),
    st.none() | ANY_INT,
    ANY_INT,
    ANY_INT,
    ANY_INT,
    st.none() | st.dictionaries(TEXT, JSON, max_size=4),
    st.dictionaries(TEXT, JSON, max_size=6),
    ANY_INT,
    DATETIMES,
    DATETIMES,
)
B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
CURSOR_LIKE = st.one_of(
    st.text(st.sampled_from(B64_CHARS), min_size=22, max_size=22),
    st.text(st.sampled_from(B64_CHARS + "+/= \n\x00Á"), min_size=20, max_size=24),
    st.text(CHARS, max_size=30),
)


def _naive_has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def _all_strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _all_strings(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _all_strings(item)


@PROPERTY
@given(row=ROWS, show_holder=st.booleans())
def test_twins_agree_on_account_to_dict(
    c_twin: ModuleType, row: tuple[Any, ...], show_holder: bool
) -> None:
    expected = _codec_py.account_to_dict(row, show_holder)
    actual = c_twin.account_to_dict(row, show_holder)
    assert actual == expected
    assert list(actual) == list(expected)
    assert list(actual["balance"]) == list(expected["balance"])
    assert expected["id"] == str(row[0])
    assert expected["balance"]["pending"] == row[7] - row[6]


@PROPERTY
@given(text=TEXT)
def test_twins_agree_on_has_control_char(c_twin: ModuleType, text: str) -> None:
    expected = _naive_has_control(text)
    assert _codec_py.has_control_char(text) is expected
    assert c_twin.has_control_char(text) is expected


@PROPERTY
@given(obj=JSON, prefix=st.sampled_from(["", "body"]) | TEXT)
def test_twins_agree_on_control_char_fields(c_twin: ModuleType, obj: Any, prefix: str) -> None:
    expected = _codec_py.control_char_fields(obj, prefix)
    assert c_twin.control_char_fields(obj, prefix) == expected
    assert len(set(expected)) == len(expected)
    assert bool(expected) == any(_naive_has_control(s) for s in _all_strings(obj))


KEYS = st.sampled_from(["a", "b", "\u00e9", "a.b", 'q"', "\\"]) | TEXT


def _dumps(value: Any, ascii_only: bool) -> str:
    # Lone surrogates have no UTF-8: such strings go as escapes, as a client would send them.
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True)
    return text


@st.composite
def json_texts(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text whose objects may repeat keys, written in varied ways (escaped or not)."""
    kind = draw(st.sampled_from(["scalar", "array", "object"] if depth < 4 else ["scalar"]))
    space = draw(st.sampled_from(["", " ", "\n "]))
    if kind == "scalar":
        value = draw(st.none() | st.booleans() | ANY_INT | TEXT)
        return _dumps(value, draw(st.booleans()))
    if kind == "array":
        items = draw(st.lists(json_texts(depth + 1), max_size=4))
        return "[" + f",{space}".join(items) + "]"
    pairs = draw(st.lists(st.tuples(KEYS, json_texts(depth + 1)), max_size=4))
    members = [f"{_dumps(k, draw(st.booleans()))}{space}:{space}{v}" for k, v in pairs]
    return "{" + f",{space}".join(members) + "}"


def _repeats(text: str) -> bool:
    """The oracle: the standard library's decoder, told to refuse a repeated key."""
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        keys = [k for k, _ in items]
        repeated = repeated or len(set(keys)) < len(keys)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return repeated


@PROPERTY
@given(text=json_texts())
def test_twins_agree_on_repeated_keys(c_twin: ModuleType, text: str) -> None:
    body = text.encode()
    expected = _codec_py.repeated_key(body)
    assert c_twin.repeated_key(body) == expected
    assert (expected is not None) == _repeats(text)


@PROPERTY
@given(value=st.uuids())
def test_twins_agree_on_cursors(c_twin: ModuleType, value: uuid.UUID) -> None:
    cursor = _codec_py.encode_cursor(value)
    assert c_twin.encode_cursor(value) == cursor
    assert len(cursor) == 22
    assert _codec_py.decode_cursor(cursor) == value
    assert c_twin.decode_cursor(cursor) == value


@PROPERTY
@given(cursor=CURSOR_LIKE)
def test_twins_decode_any_string_alike(c_twin: ModuleType, cursor: str) -> None:
    expected = _codec_py.decode_cursor(cursor)
    assert c_twin.decode_cursor(cursor) == expected
    if expected is not None:
        # Canonical: a cursor that decodes is the only cursor of its UUID.
        assert _codec_py.encode_cursor(expected) == cursor
