"""decode_json: 400 for syntax and types, 422 listing every broken rule."""

from __future__ import annotations

import pytest

from service.api.decoding import decode_json
from service.errors import ApiError
from service.schemas import AccountCreate, AccountPatch


def error_of(body: bytes, kind: type = AccountCreate) -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode_json(body, kind)
    return caught.value


def test_schema_error_before_bad_syntax_is_still_400():
    # Found by the fuzz test: the typed decode stops at the unknown field, then
    # the untyped re-decode met -Infinity (not JSON) and escaped as a 500.
    err = error_of(b'{"status": 1, "x": -Infinity}')
    assert (err.status, err.code) == (400, "BAD_REQUEST")
    err = error_of(b'{"name": "", "currency": "USD", "metadata": {"a": "b"}, "z": NaN}')
    assert (err.status, err.code) == (400, "BAD_REQUEST")


def test_every_broken_rule_is_listed():
    err = error_of(b'{"name": "", "currency": "usd", "overdraft_limit": -1}')
    assert err.status == 422
    fields = [f["field"] for f in err.details["fields"]]
    assert fields == ["name", "currency", "overdraft_limit"]


def test_unknown_fields_are_named_with_their_path():
    err = error_of(b'{"name": "a", "currency": "USD", "holder": {"name": "x", "tel": "1"}, "b": 1}')
    assert err.status == 400
    assert sorted(f["field"] for f in err.details["fields"]) == ["b", "holder.tel"]


def test_control_characters_reported_beside_other_failures():
    err = error_of(b'{"name": "", "currency": "USD", "metadata": {"k": "a\\u0000"}}')
    assert err.status == 422
    assert [f["field"] for f in err.details["fields"]] == ["name", "metadata.k"]


def test_valid_patch_decodes():
    patch = decode_json(b'{"metadata": {"a": null}}', AccountPatch)
    assert patch.metadata == {"a": None}


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"name": "a", "name": "b", "currency": "USD"}', "name"),
        (b'{"name": "a", "currency": "USD", "metadata": {"k": "1", "k": "2"}}', "metadata.k"),
        (b'{"name": "a", "\\u006eame": "b", "currency": "USD"}', "name"),
    ],
)
def test_a_key_given_twice_is_400_naming_it(body, field):
    err = error_of(body)
    assert (err.status, err.code) == (400, "BAD_REQUEST")
    assert err.details["fields"] == [{"field": field, "message": "is given more than once"}]


def test_the_same_key_in_different_objects_is_fine():
    body = b'{"name": "a", "currency": "USD", "metadata": {"name": "x", "currency": "y"}}'
    assert decode_json(body, AccountCreate).metadata == {"name": "x", "currency": "y"}
