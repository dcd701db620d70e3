"""The agent's start-up flags that carry the site's policy (``--single-user``,
``--bypass-on-error``): parsed into its settings and its slot ad, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.pilot.__main__ import build_parser, config_from_args
from pilotage.pilot.config import AgentConfig

BASE = ["--server", "https://pool.example", "--ca", "ca.pem", "--token", "token"]


def config(tmp_path: Path, *flags: str) -> AgentConfig:
    args = build_parser().parse_args([*BASE, "--workdir", str(tmp_path / "w"), *flags])
    return config_from_args(args)


def test_by_default_multi_user_and_no_bypass(tmp_path: Path) -> None:
    c = config(tmp_path)
    assert (c.single_user, c.bypass_on_error) == (None, False)
    assert "PilotageSingleUser" not in c.attrs
    assert "bypass_on_error=no" in c.describe()


def test_a_single_user_pilot_says_so_in_its_ad(tmp_path: Path) -> None:
    c = config(tmp_path, "--single-user", "*", "--bypass-on-error", "yes")
    assert (c.single_user, c.bypass_on_error) == ("*", True)
    assert c.attrs["PilotageSingleUser"] == "true"
    assert "single_user='*'" in c.describe()
    assert config(tmp_path, "--single-user=alice").single_user == "alice"


@pytest.mark.parametrize(
    "flags",
    [["--single-user", "al ice"], ["--single-user", ""], ["--bypass-on-error", "maybe"]],
)
def test_bad_values_are_refused(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        config(tmp_path, *flags)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--single-user" in err or "--bypass-on-error" in err
