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
    from fastpath._codec_py import (
        ACCOUNT_COLUMNS,
        account_to_dict,
        control_char_fields,
        decode_cursor,
        encode_cursor,
        has_control_char,
    )

    IMPLEMENTATION = "py"
else:
    try:
        from fastpath._codec_c import (
            ACCOUNT_COLUMNS,
            account_to_dict,
            control_char_fields,
            decode_cursor,
            encode_cursor,
            has_control_char,
        )

        IMPLEMENTATION = "c"
    except ImportError:
        from fastpath._codec_py import (
            ACCOUNT_COLUMNS,
            account_to_dict,
            control_char_fields,
            decode_cursor,
            encode_cursor,
            has_control_char,
        )

        IMPLEMENTATION = "py"
