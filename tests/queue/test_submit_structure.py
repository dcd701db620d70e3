"""if/elif/else/endif, include, and the refusals of the HTCondor forms pilotage does not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.queue.spec import JobSpec
from pilotage.queue.submit import SubmitError, parse_submit


def jobs_of(text: str, iwd: Path) -> list[JobSpec]:
    return parse_submit(text, source="job.sub", iwd=iwd, cluster_id=3, owner="alice")


def refused(text: str, iwd: Path, where: str, *names: str) -> str:
    with pytest.raises(SubmitError) as info:
        jobs_of(text, iwd)
    message = str(info.value)
    assert message.startswith(where), message
    for name in names:
        assert name in message, message
    return message


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("true", "a"),
        ("no", "c"),
        ("1", "a"),
        ("0", "c"),
        ("$(EMPTY:)", "c"),
        ("$(ONE) == 1", "a"),
        ("defined ONE", "a"),
        ("! defined ONE", "c"),
        ("version >= 8.1.6", "a"),
        ("version < 8.0", "c"),
    ],
)
def test_if_else_picks_one_branch(tmp_path: Path, condition: str, expected: str) -> None:
    text = (
        f"ONE = 1\nexecutable = run\nenvironment = ONE=$(ONE)\nif {condition}\n arguments = a\n"
        "elif false\n arguments = b\nelse\n arguments = c\nendif\nqueue\n"
    )
    assert jobs_of(text, tmp_path)[0].arguments == [expected]


def test_elif_is_taken_when_the_if_is_not(tmp_path: Path) -> None:
    text = "executable = run\nif false\narguments = a\nelif true\narguments = b\nendif\nqueue\n"
    assert jobs_of(text, tmp_path)[0].arguments == ["b"]


def test_nested_if_inside_a_false_branch_is_skipped(tmp_path: Path) -> None:
    text = (
        "executable = run\nif false\nif true\narguments = a\nendif\nnonsense here\nendif\nqueue\n"
    )
    assert jobs_of(text, tmp_path)[0].arguments == []


@pytest.mark.parametrize(
    ("text", "where", "named"),
    [
        ("executable = run\nif true\nqueue\n", "job.sub, line 2", "no 'endif'"),
        ("executable = run\nendif\nqueue\n", "job.sub, line 2", "without an 'if'"),
        (
            "executable = run\nif true\nelse\nelse\nendif\nqueue\n",
            "job.sub, line 4",
            "second 'else'",
        ),
        ("executable = run\nif blue sky\nendif\nqueue\n", "job.sub, line 2", "cannot decide"),
        ("executable = run\ninclude : make-commands.sh |\nqueue\n", "job.sub, line 2", "command"),
        ("executable = run\ninclude command : ls\nqueue\n", "job.sub, line 2", "command"),
        ("executable = run\ninclude : nothere.sub\nqueue\n", "job.sub, line 2", "nothere.sub"),
    ],
)
def test_structure_errors_name_the_line(tmp_path: Path, text: str, where: str, named: str) -> None:
    refused(text, tmp_path, where, named)


def test_include_splices_commands_and_errors_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "common.sub").write_text("request_cpus = 4\n\narguments = $(x)\n")
    job = jobs_of("x = 1\nexecutable = run\ninclude : common.sub\nqueue\n", tmp_path)[0]
    assert (job.request_cpus, job.arguments) == (4, ["1"])
    (tmp_path / "bad.sub").write_text("# a comment\nrequest_cpus = many\n")
    refused(
        "executable = run\ninclude : bad.sub\nqueue\n", tmp_path, f"{tmp_path / 'bad.sub'}, line 2"
    )


def test_an_include_loop_is_stopped(tmp_path: Path) -> None:
    (tmp_path / "self.sub").write_text("include : self.sub\n")
    refused(
        "executable = run\ninclude : self.sub\nqueue\n",
        tmp_path,
        str(tmp_path / "self.sub"),
        "includes",
    )


def test_defaults_environment_and_dollar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTAGE_TEST_VAR", "from-env")
    text = (
        "executable = run\narguments = $(nope:fallback) $ENV(PILOTAGE_TEST_VAR) "
        "$ENV(PILOTAGE_NOT_SET:dflt) $(DOLLAR)(Cpus) $INT(Process,%02d)\nqueue 2\n"
    )
    jobs = jobs_of(text, tmp_path)
    assert jobs[1].arguments == ["fallback", "from-env", "dflt", "$(Cpus)", "01"]


def test_queue_slices_keep_the_item_index(tmp_path: Path) -> None:
    text = "executable = run\narguments = $(Item) $(ItemIndex)\nqueue in [1::2] a, b, c, d\n"
    assert [j.arguments for j in jobs_of(text, tmp_path)] == [["b", "1"], ["d", "3"]]


def test_queue_from_inline_row_on_the_queue_line(tmp_path: Path) -> None:
    text = "executable = run\narguments = $(args)\nqueue infile,args from ( file1, -a -b 26 )\n"
    (job,) = jobs_of(text, tmp_path)
    assert job.arguments == ["-a", "-b", "26"]


def test_matching_dirs_only(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2.txt").write_text("")
    text = "executable = run\narguments = $(x)\nqueue x matching dirs d*\n"
    assert [j.arguments for j in jobs_of(text, tmp_path)] == [["d1"]]


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("max_retries = lots", "max_retries"),
        ("success_exit_code = 300", "success_exit_code"),
        ("periodic_hold = (", "periodic_hold"),
        ('transfer_output_remaps = "a.txt"', "name = destination"),
        ('transfer_output_remaps = "../a = b"', "inside the job's directory"),
        ("accounting_group = grp with space", "accounting_group"),
        ("notify_user = not-an-address", "mail address"),
        ("notification = sometimes", "notification"),
        ("log_xml = true", "XML"),
        ('batch_name = "a"b"', "batch_name"),
    ],
)
def test_new_commands_refuse_bad_values(tmp_path: Path, statement: str, named: str) -> None:
    refused(f"executable = run\n{statement}\nqueue\n", tmp_path, "job.sub, line 2", named)


def test_on_exit_remove_with_max_retries_is_refused(tmp_path: Path) -> None:
    text = "executable = run\nmax_retries = 2\non_exit_remove = true\nqueue\n"
    refused(text, tmp_path, "job.sub, line 2", "on_exit_remove")
