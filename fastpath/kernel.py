"""The transfer decision loop: the compiled twin when available (see fastpath/codec.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastpath import _select

__all__ = ["EXPIRE", "IMPLEMENTATION", "PENDING", "POST", "TRANSFER", "VOID", "decide"]

IMPLEMENTATION: Literal["c", "py"]

if TYPE_CHECKING:  # the pure twin carries the annotations
    import fastpath._kernel_py as _impl
else:
    _impl = _select.load("fastpath._kernel_c", "fastpath._kernel_py")

IMPLEMENTATION = _select.implementation(_impl)  # type: ignore[assignment]
TRANSFER = _impl.TRANSFER
PENDING = _impl.PENDING
POST = _impl.POST
VOID = _impl.VOID
EXPIRE = _impl.EXPIRE
decide = _impl.decide
