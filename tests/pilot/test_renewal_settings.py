"""When the agent renews a job's credential and when it gives up: pure timing, and the
``--renewal KEY=VALUE`` flag with each bad value refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.errors import OperatorError
from pilotage.pilot.__main__ import build_parser, config_from_args
from pilotage.pilot.renewal import Grant, RenewalSettings, next_renewal, stop_time

BASE = ["--server", "https://pool.example", "--ca", "ca.pem", "--token", "token"]


def test_renewal_comes_at_two_thirds_or_the_margin_whichever_is_first() -> None:
    s = RenewalSettings()
    assert next_renewal(1000.0, 1000.0 + 3600, s) == pytest.approx(1000.0 + 2400)
    # A 12 h proxy: 2/3 would leave 4 h; it is renewed at 2/3 all the same.
    assert next_renewal(0.0, 43200.0, s) == pytest.approx(28800.0)
    # A 10 min proxy: renewed 300 s before its end, not at 2/3 (200 s before).
    assert next_renewal(0.0, 600.0, s) == pytest.approx(300.0)
    # Shorter than the margin: never in a loop, at the earliest half of the fraction.
    assert next_renewal(0.0, 60.0, s) == pytest.approx(20.0)
    assert next_renewal(50.0, 40.0, s) == pytest.approx(50.0)  # already over: at once
    assert stop_time(3600.0, s) == pytest.approx(3480.0)


def test_the_flag_sets_each_value_and_the_agent_prints_them(tmp_path: Path) -> None:
    flags = ["--renewal", "fraction=0.5", "--renewal=expiry_margin_s=30", "--switch", "x"]
    args = build_parser().parse_args([*BASE, "--workdir", str(tmp_path / "w"), *flags])
    args.switch = ()  # the switch's own check (cryptography) is not what is tested here
    config = config_from_args(args)
    assert (config.renewal.fraction, config.renewal.expiry_margin_s) == (0.5, 30.0)
    assert config.renewal.kill_grace_s == RenewalSettings().kill_grace_s
    assert RenewalSettings.parse(["retry_s=5"]).describe() == (
        "fraction=0.666667,renew_margin_s=300,retry_s=5,expiry_margin_s=120,kill_grace_s=10"
    )


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("fraction", "is not KEY=VALUE, KEY one of expiry_margin_s, fraction"),
        ("lifetime=3", "is not KEY=VALUE, KEY one of"),
        ("retry_s=soon", "'soon' is not a number"),
        ("fraction=1", "fraction=1.0 must be between 0 and 1"),
        ("fraction=0", "fraction=0.0 must be between 0 and 1"),
        ("expiry_margin_s=-1", "expiry_margin_s=-1.0 must not be negative"),
        ("kill_grace_s=-5", "kill_grace_s=-5.0 must not be negative"),
        ("retry_s=0", "retry_s=0.0 must be positive"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path: Path, item: str, says: str) -> None:
    with pytest.raises(OperatorError, match="--renewal") as caught:
        RenewalSettings.parse([item])
    assert says in caught.value.message
    args = build_parser().parse_args([*BASE, "--workdir", str(tmp_path / "w"), "--renewal", item])
    with pytest.raises(OperatorError):
        config_from_args(args)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ({"chain_pem": "x", "not_after": "soon", "identity": "/CN=A", "renewal_key": "k"},
         "not_after"),
        ({"chain_pem": "x", "not_after": True, "identity": "/CN=A", "renewal_key": "k"},
         "not_after"),
        ({"chain_pem": "x", "not_after": 1.0, "identity": "/CN=A"}, "renewal_key"),
    ],
)  # fmt: skip
def test_a_malformed_release_is_refused(body: object, field: str | None) -> None:
    with pytest.raises(OperatorError) as caught:
        Grant.from_wire(body)
    assert (field or "not an object") in caught.value.message


def test_a_release_keeps_its_key_out_of_its_repr() -> None:
    grant = Grant.from_wire(
        {"chain_pem": "x", "not_after": 5, "identity": "/CN=A", "renewal_key": "secret-key"}
    )
    assert grant.not_after == 5.0 and "secret-key" not in repr(grant)
