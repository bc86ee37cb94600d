"""Row-to-JSON, control-character and cursor helpers: the compiled twin when available.

`_codec_c` (Cython) and `_codec_py` (pure Python) export the same names and behave the
same; this module re-exports one of them. The pure twin is used when TALLY_NO_EXTENSIONS is
set to anything but "" or "0", when type checking (it is the one with annotations), or when
the compiled module is not built. `IMPLEMENTATION` says which one loaded: "c" or "py".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

__all__ = [
    "ACCOUNT_COLUMNS",
    "IMPLEMENTATION",
    "account_to_dict",
    "control_char_fields",
    "decode_cursor",
    "encode_cursor",
    "has_control_char",
]

NO_EXTENSIONS = os.environ.get("TALLY_NO_EXTENSIONS", "") not in ("", "0")

IMPLEMENTATION: Literal["c", "py"]

if TYPE_CHECKING or NO_EXTENSIONS:
    import fastpath._codec_py as _impl
else:
    try:
        import fastpath._codec_c as _impl
    except ImportError:
        import fastpath._codec_py as _impl

IMPLEMENTATION = "c" if _impl.__name__.endswith("_c") else "py"
ACCOUNT_COLUMNS = _impl.ACCOUNT_COLUMNS
account_to_dict = _impl.account_to_dict
control_char_fields = _impl.control_char_fields
decode_cursor = _impl.decode_cursor
encode_cursor = _impl.encode_cursor
has_control_char = _impl.has_control_char
