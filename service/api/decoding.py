"""Request body decoding: content type, JSON syntax, repeated keys, schema, control characters.

The fast path is one typed msgspec decode. Only when it fails do we decode
again, field by field, so that a 422 names every failing field and not just
the first one msgspec met.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from fastpath import codec
from service.api.params import single_header
from service.errors import ApiError, bad_request, validation_error

T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_any_decoder = msgspec.json.Decoder()
_PATH = re.compile(r" - at `\$(.*)`$")
# msgspec words type errors "Expected `X`, got `Y`"; constraint errors
# "Expected `X` of length >= 1" / "Expected `int` >= 0" / "... matching regex".
_TYPE_ERROR = re.compile(r"^Expected `[^`]+`, got `[^`]+`")
_UNKNOWN = "Object contains unknown field"
_EXACT = 2**53


class _Decoded(Exception):
    """Not an error: the slow path decoded the body after all."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _whole_floats_to_ints(value: Any) -> Any:
    """`value` with every exact whole float (|x| <= 2**53) as an int; same object if none."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        items = {k: _whole_floats_to_ints(v) for k, v in value.items()}
        changed = any(items[k] is not v for k, v in value.items())
        return items if changed else value
    if isinstance(value, list):
        converted = [_whole_floats_to_ints(v) for v in value]
        changed = any(a is not b for a, b in zip(converted, value, strict=True))
        return converted if changed else value
    return value


def _decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    return dec


def require_json(request: Request) -> None:
    ctype = single_header(request, "Content-Type") or ""
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as application/json.",
            {"content_type": ctype[:100]},
        )


async def decode_body(request: Request, kind: type[T]) -> T:
    """Decode and validate a JSON request body as `kind`, or raise the right ApiError."""
    require_json(request)
    body = await request.body()
    return decode_json(body, kind)


_JSON_WHITESPACE = b" \t\r\n"


async def decode_optional_body(request: Request, kind: type[T]) -> T:
    """Like decode_body, but an empty body means `kind()` (all its defaults).

    Only JSON's whitespace (RFC 8259: space, tab, CR, LF) counts as empty;
    bytes.strip() would also drop form feed and vertical tab, which are not
    JSON and must be refused like any other bad body."""
    raw = await request.body()
    if not raw.strip(_JSON_WHITESPACE):
        return kind()
    require_json(request)
    return decode_json(raw, kind)


def decode_json(body: bytes, kind: type[T]) -> T:
    try:
        value = _decoder(kind).decode(body)
    except msgspec.ValidationError as exc:
        outcome = _explain(body, kind, exc)
        if not isinstance(outcome, _Decoded):
            raise outcome from None
        value = outcome.value
    except (msgspec.DecodeError, RecursionError):
        raise bad_request("The body is not valid JSON (or nests too deeply).") from None
    # msgspec keeps a repeated key's last value; a proxy or a signature check in
    # front of Tally may have read the first. One meaning or none: refused.
    repeated = codec.repeated_key(body)
    if repeated is not None:
        raise bad_request(
            "The body gives a key twice in one object.",
            [{"field": repeated, "message": "is given more than once"}],
        )
    if _may_hold_control_chars(body):
        bad = codec.control_char_fields(msgspec.to_builtins(value))
        if bad:
            raise validation_error(
                [{"field": f, "message": "must not contain control characters"} for f in bad]
            )
    return value


def _may_hold_control_chars(body: bytes) -> bool:
    # Raw C0 bytes are invalid JSON, so a control character can only arrive
    # escaped (a backslash), as DEL, or as a UTF-8 C1 character (0xC2 0x80-9F).
    return b"\\" in body or b"\x7f" in body or b"\xc2" in body


def _field_path(message: str) -> tuple[str, str]:
    match = _PATH.search(message)
    if not match:
        return "", message
    path = match.group(1).lstrip(".")
    return path, message[: match.start()]


def _is_syntax_error(message: str) -> bool:
    return bool(_TYPE_ERROR.match(message)) or message.startswith(_UNKNOWN)


def _explain(body: bytes, kind: type, exc: msgspec.ValidationError) -> ApiError | _Decoded:
    """Turn a failed typed decode into 400 (wrong types) or 422 (every broken rule)."""
    path, text = _field_path(str(exc))
    try:
        raw = _any_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        # The typed decode stopped at a schema error before reaching the bad syntax.
        return bad_request("The body is not valid JSON (or nests too deeply).")
    # JSON Schema counts 657.0 as an integer; so do we, when it is exact.
    normalised = _whole_floats_to_ints(raw)
    if normalised is not raw:
        raw = normalised
        try:
            return _Decoded(msgspec.convert(raw, kind))
        except msgspec.ValidationError as retry:
            path, text = _field_path(str(retry))
    if _TYPE_ERROR.match(text):
        return bad_request(
            "The body does not match the expected types.", [{"field": path, "message": text}]
        )
    fields = _collect(raw, kind, "")
    if any(_is_syntax_error(f["message"]) for f in fields):
        return bad_request("The body does not match the expected types.", fields)
    if _may_hold_control_chars(body):
        named = {f["field"] for f in fields}
        fields += [
            {"field": f, "message": "must not contain control characters"}
            for f in codec.control_char_fields(raw)
            if f not in named
        ]
    return validation_error(fields or [{"field": path, "message": text}])


def _collect(raw: Any, kind: Any, prefix: str) -> list[dict[str, str]]:
    """Validate each field on its own so that every failing one is reported."""
    item_type = _list_item_struct(kind)
    if isinstance(raw, list) and item_type is not None:
        return _collect_items(raw, kind, item_type, prefix)
    if not isinstance(raw, dict) or not _is_struct(kind):
        try:
            msgspec.convert(raw, kind)
        except msgspec.ValidationError as exc:
            sub, text = _field_path(str(exc))
            types = _dict_types(kind)
            if isinstance(raw, dict) and types is not None:
                entries = _collect_entries(raw, *types, prefix)
                if entries:  # else the map itself is at fault (e.g. too many keys)
                    return entries
            return [{"field": _join(prefix, sub), "message": text}]
        return []
    errors: list[dict[str, str]] = []
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    known = {f.encode_name: f for f in info.fields}
    for key in raw:
        if key not in known:
            errors.append({"field": _join(prefix, key), "message": f"{_UNKNOWN} `{key}`"})
    for name, field in known.items():
        if name not in raw:
            if field.required:
                errors.append({"field": _join(prefix, name), "message": "is required"})
            continue
        sub_type = _field_type(kind, field.name, raw[name])
        errors.extend(_collect(raw[name], sub_type, _join(prefix, name)))
    return errors


def _collect_items(raw: list[Any], kind: Any, item_type: type, prefix: str) -> list[dict[str, str]]:
    try:
        msgspec.convert(raw, kind)
        return []
    except msgspec.ValidationError as exc:
        sub, text = _field_path(str(exc))
        if not sub.startswith("["):  # the list itself is at fault (e.g. its length)
            return [{"field": _join(prefix, sub), "message": text}]
    errors: list[dict[str, str]] = []
    for i, item in enumerate(raw):
        errors.extend(_collect(item, item_type, f"{prefix}[{i}]"))
    return errors


def _collect_entries(
    raw: dict[Any, Any], key_type: Any, value_type: Any, prefix: str
) -> list[dict[str, str]]:
    """A map's entries one by one, so an error names the key (`metadata.k`)."""
    errors: list[dict[str, str]] = []
    for key, value in raw.items():
        try:
            msgspec.convert(key, key_type)
        except msgspec.ValidationError as exc:
            errors.append({"field": prefix, "message": f"key `{key}`: {_field_path(str(exc))[1]}"})
            continue
        try:
            msgspec.convert(value, value_type)
        except msgspec.ValidationError as exc:
            errors.append({"field": _join(prefix, str(key)), "message": _field_path(str(exc))[1]})
    return errors


def _dict_types(kind: Any) -> tuple[Any, Any] | None:
    """(key type, value type) when `kind` is dict[K, V] (maybe Annotated or Optional)."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    for arg in (kind, *typing.get_args(kind)):
        if typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        if typing.get_origin(arg) is dict:
            key_type, value_type = typing.get_args(arg)
            return key_type, value_type
    return None


def _list_item_struct(kind: Any) -> type | None:
    """The Struct type of the items when `kind` is list[SomeStruct] (maybe Annotated)."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if _is_struct(item):
            return item
    return None


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind, include_extras=True)


def _field_type(kind: type, attr: str, raw: Any) -> Any:
    hint = _hints(kind)[attr]
    if isinstance(raw, dict):
        # Optional[SomeStruct]: validate its fields one by one as well.
        for arg in (hint, *typing.get_args(hint)):
            if _is_struct(arg):
                return arg
    return hint


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    if not name:
        return prefix
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"
