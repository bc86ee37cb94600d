"""Picks the compiled twin of a fastpath module, or its pure-Python twin."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(compiled: str, pure: str) -> ModuleType:
    """The compiled module, unless TALLY_NO_EXTENSIONS is set or it is not built."""
    if os.environ.get("TALLY_NO_EXTENSIONS", "") in ("", "0"):
        try:
            return importlib.import_module(compiled)
        except ImportError:
            pass
    return importlib.import_module(pure)


def implementation(module: ModuleType) -> str:
    return "c" if module.__name__.endswith("_c") else "py"
