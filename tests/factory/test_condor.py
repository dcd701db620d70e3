"""The condor backend's pure parts: the submit description, its quoting, job ads, states.

The backend itself runs in the conformance suite where HTCondor is installed. Here the
quoting is checked twice: by HTCondor's own submit parser (``htcondor2.Submit`` of the
wheel, which expands macros without any daemon) and by a reader of the new-style rules
written from the manual, so every value comes back exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import htcondor2
import pytest

from pilotage.errors import BadInput, OperatorError, Transient
from pilotage.factory.backends.base import Launch
from pilotage.factory.backends.condor import (
    CondorBatch,
    SubmitSpec,
    ids_from_terse,
    job_ads,
    observed_from_condor,
    quote_arguments,
    quote_environment,
    submit_description,
)
from pilotage.factory.pilots import Observed, PilotState

AWKWARD = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "'''",
    '""',
    "$HOME and $(Cluster)",
    "",
    "tab\there",
    "ünïcode",
]


def read_new_style(value: str) -> list[str]:
    """Split a new-style ``arguments`` value as HTCondor does (the manual's rules)."""
    assert value.startswith('"') and value.endswith('"'), value
    body = value[1:-1].replace('""', '"')
    words: list[str] = []
    i = 0
    while i < len(body):
        if body[i].isspace():
            i += 1
            continue
        word = ""
        while i < len(body) and not body[i].isspace():
            if body[i] == "'":
                i += 1
                while True:
                    if body[i] == "'" and body[i + 1 : i + 2] == "'":
                        word, i = word + "'", i + 2
                    elif body[i] == "'":
                        i += 1
                        break
                    else:
                        word, i = word + body[i], i + 1
            else:
                word, i = word + body[i], i + 1
        words.append(word)
    return words


def expanded(key: str, value: str) -> str:
    """``value`` after HTCondor's own submit parser has expanded its macros."""
    return str(htcondor2.Submit(f"{key} = {value}\nqueue 1\n").expand(key))


def test_arguments_come_back_exactly() -> None:
    text = quote_arguments(AWKWARD)
    assert read_new_style(expanded("arguments", text)) == AWKWARD


def test_environment_values_come_back_exactly() -> None:
    env = {f"V{i}": v for i, v in enumerate(AWKWARD)}
    words = read_new_style(expanded("environment", quote_environment(env)))
    assert dict(w.split("=", 1) for w in words) == env


def test_macros_are_not_expanded() -> None:
    assert "$(DOLLAR)(Cluster)" in quote_arguments(["$(Cluster)"])
    assert expanded("arguments", quote_arguments(["$(Cluster)"])) == "\"'$(Cluster)'\""


@pytest.mark.parametrize("bad", ["line\nbreak", "carriage\rreturn", "nul\x00"])
def test_line_breaks_are_refused(bad: str) -> None:
    with pytest.raises(BadInput, match="line break"):
        quote_arguments([bad])
    with pytest.raises(BadInput, match="environment variable TOKEN"):
        quote_environment({"TOKEN": bad})


def test_a_bad_environment_name_is_refused() -> None:
    with pytest.raises(BadInput, match="'A B'"):
        quote_environment({"A B": "x"})


def test_the_submit_description() -> None:
    spec = SubmitSpec(
        executable="/srv/pilots/pilot-abc.sh",
        log_dir="/srv/pilots",
        count=3,
        name="pilot",
        walltime_s=7200,
        env={"PILOTAGE_PILOT_TOKEN": "eyJ.x.y", "GREETING": "a b"},
        requirements='OpSys == "LINUX"',
        cpus=4,
        memory_mb=8192,
        disk_mb=100,
    )
    text = submit_description(spec)
    lines = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    assert lines["executable"] == "/srv/pilots/pilot-abc.sh"
    assert lines["environment"] == "\"GREETING='a b' PILOTAGE_PILOT_TOKEN='eyJ.x.y'\""
    assert "arguments" not in lines
    assert lines["output"] == "/srv/pilots/$(Cluster).$(Process).out"
    assert lines["error"] == "/srv/pilots/$(Cluster).$(Process).err"
    assert lines["requirements"] == 'OpSys == "LINUX"'
    assert (lines["request_cpus"], lines["request_memory"], lines["request_disk"]) == (
        "4",
        "8192",
        "102400",
    )
    assert lines["periodic_remove"].endswith("> 7200")
    assert text.endswith("queue 3\n")
    # HTCondor's own parser reads it whole.
    submit = htcondor2.Submit(text)
    assert submit.expand("output") == "/srv/pilots/1.0.out"  # the macros are its own
    assert submit.expand("request_cpus") == "4"


def test_a_log_dir_with_a_line_break_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="log_dir"):
        CondorBatch({"log_dir": f"{tmp_path}/a\nqueue 100"})


def test_parameters_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown parameter 'sched'"):
        CondorBatch({"log_dir": str(tmp_path), "sched": "ap1"})
    with pytest.raises(BadInput, match="'cpus' must be an integer"):
        CondorBatch({"log_dir": str(tmp_path), "cpus": "4"})


def test_the_executable_holds_no_secret(tmp_path: Path) -> None:
    batch = CondorBatch({"log_dir": str(tmp_path)})
    launch = Launch(script="echo hi", env={"PILOTAGE_PILOT_TOKEN": "secret-token"})
    path = batch._executable(launch)
    assert path == batch._executable(launch)  # one file per distinct script
    assert "echo hi" in path.read_text() and "secret-token" not in path.read_text()
    assert re.fullmatch(r"pilot-[0-9a-f]{32}\.sh", path.name)


def test_ids_from_terse_output() -> None:
    assert ids_from_terse("12.0 - 12.2\n") == ["12.0", "12.1", "12.2"]
    assert ids_from_terse("7.0 - 7.0\n") == ["7.0"]
    assert ids_from_terse("") == []
    with pytest.raises(OperatorError):
        ids_from_terse("12.0 - 13.1\n")


#: What ``condor_q -json -attributes ...`` prints (its own layout: commas on their own lines).
CONDOR_Q = """[
{
  "ClusterId": 12,
  "JobStatus": 1,
  "ProcId": 0
}
,
{
  "ClusterId": 12,
  "HoldReason": "Error from slot1@wn7: Failed to execute '/srv/pilot.sh': Permission denied",
  "JobStatus": 5,
  "ProcId": 1
}
,
{
  "ClusterId": 12,
  "JobStatus": 2,
  "ProcId": 2
}
,
{
  "ClusterId": 13,
  "ExitBySignal": false,
  "ExitCode": 3,
  "JobStatus": 4,
  "ProcId": 0
}
]
"""


def test_job_ads_from_condor_q() -> None:
    ads = job_ads(CONDOR_Q)
    assert list(ads) == ["12.0", "12.1", "12.2", "13.0"]
    seen = {i: observed_from_condor(ad) for i, ad in ads.items()}
    assert seen["12.0"] == Observed(PilotState.IDLE)
    assert seen["12.1"].state is PilotState.HELD
    assert "Permission denied" in seen["12.1"].reason  # the hold reason is kept
    assert seen["12.2"] == Observed(PilotState.RUNNING)
    assert seen["13.0"] == Observed(PilotState.FAILED, "exit code 3")


def test_no_match_is_no_output() -> None:
    assert job_ads("") == {} and job_ads("\n") == {}
    with pytest.raises(Transient):
        job_ads("[{")
    with pytest.raises(Transient):
        job_ads('{"ClusterId": 1}')


@pytest.mark.parametrize(
    ("ad", "expected"),
    [
        ({"JobStatus": 1}, Observed(PilotState.IDLE)),
        ({"JobStatus": 2}, Observed(PilotState.RUNNING)),
        ({"JobStatus": 3}, Observed(PilotState.FINISHED, "removed")),
        ({"JobStatus": 4, "ExitCode": 0}, Observed(PilotState.FINISHED, "exit code 0")),
        ({"JobStatus": 4, "ExitCode": 21}, Observed(PilotState.FAILED, "exit code 21")),
        (
            {"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9},
            Observed(PilotState.FAILED, "signal 9"),
        ),
        (
            {"JobStatus": 5, "HoldReason": "via condor_hold"},
            Observed(PilotState.HELD, "via condor_hold"),
        ),
        ({"JobStatus": 5}, Observed(PilotState.HELD, "held")),
        ({"JobStatus": 6}, Observed(PilotState.RUNNING)),
        ({"JobStatus": 7}, Observed(PilotState.RUNNING)),
        ({"JobStatus": 99}, Observed(PilotState.FAILED, "JobStatus 99")),
    ],
)
def test_state_mapping(ad: dict[str, object], expected: Observed) -> None:
    assert observed_from_condor(ad) == expected


def test_without_htcondor_the_commands_are_an_operator_error(tmp_path: Path) -> None:
    """Where condor_submit is missing, a submission says what to install."""
    batch = CondorBatch({"log_dir": str(tmp_path)})
    batch.env["PATH"] = str(tmp_path / "empty")
    with pytest.raises(OperatorError, match="needs condor_submit"):
        batch.submit(1, Launch(script="true"))
    assert batch.status(["not-an-id"]) == {
        "not-an-id": Observed(PilotState.FAILED, "unknown to the backend")
    }
