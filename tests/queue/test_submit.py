"""Tests of the submit language: commands, quoting, macros, queue forms and every refusal."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from pilotage.errors import BadInput
from pilotage.queue.spec import JobSpec
from pilotage.queue.submit import SubmitError, check_inputs, parse_submit


def parse(text: str, iwd: Path) -> list[JobSpec]:
    """Parse ``text`` (dedented; its first line is line 1) as job.sub of cluster 42 by alice."""
    return parse_submit(
        textwrap.dedent(text).lstrip("\n"), source="job.sub", iwd=iwd, cluster_id=42, owner="alice"
    )


def one(text: str, iwd: Path) -> JobSpec:
    jobs = parse(text, iwd)
    assert len(jobs) == 1
    return jobs[0]


def refused(text: str, iwd: Path, line: int | None, *names: str) -> SubmitError:
    """Assert that ``text`` is refused at ``line`` with a message naming every one of ``names``."""
    with pytest.raises(SubmitError) as info:
        parse(text, iwd)
    error = info.value
    assert error.line == line
    prefix = "job.sub:" if line is None else f"job.sub, line {line}:"
    assert str(error).startswith(prefix), str(error)
    for name in names:
        assert name in str(error), (name, str(error))
    return error


# --- basics ----------------------------------------------------------------------------


def test_minimal_description_gives_one_job_with_defaults(tmp_path: Path) -> None:
    job = one("executable = run.sh\nqueue\n", tmp_path)
    assert job.executable == str(tmp_path / "run.sh")
    assert job.transfer_executable is True
    assert job.sandbox_executable == "run.sh"
    assert (job.request_cpus, job.request_memory_mb, job.request_disk_mb) == (1, 128, 100)
    assert job.request_gpus == 0
    assert job.arguments == []
    assert job.environment == {}
    assert job.iwd == str(tmp_path)
    assert job.transfer_output_files is None
    assert job.input is job.output is job.error is job.log is None


def test_command_names_and_queue_are_case_insensitive(tmp_path: Path) -> None:
    job = one(
        """
        EXECUTABLE = run.sh
        Request_Cpus = 4
        ReQuEsT_mEmOrY = 1G
        Queue
        """,
        tmp_path,
    )
    assert (job.request_cpus, job.request_memory_mb) == (4, 1024)


def test_comments_blank_lines_and_continuations(tmp_path: Path) -> None:
    job = one(
        """
        # a comment
            # an indented comment

        executable = run.sh
        arguments = one \\
                    two \\
            three
        queue
        """,
        tmp_path,
    )
    assert job.arguments == ["one", "two", "three"]


def test_a_hash_inside_a_value_is_not_a_comment(tmp_path: Path) -> None:
    job = one('executable = run.sh\narguments = "#1 x#2"\nqueue\n', tmp_path)
    assert job.arguments == ["#1", "x#2"]


def test_error_line_after_a_continuation_is_the_statement_first_line(tmp_path: Path) -> None:
    text = """
        executable = run.sh
        arguments = a \\
            b
        request_cpus = \\
            many
        queue
        """
    refused(text, tmp_path, 4, "request_cpus", "many")


def test_a_later_command_overrides_an_earlier_one(tmp_path: Path) -> None:
    job = one("executable = a.sh\nexecutable = b.sh\nqueue\n", tmp_path)
    assert job.executable.endswith("/b.sh")


def test_an_empty_value_unsets_the_command(tmp_path: Path) -> None:
    job = one("executable = run.sh\narguments = a b\narguments =\nqueue\n", tmp_path)
    assert job.arguments == []


def test_submit_error_is_bad_input_and_carries_the_line(tmp_path: Path) -> None:
    error = refused("executable = run.sh\nrequest_cpus = x\nqueue\n", tmp_path, 2)
    assert isinstance(error, BadInput)
    assert error.source == "job.sub"
    assert error.http_status == 422


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a b  c", ["a", "b", "c"]),
        ("a\tb", ["a", "b"]),
        ('say \\"hi\\"', ["say", '"hi"']),
        ("it's", ["it's"]),
        ('"3 simple arguments"', ["3", "simple", "arguments"]),
        ("\"one 'two with spaces' 3\"", ["one", "two with spaces", "3"]),
        (
            "\"one \"\"two\"\" 'spacey ''quoted'' argument'\"",
            ["one", '"two"', "spacey 'quoted' argument"],
        ),
        ("\"''\"", [""]),
        ("\"a '' b\"", ["a", "", "b"]),
        ("\"x'y z'w\"", ["xy zw"]),
        ('"  "', []),
        ('""', []),
        ('"\'a ""b""\'"', ['a "b"']),
    ],
)
def test_arguments(tmp_path: Path, value: str, expected: list[str]) -> None:
    job = one(f"executable = run.sh\narguments = {value}\nqueue\n", tmp_path)
    assert job.arguments == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('"a b', "closing double quote"),
        ('"a"b"', "doubled"),
        ('"\'a b"', "single quote"),
        ('a"b', "old-style"),
    ],
)
def test_bad_arguments_are_refused_with_the_line(tmp_path: Path, value: str, named: str) -> None:
    refused(f"executable = run.sh\n\narguments = {value}\nqueue\n", tmp_path, 3, "arguments", named)


# --- environment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\"A=1 B='x y'\"", {"A": "1", "B": "x y"}),
        ('"C=""q"" D="', {"C": '"q"', "D": ""}),
        ("\"E='it''s' F=a=b\"", {"E": "it's", "F": "a=b"}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        ("A=1; B=x y ;", {"A": "1", "B": "x y"}),
        ('"A=1 A=2"', {"A": "2"}),
    ],
)
def test_environment(tmp_path: Path, value: str, expected: dict[str, str]) -> None:
    job = one(f"executable = run.sh\nenvironment = {value}\nqueue\n", tmp_path)
    assert job.environment == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('"A=1 B"', "'B' is not NAME=value"),
        ('"1A=2"', "'1A'"),
        ("A=1;=2", "''"),
        ('"A=1', "closing double quote"),
        ("A=1;B-C=2", "'B-C'"),
    ],
)
def test_bad_environment_is_refused_with_the_line(tmp_path: Path, value: str, named: str) -> None:
    refused(
        f"executable = run.sh\nenvironment = {value}\nqueue\n", tmp_path, 2, "environment", named
    )


# --- sizes and numbers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mb"),
    [
        ("512", 512),
        ("1K", 1),
        ("2048k", 2),
        ("2049KB", 3),
        ("100MB", 100),
        ("100m", 100),
        ("1.5G", 1536),
        ("2gb", 2048),
        ("4 GB", 4096),
        ("1T", 1024 * 1024),
        ("0.1M", 1),
    ],
)
def test_request_memory_units_round_up_to_mb(tmp_path: Path, value: str, mb: int) -> None:
    job = one(f"executable = run.sh\nrequest_memory = {value}\nqueue\n", tmp_path)
    assert job.request_memory_mb == mb


@pytest.mark.parametrize(
    ("value", "mb"),
    [("1000", 1), ("1024", 1), ("1025", 2), ("0", 0), ("500M", 500), ("2G", 2048), ("3kb", 1)],
)
def test_request_disk_plain_number_is_kb(tmp_path: Path, value: str, mb: int) -> None:
    job = one(f"executable = run.sh\nrequest_disk = {value}\nqueue\n", tmp_path)
    assert job.request_disk_mb == mb


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("request_memory", "lots"),
        ("request_memory", "0"),
        ("request_memory", "-5"),
        ("request_memory", "1.5X"),
        ("request_memory", "1 PB"),
        ("request_disk", "1PB"),
        ("request_disk", "2000T"),
        ("request_cpus", "0"),
        ("request_cpus", "-1"),
        ("request_cpus", "two"),
        ("request_cpus", "1.5"),
        ("request_gpus", "-1"),
        ("request_gpus", "x"),
        ("priority", "high"),
        ("transfer_executable", "maybe"),
    ],
)
def test_bad_numbers_are_refused_with_the_line(tmp_path: Path, command: str, value: str) -> None:
    refused(f"executable = run.sh\n{command} = {value}\nqueue\n", tmp_path, 2, command, value)


def test_cpus_gpus_priority(tmp_path: Path) -> None:
    job = one(
        "executable = run.sh\nrequest_cpus = 8\nrequest_gpus = 2\npriority = -5\nqueue\n",
        tmp_path,
    )
    assert (job.request_cpus, job.request_gpus, job.priority) == (8, 2, -5)


def test_a_bad_value_is_refused_even_when_overridden_later(tmp_path: Path) -> None:
    refused("executable = run.sh\nrequest_cpus = x\nrequest_cpus = 2\nqueue\n", tmp_path, 2, "'x'")


# --- requirements, rank and ad attributes ----------------------------------------------


def test_requirements_rank_and_attributes(tmp_path: Path) -> None:
    job = one(
        """
        executable = run.sh
        requirements = TARGET.Memory >= 2048 && stringListMember("x", TARGET.Tags)
        rank = TARGET.Cpus
        +ProjectName = "atlas"
        MY.Weight = 3 * 2
        +JobIndex = $(Process)
        queue
        """,
        tmp_path,
    )
    assert job.requirements == 'TARGET.Memory >= 2048 && stringListMember("x", TARGET.Tags)'
    assert job.rank == "TARGET.Cpus"
    assert job.attrs == {"ProjectName": '"atlas"', "Weight": "3 * 2", "JobIndex": "0"}


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("requirements = Memory >= ", "requirements"),
        ("rank = (Cpus", "rank"),
        ('+Project = "unterminated', "+Project"),
        ("MY.Weight = 1 2", "MY.Weight"),
        ("+Empty =", "+Empty"),
        ("+9lives = 1", "'9lives'"),
        ('+Owner = "bob"', "+Owner"),
        ("+Requirements = true", "requirements"),
        ("MY.RequestCpus = 4", "request_cpus"),
    ],
)
def test_bad_expressions_and_attributes(tmp_path: Path, statement: str, named: str) -> None:
    refused(f"executable = run.sh\n{statement}\nqueue\n", tmp_path, 2, named)


def test_attribute_expression_checked_after_macro_expansion(tmp_path: Path) -> None:
    refused("executable = run.sh\n+Tag = $(Item)\nqueue in (ok (bad)\n", tmp_path, 2, "+Tag")


# --- compatibility commands ------------------------------------------------------------


def test_compatibility_commands_are_accepted(tmp_path: Path) -> None:
    job = one(
        """
        universe = Vanilla
        should_transfer_files = IF_NEEDED
        when_to_transfer_output = ON_EXIT_OR_EVICT
        notification = Never
        getenv = False
        executable = run.sh
        queue
        """,
        tmp_path,
    )
    assert job.executable.endswith("run.sh")


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("universe = docker", "'docker'"),
        ("universe = grid", "vanilla"),
        ("should_transfer_files = sometimes", "should_transfer_files"),
        ("when_to_transfer_output = never", "when_to_transfer_output"),
        ("notification = loudly", "notification"),
        ("getenv = true", "environment"),
        ("getenv = PATH,HOME", "getenv"),
    ],
)
def test_bad_compatibility_commands(tmp_path: Path, statement: str, named: str) -> None:
    refused(f"executable = run.sh\n{statement}\nqueue\n", tmp_path, 2, named)


# --- unknown commands and bad lines ----------------------------------------------------


def test_unknown_command_suggests_the_closest(tmp_path: Path) -> None:
    error = refused("executable = run.sh\nrequst_cpus = 2\nqueue\n", tmp_path, 2)
    assert "unknown submit command 'requst_cpus' (did you mean request_cpus?)" in str(error)


def test_unknown_command_without_a_close_match(tmp_path: Path) -> None:
    error = refused("executable = run.sh\nfrobnicate = 2\nqueue\n", tmp_path, 2, "'frobnicate'")
    assert "did you mean" not in str(error)


def test_unknown_name_is_a_macro_when_referenced(tmp_path: Path) -> None:
    job = one("dataset = d1\nexecutable = run.sh\narguments = $(DataSet)\nqueue\n", tmp_path)
    assert job.arguments == ["d1"]


@pytest.mark.parametrize(
    "statement",
    ["executable run.sh", "just words", "= value", "request cpus = 2", "queue=3"],
)
def test_malformed_lines(tmp_path: Path, statement: str) -> None:
    text = f"executable = run.sh\n{statement}\nqueue\n"
    with pytest.raises(SubmitError) as info:
        parse(text, tmp_path)
    assert info.value.line == 2
    assert statement.split()[0].split("=")[0] in str(info.value) or "'='" in str(info.value)


# --- macros ----------------------------------------------------------------------------


def test_builtin_macros(tmp_path: Path) -> None:
    jobs = parse(
        """
        executable = run.sh
        arguments = $(Cluster) $(ClusterId) $(Process) $(ProcId) $(Owner) $(cluster)
        output = out.$(Cluster).$(Process)
        queue 2
        """,
        tmp_path,
    )
    assert [j.arguments for j in jobs] == [
        ["42", "42", "0", "0", "alice", "42"],
        ["42", "42", "1", "1", "alice", "42"],
    ]
    assert [j.output for j in jobs] == ["out.42.0", "out.42.1"]


def test_user_macros_are_recursive_and_looked_up_at_queue_time(tmp_path: Path) -> None:
    job = one(
        """
        executable = run.sh
        arguments = $(full)
        full = $(base)/$(leaf)
        base = /data
        leaf = file-$(Process)
        base = /store
        queue
        """,
        tmp_path,
    )
    assert job.arguments == ["/store/file-0"]


def test_commands_can_be_read_as_macros(tmp_path: Path) -> None:
    job = one(
        "executable = run.sh\nrequest_cpus = 6\narguments = -j $(request_cpus)\nqueue\n", tmp_path
    )
    assert job.arguments == ["-j", "6"]


def test_a_dollar_without_parenthesis_is_literal(tmp_path: Path) -> None:
    job = one("executable = run.sh\narguments = $HOME $ 5$\nqueue\n", tmp_path)
    assert job.arguments == ["$HOME", "$", "5$"]


@pytest.mark.parametrize(
    ("text", "line", "named"),
    [
        ("executable = run.sh\narguments = $(nothere)\nqueue\n", 2, "$(nothere)"),
        ("executable = run.sh\narguments = $(Item)\nqueue\n", 2, "queue ... in"),
        ("a = $(b)\nb = $(a)\nexecutable = run.sh\narguments = $(a)\nqueue\n", 2, "macro loop"),
        ("executable = run.sh\narguments = $(arguments)\nqueue\n", 2, "$(arguments)"),
        ("executable = run.sh\narguments = $$(Cpus)\nqueue\n", 2, "$$("),
        ("executable = run.sh\narguments = $(x y)\nqueue\n", 2, "$(x y)"),
        ("executable = run.sh\narguments = $FOO(x)\nqueue\n", 2, "$FOO(...)"),
        ("executable = run.sh\narguments = $Fz(x)\nqueue\n", 2, "$Fz(...)"),
        ("executable = run.sh\narguments = $ENV(PILOTAGE_NOPE_X)\nqueue\n", 2, "PILOTAGE_NOPE_X"),
        ("executable = run.sh\narguments = $INT(x\nqueue\n", 2, "no closing"),
        ("executable = run.sh\nx = a\narguments = $INT(x)\nqueue\n", 3, "not a number"),
        ("executable = run.sh\narguments = $CHOICE(9, a, b)\nqueue\n", 2, "outside"),
        ("executable = run.sh\narguments = $RANDOM_INTEGER(5, 1)\nqueue\n", 2, "min <= max"),
        ("x = $(undefined)\nexecutable = run.sh\narguments = $(x)\nqueue\n", 1, "$(undefined)"),
        ("process = 3\nexecutable = run.sh\nqueue\n", 1, "$(process)"),
        ("Owner = bob\nexecutable = run.sh\nqueue\n", 1, "Owner"),
    ],
)
def test_bad_macros(tmp_path: Path, text: str, line: int, named: str) -> None:
    refused(text, tmp_path, line, named)


def test_macro_loop_message_shows_the_chain(tmp_path: Path) -> None:
    text = "a = $(b)\nb = $(c)\nc = $(a)\nexecutable = run.sh\narguments = $(a)\nqueue\n"
    error = refused(text, tmp_path, 3)
    assert "$(a) -> $(b) -> $(c) -> $(a)" in str(error)


def test_macros_no_job_uses_are_never_expanded(tmp_path: Path) -> None:
    one("a = $(b)\nb = $(a)\nexecutable = run.sh\nqueue\n", tmp_path)


def test_a_reference_in_a_comment_does_not_make_a_macro(tmp_path: Path) -> None:
    text = "# arguments = $(sample)\nsample = x\nexecutable = run.sh\nqueue\n"
    refused(text, tmp_path, 2, "unknown submit command 'sample'")


# --- queue forms -----------------------------------------------------------------------


def test_multiple_queue_statements_continue_proc_ids(tmp_path: Path) -> None:
    jobs = parse(
        """
        executable = run.sh
        arguments = first $(Process)
        queue 2
        arguments = second $(Process)
        request_cpus = 2
        queue
        queue 0
        arguments = third $(ProcId)
        queue 1
        """,
        tmp_path,
    )
    assert [j.arguments for j in jobs] == [
        ["first", "0"],
        ["first", "1"],
        ["second", "2"],
        ["third", "3"],
    ]
    assert [j.request_cpus for j in jobs] == [1, 1, 2, 2]


def test_queue_in_list(tmp_path: Path) -> None:
    jobs = parse("executable = run.sh\narguments = $(Item)\nqueue in (a b, c,d)\n", tmp_path)
    assert [j.arguments for j in jobs] == [["a"], ["b"], ["c"], ["d"]]


def test_queue_named_variable_in_multiline_list(tmp_path: Path) -> None:
    jobs = parse(
        """
        executable = run.sh
        arguments = $(Process) $(energy)
        queue energy in (
            10 20
            # a comment inside the list
            30,40
        )
        """,
        tmp_path,
    )
    assert [j.arguments for j in jobs] == [["0", "10"], ["1", "20"], ["2", "30"], ["3", "40"]]


def test_queue_count_per_item(tmp_path: Path) -> None:
    jobs = parse("executable = run.sh\narguments = $(x)\nqueue 2 x in (a b)\n", tmp_path)
    assert [j.arguments for j in jobs] == [["a"], ["a"], ["b"], ["b"]]


def test_queue_from_inline_block_with_two_variables(tmp_path: Path) -> None:
    jobs = parse(
        """
        executable = run.sh
        arguments = --in $(infile) --seed $(seed)
        queue infile, seed from (
            a.dat, 1
            b.dat   2

            c.dat,3
        )
        """,
        tmp_path,
    )
    assert [j.arguments for j in jobs] == [
        ["--in", "a.dat", "--seed", "1"],
        ["--in", "b.dat", "--seed", "2"],
        ["--in", "c.dat", "--seed", "3"],
    ]


def test_queue_from_file_single_variable_keeps_the_whole_line(tmp_path: Path) -> None:
    (tmp_path / "items.txt").write_text("alpha beta\n\n  gamma  \n")
    jobs = parse("executable = run.sh\narguments = \"'$(Item)'\"\nqueue from items.txt\n", tmp_path)
    assert [j.arguments for j in jobs] == [["alpha beta"], ["gamma"]]


def test_queue_from_file_with_columns(tmp_path: Path) -> None:
    (tmp_path / "params.csv").write_text("1, x\n2 y\n3,z\n")
    jobs = parse(
        "executable = run.sh\narguments = $(n) $(tag)\nqueue n,tag from params.csv\n", tmp_path
    )
    assert [j.arguments for j in jobs] == [["1", "x"], ["2", "y"], ["3", "z"]]


def test_queue_from_file_is_relative_to_the_submit_directory(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("one\n")
    jobs = parse("executable = run.sh\ninitialdir = elsewhere\nqueue from lists/l.txt\n", tmp_path)
    assert len(jobs) == 1


def test_queue_count_from_a_macro(tmp_path: Path) -> None:
    jobs = parse("n = 3\nexecutable = run.sh\nqueue $(n)\n", tmp_path)
    assert len(jobs) == 3


def test_queue_variables_do_not_outlive_their_statement(tmp_path: Path) -> None:
    text = "executable = run.sh\narguments = $(x)\nqueue x in (a)\nqueue\n"
    refused(text, tmp_path, 2, "$(x)")


def test_queue_variable_overrides_a_user_macro(tmp_path: Path) -> None:
    jobs = parse(
        "x = dflt\nexecutable = run.sh\narguments = $(x)\nqueue x in (a)\nqueue\n", tmp_path
    )
    assert [j.arguments for j in jobs] == [["a"], ["dflt"]]


def test_item_values_are_not_expanded_again(tmp_path: Path) -> None:
    job = one("executable = run.sh\narguments = $(Item)\nqueue in ($(Process))\n", tmp_path)
    assert job.arguments == ["$(Process)"]


def test_an_empty_item_list_queues_nothing_from_that_statement(tmp_path: Path) -> None:
    jobs = parse("executable = run.sh\nqueue in ()\nqueue\n", tmp_path)
    assert len(jobs) == 1


@pytest.mark.parametrize(
    ("text", "line", "named"),
    [
        ("executable = run.sh\nqueue lots\n", 2, "'lots'"),
        ("executable = run.sh\nqueue -1\n", 2, "queue count"),
        ("executable = run.sh\nqueue 100001\n", 2, "100000"),
        ("executable = run.sh\nqueue 100000 x in (a b)\n", 2, "200000"),
        ("executable = run.sh\nqueue 3\nqueue 99998\n", 3, "100001"),
        ("executable = run.sh\nqueue x matching ../*.dat\n", 2, "inside the submit directory"),
        ("executable = run.sh\nqueue x in [1:2:0] a b\n", 2, "slice step"),
        ("executable = run.sh\nqueue Step in (a)\n", 2, "'Step'"),
        ("executable = run.sh\nqueue Process in (a)\n", 2, "'Process'"),
        ("executable = run.sh\nqueue 1x in (a)\n", 2, "'1x'"),
        ("executable = run.sh\nqueue a,b in (x y)\n", 2, "'from'"),
        ("executable = run.sh\nqueue x in (a b\n", 2, "not closed"),
        ("executable = run.sh\nqueue a,b from (x)\n", 2, "'x'"),
        ("executable = run.sh\nqueue x in (\na\nb\n", 2, "')'"),
        ("executable = run.sh\nqueue a,b from (\n1 2\n3\n)\n", 4, "'3'"),
        ("executable = run.sh\nqueue from nothere.txt\n", 2, "nothere.txt"),
        ("executable = run.sh\nqueue x from\n", 2, "file name"),
    ],
)
def test_bad_queue_statements(tmp_path: Path, text: str, line: int, named: str) -> None:
    refused(text, tmp_path, line, named)


def test_missing_items_file_is_named_by_absolute_path(tmp_path: Path) -> None:
    refused("executable = run.sh\nqueue from items.txt\n", tmp_path, 2, str(tmp_path / "items.txt"))


def test_bad_row_in_items_file_names_the_file_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("1 a\n\n2\n")
    text = "executable = run.sh\narguments = $(n) $(t)\nqueue n t from p.txt\n"
    refused(text, tmp_path, 3, f"{tmp_path / 'p.txt'}, line 3", "'2'", "n, t")


def test_items_file_must_be_text(tmp_path: Path) -> None:
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00")
    refused("executable = run.sh\nqueue from bin.dat\n", tmp_path, 2, "UTF-8")


def test_nul_bytes_are_refused(tmp_path: Path) -> None:
    refused("executable = run.sh\narguments = a\x00b\nqueue\n", tmp_path, 2, "NUL")


def test_an_item_that_breaks_a_job_field_is_refused_at_the_queue_line(tmp_path: Path) -> None:
    (tmp_path / "env.txt").write_text("fine\nbad\x00value\n")
    text = 'executable = run.sh\nenvironment = "V=$(Item)"\nqueue from env.txt\n'
    refused(text, tmp_path, 3, "job 1", "environment", "NUL")


def test_no_queue_statement(tmp_path: Path) -> None:
    refused("executable = run.sh\n", tmp_path, None, "no queue statement")


def test_no_jobs_queued(tmp_path: Path) -> None:
    refused("executable = run.sh\nqueue 0\n", tmp_path, None, "no jobs")


def test_no_executable(tmp_path: Path) -> None:
    refused("arguments = a\n\nqueue\n", tmp_path, 3, "executable")


def test_command_after_the_last_queue_is_refused(tmp_path: Path) -> None:
    refused("executable = run.sh\nqueue\narguments = late\n", tmp_path, 3, "'arguments'", "queue")


# --- paths -----------------------------------------------------------------------------


def test_sandbox_outputs_stay_relative(tmp_path: Path) -> None:
    job = one(
        """
        executable = run.sh
        output = logs/out.txt
        error = err.txt
        transfer_output_files = result.root, plots/ , summary.json
        queue
        """,
        tmp_path,
    )
    assert (job.output, job.error) == ("logs/out.txt", "err.txt")
    assert job.transfer_output_files == ["result.root", "plots/", "summary.json"]


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("output = /tmp/out.txt", "/tmp/out.txt"),
        ("error = ../err.txt", "../err.txt"),
        ("output = a/../../b", "a/../../b"),
        ("transfer_output_files = good.txt, /abs/bad.txt", "/abs/bad.txt"),
        ("transfer_output_files = ..", "'..'"),
    ],
)
def test_outputs_outside_the_sandbox_are_refused(
    tmp_path: Path, statement: str, named: str
) -> None:
    error = refused(f"executable = run.sh\n{statement}\nqueue\n", tmp_path, 2, named)
    assert "base name" in str(error)


def test_submit_host_paths_follow_initialdir(tmp_path: Path) -> None:
    job = one(
        """
        executable = bin/run.sh
        initialdir = runs/r1
        transfer_input_files = data.txt, /etc/hosts, ../shared/lib/, calib
        input = in/stdin.txt
        log = job.log
        queue
        """,
        tmp_path,
    )
    run = tmp_path / "runs" / "r1"
    assert job.iwd == str(run)
    assert job.executable == str(tmp_path / "bin" / "run.sh")
    assert job.transfer_input_files == [
        str(run / "data.txt"),
        "/etc/hosts",
        str(tmp_path / "runs" / "shared" / "lib") + "/",
        str(run / "calib"),
        str(run / "in" / "stdin.txt"),
    ]
    assert job.input == "stdin.txt"
    assert job.log == str(run / "job.log")


def test_absolute_initialdir_and_per_job_initialdir(tmp_path: Path) -> None:
    jobs = parse("executable = run.sh\ninitialdir = /data/run$(Process)\nqueue 2\n", tmp_path)
    assert [j.iwd for j in jobs] == ["/data/run0", "/data/run1"]


def test_input_listed_twice_is_shipped_once(tmp_path: Path) -> None:
    job = one("executable = run.sh\ninput = a.txt\ntransfer_input_files = a.txt\nqueue\n", tmp_path)
    assert job.transfer_input_files == [str(tmp_path / "a.txt")]
    assert job.input == "a.txt"


def test_untransferred_executable_is_kept_as_a_worker_path(tmp_path: Path) -> None:
    job = one("executable = /usr/bin/env\ntransfer_executable = false\nqueue\n", tmp_path)
    assert job.executable == "/usr/bin/env"
    assert job.transfer_executable is False
    assert job.sandbox_executable == "/usr/bin/env"


def test_untransferred_executable_must_be_absolute(tmp_path: Path) -> None:
    refused("executable = env\ntransfer_executable = no\nqueue\n", tmp_path, 1, "'env'", "absolute")


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("input = dir/", "'dir/'"),
        ("input = ..", "'..'"),
    ],
)
def test_input_must_name_a_file(tmp_path: Path, statement: str, named: str) -> None:
    refused(f"executable = run.sh\n{statement}\nqueue\n", tmp_path, 2, "input", named)


def test_two_inputs_with_one_name_are_refused(tmp_path: Path) -> None:
    text = "executable = run.sh\ntransfer_input_files = a/x.dat, b/x.dat\nqueue\n"
    refused(text, tmp_path, 2, str(tmp_path / "a/x.dat"), str(tmp_path / "b/x.dat"), "'x.dat'")


def test_an_input_named_like_the_executable_is_refused(tmp_path: Path) -> None:
    text = "executable = bin/run.sh\ntransfer_input_files = run.sh\nqueue\n"
    refused(text, tmp_path, 2, "'run.sh'")


# --- check_inputs ----------------------------------------------------------------------


def _files(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "data.txt").write_text("x\n")
    (tmp_path / "stdin.txt").write_text("y\n")
    (tmp_path / "calib").mkdir()


def test_check_inputs_accepts_present_files(tmp_path: Path) -> None:
    _files(tmp_path)
    jobs = parse(
        """
        executable = run.sh
        input = stdin.txt
        transfer_input_files = data.txt, calib/
        queue 3
        """,
        tmp_path,
    )
    check_inputs(jobs)


@pytest.mark.parametrize(
    ("statements", "missing"),
    [
        ("executable = nothere.sh", "executable {}/nothere.sh does not exist"),
        ("executable = calib", "executable {}/calib is a directory"),
        ("executable = run.sh\ninput = gone.txt", "input file {}/gone.txt does not exist"),
        (
            "executable = run.sh\ntransfer_input_files = data.txt, nope/",
            "input file {}/nope does not exist",
        ),
        ("executable = run.sh\ninitialdir = nodir", "initial directory {}/nodir does not exist"),
        ("executable = run.sh\ninitialdir = data.txt", "initial directory {}/data.txt is not a"),
    ],
)
def test_check_inputs_names_the_first_problem(
    tmp_path: Path, statements: str, missing: str
) -> None:
    _files(tmp_path)
    jobs = parse(f"{statements}\nqueue\n", tmp_path)
    with pytest.raises(SubmitError) as info:
        check_inputs(jobs)
    assert missing.format(tmp_path) in str(info.value)
    assert info.value.line is None


def test_check_inputs_ignores_an_untransferred_executable(tmp_path: Path) -> None:
    jobs = parse("executable = /no/such/program\ntransfer_executable = false\nqueue\n", tmp_path)
    check_inputs(jobs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_check_inputs_refuses_an_unreadable_file(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "data.txt").chmod(0)
    jobs = parse("executable = run.sh\ntransfer_input_files = data.txt\nqueue\n", tmp_path)
    with pytest.raises(SubmitError, match="is not readable"):
        check_inputs(jobs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root searches every directory")
def test_check_inputs_tells_unreachable_from_missing(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "calib" / "c.db").write_text("z\n")
    (tmp_path / "calib").chmod(0o600)
    jobs = parse("executable = run.sh\ntransfer_input_files = calib/c.db\nqueue\n", tmp_path)
    try:
        with pytest.raises(SubmitError, match="cannot be reached: Permission denied"):
            check_inputs(jobs)
    finally:
        (tmp_path / "calib").chmod(0o700)


# --- a realistic description -----------------------------------------------------------


def test_realistic_submit_file(tmp_path: Path) -> None:
    (tmp_path / "samples.txt").write_text("ttbar 1000\nwjets 2500\nzjets 800\n")
    jobs = parse(
        """
        # Monte Carlo production for the summer analysis
        universe                = vanilla
        executable              = bin/simulate.sh
        base                    = /store/user/$(Owner)/summer
        arguments               = "--sample $(sample) --events $(events) \\
                                   --out '$(base)/$(sample) $(Process).root'"
        environment             = "OMP_NUM_THREADS=$(request_cpus) MODE='full sim'"
        initialdir              = runs/$(sample)
        transfer_input_files    = ../../config/geometry.xml, ../../lib/
        should_transfer_files   = YES
        when_to_transfer_output = ON_EXIT
        output                  = sim.out
        error                   = sim.err
        log                     = ../cluster-$(Cluster).log
        request_cpus            = 4
        request_memory          = 3.5 GB
        request_disk            = 2G
        requirements            = TARGET.OpSys == "LINUX" && TARGET.Arch == "X86_64"
        +AnalysisGroup          = "summer"
        queue sample, events from samples.txt
        """,
        tmp_path,
    )
    assert len(jobs) == 3
    first = jobs[0]
    assert first.executable == str(tmp_path / "bin" / "simulate.sh")
    assert first.arguments == [
        "--sample",
        "ttbar",
        "--events",
        "1000",
        "--out",
        "/store/user/alice/summer/ttbar 0.root",
    ]
    assert first.environment == {"OMP_NUM_THREADS": "4", "MODE": "full sim"}
    assert first.iwd == str(tmp_path / "runs" / "ttbar")
    assert first.transfer_input_files == [
        str(tmp_path / "config" / "geometry.xml"),
        str(tmp_path / "lib") + "/",
    ]
    assert (first.output, first.error) == ("sim.out", "sim.err")
    assert first.log == str(tmp_path / "runs" / "cluster-42.log")
    assert (first.request_cpus, first.request_memory_mb, first.request_disk_mb) == (4, 3584, 2048)
    assert first.requirements == 'TARGET.OpSys == "LINUX" && TARGET.Arch == "X86_64"'
    assert first.attrs == {"AnalysisGroup": '"summer"'}
    assert [j.arguments[3] for j in jobs] == ["1000", "2500", "800"]
    assert jobs[2].arguments[-1] == "/store/user/alice/summer/zjets 2.root"
    assert jobs[2].iwd == str(tmp_path / "runs" / "zjets")
