"""Submit files adapted from HTCondor's manual, each parsed unchanged and its jobs checked
against what the manual says the file means.

The files are in ``tests/data/htcondor/``, each citing its source at the top. Where
HTCondor's own parser (``htcondor2.Submit``) can say the same thing — the rows a
``queue`` statement iterates, a deterministic macro's expansion — the test asks it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import classad2
import htcondor2
import pytest

from pilotage.queue.jobad import build_job_ad
from pilotage.queue.spec import JobSpec
from pilotage.queue.submit import parse_submit

CORPUS = Path(__file__).parent.parent / "data" / "htcondor"
Check = Callable[[list[JobSpec], list[Any]], None]


def ads_of(jobs: list[JobSpec]) -> list[Any]:
    return [
        classad2.ClassAd(build_job_ad(j, cluster_id=7, proc_id=i, owner="alice", qdate=0))
        for i, j in enumerate(jobs)
    ]


def parse(name: str) -> list[JobSpec]:
    text = (CORPUS / name).read_text()
    return parse_submit(text, source=name, iwd=CORPUS, cluster_id=7, owner="alice")


def at(*parts: str) -> str:
    return str(CORPUS.joinpath(*parts))


def _example1(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    assert job.executable == at("myexe") and job.input == "inputfile"
    assert job.output == "outputfile" and job.log == at("myexe.log")
    assert job.transfer_input_files == [at("inputfile")]


def _example3(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [j.iwd for j in jobs] == [at("run_1"), at("run_2")]
    assert all(j.request_memory_mb == 1024 and j.input == "test.data" for j in jobs)
    assert [j.log for j in jobs] == [at("run_1", "loop.log"), at("run_2", "loop.log")]
    assert [j.transfer_input_files for j in jobs] == [
        [at("run_1", "test.data")],
        [at("run_2", "test.data")],
    ]


def _hundred_fifty(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert len(jobs) == 150
    assert (jobs[0].input, jobs[0].output, jobs[0].error) == ("in.0", "out.0", "err.0")
    assert (jobs[149].input, jobs[149].output, jobs[149].error) == ("in.149", "out.149", "err.149")
    assert {j.log for j in jobs} == {at("foo.log")} and jobs[0].request_memory_mb == 32
    assert 'OpSys == "LINUX"' in str(ads[0].lookup("Requirements"))
    assert str(ads[0].lookup("Rank")) == "Memory >= 64"


def _matching(jobs: list[JobSpec], ads: list[Any]) -> None:
    names = ["ending.dat", "initial.dat", "middle.dat"]
    assert [j.arguments for j in jobs] == [["-infile", n] for n in names]
    assert [j.transfer_input_files for j in jobs] == [[at(n)] for n in names]


def _in_list(jobs: list[JobSpec], ads: list[Any]) -> None:
    # 'input' is the submit command itself: each job reads A, B or C as standard input.
    assert [j.input for j in jobs] == ["A", "B", "C"]


def _from_block(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [(j.input, j.arguments) for j in jobs] == [
        ("file1", ["-a", "-b", "26"]),
        ("file2", ["-c", "-d", "92"]),
    ]


def _automatic(jobs: list[JobSpec], ads: list[Any]) -> None:
    rows = [j.arguments for j in jobs]
    assert rows == [
        ["A", "0", "0", "0", "0"],
        ["A", "1", "1", "0", "0"],
        ["A", "2", "2", "0", "0"],
        ["B", "3", "0", "1", "1"],
        ["B", "4", "1", "1", "1"],
        ["B", "5", "2", "1", "1"],
    ]


def _include(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    assert job.transfer_input_files == [at("infiles", f"{x}.dat") for x in "ABC"]


def _if_defined(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].arguments == ["-n", "1", "-debug"]


def _if_version(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].arguments == ["True", "no"]


def _int_initialdir(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [j.iwd for j in jobs] == [at(f"run-000{n}") for n in (1, 2, 3)]


def _int_extension(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [j.input for j in jobs] == ["X.000", "X.010", "X.020", "X.030"]


def _fnx_matching(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [j.arguments for j in jobs] == [["A.dat"], ["B.dat"]]
    assert [j.transfer_input_files for j in jobs] == [
        [at("samplerun", x)] for x in ("A.dat", "B.dat")
    ]


def _substr(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].arguments == ["cdef", "abcd", "bcd", "f", "x"]


def _file_parts(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].arguments == ["simulate", ".exe", "/tmp/", "tmp", "exe", "/tmp/", "simulate.exe"]


def _choice(jobs: list[JobSpec], ads: list[Any]) -> None:
    for proc, job in enumerate(jobs):
        green, letter, pick, even, real = job.arguments
        assert (green, letter, real) == ("green", "abc"[proc], f"{proc}.0")
        assert pick in [str(n) for n in range(9)] and even in ("0", "2", "4", "6", "8")


def _sleep(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    assert (job.request_cpus, job.request_memory_mb, job.request_disk_mb) == (1, 512, 1024)
    assert (job.output, job.error, job.log) == ("sleep.out", "sleep.err", at("sleep.log"))


def _science1(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    assert job.arguments == ["infile-A.txt", "infile-B.txt", "outfile.txt"]
    assert job.policy.max_retries == 2 and ads[0].eval("JobMaxRetries") == 2
    # Exit 0 leaves the queue; exit 1 runs again until NumJobCompletions passes 2.
    assert _on_exit_remove(ads[0], ExitCode=0, NumJobCompletions=1) is True
    assert _on_exit_remove(ads[0], ExitCode=1, NumJobCompletions=1) is False
    assert _on_exit_remove(ads[0], ExitCode=1, NumJobCompletions=3) is True


def _science2(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert len(jobs) == 40
    assert jobs[39].arguments == ["infile-39A.txt", "infile-39B.txt", "outfile39.txt"]
    assert jobs[39].transfer_input_files == [at("infile-39A.txt"), at("infile-39B.txt")]


def _science3(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert len(jobs) == 100 and jobs[99].iwd == at("run99")
    assert jobs[99].transfer_input_files == [
        at("run99", "infile-A.txt"),
        at("run99", "infile-B.txt"),
    ]
    assert jobs[99].log == at("run99", "science3.log")


def _gpu(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].request_gpus == 1 and ads[0].eval("RequestGpus") == 1
    assert jobs[0].request_memory_mb == 2048


def _simulator(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].transfer_output_files == ["science.sim"] and jobs[0].request_cpus == 2


def _analyzer(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].transfer_input_files == [at("science.sim")]
    assert jobs[0].transfer_output_files == ["results.txt"] and jobs[0].request_disk_mb == 5120


def _max_retries(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert ads[0].eval("JobMaxRetries") == 5
    assert (jobs[0].request_memory_mb, jobs[0].request_disk_mb) == (1024, 10)
    assert _on_exit_remove(ads[0], ExitCode=3, NumJobCompletions=5) is False
    assert _on_exit_remove(ads[0], ExitCode=3, NumJobCompletions=6) is True


def _remove_qdate(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert str(ads[0].lookup("PeriodicRemove")) == "(time() - QDate) > (100 * 3600)"
    assert ads[0].eval("PeriodicRemove") is True  # QDate is 0 here: long ago.


def _remove_running(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    ad["JobStatus"], ad["EnteredCurrentStatus"] = 2, 0
    assert ad.eval("PeriodicRemove") is True
    ad["JobStatus"] = 1
    assert ad.eval("PeriodicRemove") is False


def _hold_release(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    assert ad.eval("PeriodicHoldReason") == "Job ran for more than seven hours"
    assert ad.eval("PeriodicHoldSubCode") == 42
    ad["HoldReasonSubCode"] = 42
    assert ad.eval("PeriodicRelease") is True


def _on_exit_hold(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    ad["ExitBySignal"] = True
    assert ad.eval("OnExitHold") is True


def _man1(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert [(j.arguments, j.output, j.error) for j in jobs] == [
        (["15", "2000"], "foo.out0", "foo.err0"),
        (["30", "2000"], "foo.out1", "foo.err1"),
        (["45", "6000"], "foo.out2", "foo.err2"),
    ]


def _man3(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].executable == "/bin/sleep" and jobs[0].arguments == ["30"]
    assert '(OpSysAndVer == "RedHat6")' in str(ads[0].lookup("Requirements"))


def _suspension(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    ad["CumulativeSuspensionTime"], ad["RemoteWallClockTime"] = 60, 100
    assert ad.eval("PeriodicRemove") is True
    ad["CumulativeSuspensionTime"] = 10
    assert ad.eval("PeriodicRemove") is False


def _env_log(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert jobs[0].log == "/home/alice/jobs/logfile"


def _remaps(jobs: list[JobSpec], ads: list[Any]) -> None:
    job, ad = jobs[0], ads[0]
    assert job.transfer_output_remaps == {
        "out1.dat": "results/out1.dat",
        "out2.dat": "/tmp/out2.dat",
    }
    assert ad.eval("JobBatchName") == "nightly run"
    assert ad.eval("StreamOut") is True and "StreamErr" not in ad
    assert ad.eval("JobNotification") == 3 and ad.eval("NotifyUser") == "alice@example.org"


def _accounting(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    assert (ad.eval("AcctGroup"), ad.eval("AcctGroupUser")) == ("group_physics", "alice")
    assert ad.eval("AccountingGroup") == "group_physics.alice"


def _retry_until(jobs: list[JobSpec], ads: list[Any]) -> None:
    ad = ads[0]
    assert ad.eval("JobMaxRetries") == 4 and ad.eval("JobSuccessExitCode") == 3
    assert _on_exit_remove(ad, ExitCode=3, NumJobCompletions=1) is True
    assert _on_exit_remove(ad, ExitCode=42, NumJobCompletions=1) is True
    assert _on_exit_remove(ad, ExitCode=0, NumJobCompletions=1) is False


def _on_exit_remove(ad: Any, **values: Any) -> Any:
    probe = ad.__class__(str(ad))
    for name, value in values.items():
        probe[name] = value
    return probe.eval("OnExitRemove")


def _container(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    # The image is transferred; /bin/cat is the image's own program, not the submit host's.
    assert job.container_image == "image.sif" and job.transfer_input_files == [at("image.sif")]
    assert (job.executable, job.transfer_executable) == ("/bin/cat", False)
    assert job.arguments == ["/etc/hosts"] and job.output == "out.0"
    assert ads[0].eval("WantContainer") is True
    assert "TARGET.HasContainer is true" in str(ads[0].lookup("Requirements"))


def _docker_image(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    assert job.container_image == "docker://python:3.11" and job.transfer_input_files == []
    assert job.transfer_executable and job.executable == at("analyze.py")
    assert ads[0].eval("ContainerImage") == "docker://python:3.11"


def _gpus(capability: str, memory: str | None = None) -> Check:
    def check(jobs: list[JobSpec], ads: list[Any]) -> None:
        ad = ads[0]
        assert ad.eval("RequestGpus") == 1
        device = classad2.ClassAd(f"[Capability = {capability}; GlobalMemoryMb = 8192]")
        slot = classad2.ClassAd("[AvailableGPUs = { GPUs_a }]")
        slot["GPUs_a"] = device
        requirements = str(ad.lookup("Requirements"))
        assert "countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= MY.RequestGpus" in requirements
        assert ad.lookup("RequireGPUs").eval(device) is True
        matches = classad2.ExprTree("countMatches(MY.RequireGPUs, TARGET.AvailableGPUs)")
        assert matches.eval(ad, slot) == 1
        if memory is not None:
            assert str(ad.lookup("RequireGPUs")).endswith(f"GlobalMemoryMb >= {memory}")

    return check


def _url_input(jobs: list[JobSpec], ads: list[Any]) -> None:
    (job,) = jobs
    (url,) = job.url_inputs
    assert (url.url, url.name, url.sha256) == (
        "http://www.full.url/path/to/filename",
        "filename",
        None,
    )
    assert job.transfer_input_files == []  # fetched by the pilot, not the submit host
    assert ads[0].eval("TransferInputURLs") == url.url


def _notification(jobs: list[JobSpec], ads: list[Any]) -> None:
    assert (ads[0].eval("JobNotification"), ads[0].eval("NotifyUser")) == (3, "alice@example.org")


EXPECTED: dict[str, Check] = {
    "sub_example1_simple.sub": _example1,
    "sub_example3_initialdir.sub": _example3,
    "sub_example4_macros.sub": _hundred_fifty,
    "sub_queue_matching_files.sub": _matching,
    "sub_queue_in_list.sub": _in_list,
    "sub_queue_from_block.sub": _from_block,
    "sub_automatic_variables.sub": _automatic,
    "sub_include_file.sub": _include,
    "sub_if_defined.sub": _if_defined,
    "sub_if_version.sub": _if_version,
    "sub_function_int_initialdir.sub": _int_initialdir,
    "sub_function_int_extension.sub": _int_extension,
    "sub_function_fnx_matching.sub": _fnx_matching,
    "sub_function_substr.sub": _substr,
    "sub_function_file_parts.sub": _file_parts,
    "sub_function_choice_random.sub": _choice,
    "qs_sleep.sub": _sleep,
    "qs_science1.sub": _science1,
    "qs_science2.sub": _science2,
    "qs_science3.sub": _science3,
    "qs_gpu_simple.sub": _gpu,
    "qs_simulator.sub": _simulator,
    "qs_analyzer.sub": _analyzer,
    "auto_max_retries.sub": _max_retries,
    "auto_periodic_remove_qdate.sub": _remove_qdate,
    "auto_periodic_remove_running.sub": _remove_running,
    "auto_periodic_hold_release.sub": _hold_release,
    "auto_on_exit_hold.sub": _on_exit_hold,
    "man_example1.sub": _man1,
    "man_example1b.sub": _man1,
    "man_example2.sub": _hundred_fifty,
    "man_example3.sub": _man3,
    "man_periodic_remove_suspension.sub": _suspension,
    "man_env_log.sub": _env_log,
    "man_remaps_batch.sub": _remaps,
    "man_accounting_group.sub": _accounting,
    "man_retry_until.sub": _retry_until,
    "man_container_universe.sub": _container,
    "man_container_docker_image.sub": _docker_image,
    "man_gpus_require.sub": _gpus("8.0"),
    "man_gpus_minimum.sub": _gpus("8.5", "4096"),
    "man_url_input.sub": _url_input,
    "man_notification.sub": _notification,
}


def test_every_corpus_file_has_expectations_and_cites_its_source() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.sub"))
    assert files == sorted(EXPECTED) and len(files) >= 30
    for name in files:
        head = (CORPUS / name).read_text().splitlines()[:2]
        assert head[0].startswith("# Adapted from: ") and re.match(r"# https://", head[1]), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_means_what_the_manual_says(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/alice")
    jobs = parse(name)
    EXPECTED[name](jobs, ads_of(jobs))


def _queue_rows(text: str) -> list[dict[str, str]]:
    return [dict(row) for row in htcondor2.Submit(text).itemdata() or []]


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("sub_queue_in_list.sub", ("input",)),
        ("sub_queue_from_block.sub", ("input", "arguments")),
        ("man_example1b.sub", ("Arguments",)),
    ],
)
def test_queue_rows_agree_with_htcondor(name: str, names: tuple[str, ...]) -> None:
    """Our reading of each row is HTCondor's, including the rest-of-line rule."""
    text = (CORPUS / name).read_text()
    theirs = _queue_rows(text)
    jobs = parse(name)
    ours = [
        {n: " ".join(j.arguments) if n.lower() == "arguments" else str(j.input) for n in names}
        for j in jobs
    ]
    assert ours == theirs


@pytest.mark.parametrize("command", ["arguments"])
@pytest.mark.parametrize("name", ["sub_function_substr.sub", "sub_function_file_parts.sub"])
def test_macro_expansion_agrees_with_htcondor(name: str, command: str) -> None:
    text = (CORPUS / name).read_text()
    theirs = htcondor2.Submit(text).expand(command).split()
    assert parse(name)[0].arguments == theirs
