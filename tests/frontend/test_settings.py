"""The frontend's settings file: typed, and a bad key refused by name."""

from __future__ import annotations

import pytest

from pilotage.errors import OperatorError
from pilotage.frontend.pressure import RemoveExcess
from pilotage.frontend.settings import parse_frontend_config
from pilotage.frontend.switch import VoSwitchMode


def test_settings_become_the_pressure_config() -> None:
    config = parse_frontend_config(
        {
            "frontend": {"name": "vo", "switch": "required"},
            "pressure": {
                "max_idle": 4,
                "idle_curb": 2,
                "remove_excess": "idle",
                "entries": {"beta": {"max_idle": 1, "idle_curb": 1}},
            },
        }
    )
    pressure = config.pressure_config()
    assert pressure.entry.max_idle == 4 and pressure.limits_of("beta").max_idle == 1
    assert pressure.remove_excess is RemoveExcess.IDLE
    assert config.frontend.vo_switch_mode() is VoSwitchMode.REQUIRED


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"frontend": {"nmae": "vo"}}, "f.toml: frontend.nmae: unknown key"),
        ({"pressure": {"max_idle": 1, "idle_curb": 3}}, "idle_curb (3) exceeds max_idle (1)"),
        ({"frontend": {"switch": "sometimes"}}, "frontend.switch"),
        ({"frontend": {"token_lifetime_s": 10**7}}, "frontend.token_lifetime_s"),
    ],
)
def test_bad_settings_are_refused_by_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(OperatorError) as caught:
        parse_frontend_config(data, "f.toml")
    assert message in caught.value.message
