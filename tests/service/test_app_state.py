"""app.state: Starlette's State whose values are also plain attributes (read per request)."""

from __future__ import annotations

import pytest

from service.app import create_app


@pytest.fixture
def state(settings):
    return create_app(settings).state


def test_the_services_are_plain_attributes(state):
    # Found by the normal attribute lookup, not State.__getattr__.
    for name in ("tokens", "clients", "limiter", "accounts", "settings", "db"):
        assert name in vars(state), name
        assert vars(state)[name] is state._state[name]


def test_setting_replacing_and_deleting_keep_both_in_step(state):
    state.extra = 1
    assert state.extra == 1 and state._state["extra"] == 1
    state.extra = 2
    assert state.extra == 2 and state._state["extra"] == 2
    del state.extra
    assert "extra" not in state._state and "extra" not in vars(state)
    with pytest.raises(AttributeError):
        state.extra  # noqa: B018
