"""Each fastpath selector loads the compiled twin, or the pure one when told or when unbuilt."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

# (selector, compiled module, pure module, a function both export)
SELECTORS = [
    ("fastpath.codec", "fastpath._codec_c", "fastpath._codec_py", "account_to_dict"),
    ("fastpath.kernel", "fastpath._kernel_c", "fastpath._kernel_py", "decide"),
]


def _extensions_disabled() -> bool:
    return os.environ.get("TALLY_NO_EXTENSIONS", "") not in ("", "0")


@pytest.fixture(params=SELECTORS, ids=[s[0] for s in SELECTORS])
def selector(request: pytest.FixtureRequest) -> tuple[ModuleType, str, ModuleType, str]:
    name, compiled, pure, probe = request.param
    return importlib.import_module(name), compiled, importlib.import_module(pure), probe


@pytest.fixture
def reload(
    monkeypatch: pytest.MonkeyPatch, selector: tuple[ModuleType, str, ModuleType, str]
) -> Iterator[Callable[[], ModuleType]]:
    module = selector[0]
    yield lambda: importlib.reload(module)
    # Put the environment back first, so that the module is left as the session found it.
    monkeypatch.undo()
    importlib.reload(module)


def test_compiled_twin_is_loaded_in_a_normal_build(selector) -> None:
    module, compiled_name, _, probe = selector
    if _extensions_disabled():
        pytest.skip("TALLY_NO_EXTENSIONS is set")
    compiled = importlib.import_module(compiled_name)
    assert compiled.__file__ is not None
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert module.IMPLEMENTATION == "c"
    assert getattr(module, probe) is getattr(compiled, probe)


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_no_extensions_variable_forces_the_pure_twin(monkeypatch, selector, reload, value) -> None:
    _, _, pure, probe = selector
    monkeypatch.setenv("TALLY_NO_EXTENSIONS", value)
    reloaded = reload()
    assert reloaded.IMPLEMENTATION == "py"
    assert getattr(reloaded, probe) is getattr(pure, probe)


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_variable_keeps_the_compiled_twin(
    monkeypatch, selector, reload, value
) -> None:
    _, compiled_name, _, probe = selector
    try:
        compiled = importlib.import_module(compiled_name)
    except ImportError:
        if _extensions_disabled():
            pytest.skip(f"TALLY_NO_EXTENSIONS is set and {compiled_name} is not built")
        raise
    monkeypatch.setenv("TALLY_NO_EXTENSIONS", value)
    reloaded = reload()
    assert reloaded.IMPLEMENTATION == "c"
    assert getattr(reloaded, probe) is getattr(compiled, probe)


def test_falls_back_to_the_pure_twin_when_not_built(monkeypatch, selector, reload) -> None:
    _, compiled_name, pure, probe = selector
    monkeypatch.delenv("TALLY_NO_EXTENSIONS", raising=False)
    # None in sys.modules makes the import raise ImportError, as a missing .so would.
    monkeypatch.setitem(sys.modules, compiled_name, None)
    reloaded = reload()
    assert reloaded.IMPLEMENTATION == "py"
    assert getattr(reloaded, probe) is getattr(pure, probe)
