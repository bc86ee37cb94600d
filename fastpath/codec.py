"""Row-to-JSON, control-character, repeated-key and cursor helpers: the compiled twin
when available.

`_codec_c` (Cython) and `_codec_py` (pure Python) export the same names and behave the
same; this module re-exports one of them. The pure twin is used when TALLY_NO_EXTENSIONS is
set to anything but "" or "0", when type checking (it is the one with annotations), or when
the compiled module is not built. `IMPLEMENTATION` says which one loaded: "c" or "py".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastpath import _select

__all__ = [
    "ACCOUNT_COLUMNS",
    "IMPLEMENTATION",
    "account_to_dict",
    "control_char_fields",
    "decode_cursor",
    "encode_cursor",
    "has_control_char",
    "repeated_key",
]

IMPLEMENTATION: Literal["c", "py"]

if TYPE_CHECKING:  # the pure twin carries the annotations
    import fastpath._codec_py as _impl
else:
    _impl = _select.load("fastpath._codec_c", "fastpath._codec_py")

IMPLEMENTATION = _select.implementation(_impl)  # type: ignore[assignment]
ACCOUNT_COLUMNS = _impl.ACCOUNT_COLUMNS
account_to_dict = _impl.account_to_dict
control_char_fields = _impl.control_char_fields
decode_cursor = _impl.decode_cursor
encode_cursor = _impl.encode_cursor
has_control_char = _impl.has_control_char
repeated_key = _impl.repeated_key
