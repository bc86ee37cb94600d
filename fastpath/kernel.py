"""The transfer decision loop: the compiled twin when available (see fastpath/codec.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

__all__ = ["EXPIRE", "IMPLEMENTATION", "PENDING", "POST", "TRANSFER", "VOID", "decide"]

NO_EXTENSIONS = os.environ.get("TALLY_NO_EXTENSIONS", "") not in ("", "0")

IMPLEMENTATION: Literal["c", "py"]

if TYPE_CHECKING or NO_EXTENSIONS:
    import fastpath._kernel_py as _impl
else:
    try:
        import fastpath._kernel_c as _impl
    except ImportError:
        import fastpath._kernel_py as _impl

IMPLEMENTATION = "c" if _impl.__name__.endswith("_c") else "py"
TRANSFER = _impl.TRANSFER
PENDING = _impl.PENDING
POST = _impl.POST
VOID = _impl.VOID
EXPIRE = _impl.EXPIRE
decide = _impl.decide
