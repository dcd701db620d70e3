"""The switch per entry: the VO's mode against the site's questionnaire answers."""

from __future__ import annotations

from typing import Any

import pytest

from pilotage.factory.entries import parse_config
from pilotage.frontend.switch import VoSwitchMode, switch_for

R, OPT, N = VoSwitchMode.REQUIRED, VoSwitchMode.OPTIONAL, VoSwitchMode.NEVER


def ad(switch: str = "none", **policy: str) -> dict[str, object]:
    entry: dict[str, Any] = {
        "name": "e",
        "attrs": {"site": "S", "switch": switch},
        "policy": policy,
    }
    return parse_config({"entry": [entry]}).entry[0].ad()


@pytest.mark.parametrize(
    ("vo", "entry", "expected"),
    [
        (R, ad("setuid"), R),
        (OPT, ad("setuid"), OPT),
        (N, ad("setuid"), N),
        (R, ad("none"), None),
        (OPT, ad("none"), N),
        (N, ad("none"), N),
        (R, ad("log-only", log_only="no"), None),
        (OPT, ad("log-only", log_only="no"), N),
        (R, ad("log-only", log_only="allow"), R),
        (R, ad("setuid", setuid="no"), None),
        (N, ad("setuid", setuid="require"), None),
        (OPT, ad("none", setuid="require"), None),
        (R, ad("namespace"), R),
        (R, ad("setuid", multi_user="no"), None),
        (N, ad("none", multi_user="no"), None),
    ],
)
def test_decisions(
    vo: VoSwitchMode, entry: dict[str, object], expected: VoSwitchMode | None
) -> None:
    decision = switch_for(vo, entry)
    assert decision.mode is expected, decision.reason
    assert decision.usable is (expected is not None)
    assert decision.reason
