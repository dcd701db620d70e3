"""Entries files: TOML to typed entries, and bad files refused naming the key."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest

from pilotage.errors import OperatorError
from pilotage.factory.entries import SwitchMode, load_config
from pilotage.factory.sitepolicy import Answers

GOOD = """
[factory]
name = "factory-1"
cycle_s = 5

[[entry]]
name = "cluster-a"
backend = "slurm"
params = { partition = "debug" }

[entry.attrs]
site = "SITE_A"
cpus = 4
memory_mb = 8192
max_walltime_s = 7200
switch = "setuid"
extra = { HasCvmfs = true }

[entry.policy]
multi_user = "yes"
setuid = "require"
log_only = "no"
bypass_on_error = "no"

[entry.limits]
max_idle = 20
max_running = 200
max_held = 10
per_frontend = { max_idle = 10, max_running = 100, max_held = 5 }

[entry.throttle]
submits_per_cycle = 3

[[entry]]
name = "laptop"
attrs = { site = "HOME" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entries.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_good_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.factory.name == "factory-1"
    assert config.factory.cycle_s == 5.0
    a, laptop = config.entry
    assert (a.name, a.backend, a.params) == ("cluster-a", "slurm", {"partition": "debug"})
    assert (a.attrs.cpus, a.attrs.memory_mb, a.attrs.switch) == (4, 8192, SwitchMode.SETUID)
    assert a.policy.answers(datetime.date(2026, 1, 1)) == Answers("yes", "require", "no", "no")
    assert a.limits.per_frontend.max_running == 100
    assert (a.throttle.submits_per_cycle, a.throttle.removals_per_cycle) == (3, 20)
    assert laptop.backend == "local"
    assert laptop.attrs.switch is SwitchMode.NONE
    assert set(config.by_name()) == {"cluster-a", "laptop"}


def test_the_ad_reads_like_a_slot_ad(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, GOOD)).entry[0]
    ad = a.ad()
    assert ad["EntryName"] == "cluster-a"
    assert (ad["Site"], ad["Cpus"], ad["Memory"], ad["TimeToLive"]) == ("SITE_A", 4, 8192, 7200)
    assert (ad["HasSwitch"], ad["SwitchMode"]) == (True, "setuid")
    assert (ad["PolicySetuid"], ad["PolicyLogOnly"]) == ("require", "no")
    assert ad["HasCvmfs"] is True


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("max_idle = 20", "max_idle = -1", "entry 'cluster-a': limits.max_idle: "),
        ("cpus = 4", "cpus = 4\nfrobs = 1", "entry 'cluster-a': attrs.frobs: unknown key"),
        ('setuid = "require"', 'setuid = "maybe"', "entry 'cluster-a': policy.setuid: "),
        ('switch = "setuid"', 'switch = "sudo"', "entry 'cluster-a': attrs.switch: "),
        ('backend = "slurm"', 'backend = "pbs"', "entry 'cluster-a': backend: "),
        ('name = "laptop"', 'name = "cluster-a"', "entry name 'cluster-a' is used twice"),
        ('name = "laptop"', 'name = "bad name!"', "entry 'bad name!': name: String should match"),
        ("max_running = 100", "max_running = 1000", "per_frontend.max_running (1000) exceeds"),
        ("cycle_s = 5", "cycle_s = 0", "factory.cycle_s: "),
        ('attrs = { site = "HOME" }', "", "entry 'laptop': attrs: Field required"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, replace: str, by: str, message: str) -> None:
    assert replace in GOOD
    path = write(tmp_path, GOOD.replace(replace, by, 1))
    with pytest.raises(OperatorError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert message in info.value.message


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="is not valid TOML"):
        load_config(write(tmp_path, "[[entry]\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="cannot read entries file"):
        load_config(tmp_path / "absent.toml")
