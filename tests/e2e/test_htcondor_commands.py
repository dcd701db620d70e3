"""condor_q habits against a running server: batches, -constraint, -af, -l, qedit, targets by
user name or constraint, history -limit, and -analyze on a held job."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pilotage.testing import Pool


def _ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def _submit(pool: Pool) -> Path:
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sh").write_text("#!/bin/sh\nexit 0\n")
    (work / "job.sub").write_text(
        "executable = job.sh\nbatch_name = nightly\narguments = $(Process)\nqueue 3\n"
    )
    _ok(pool.cli("submit", "job.sub", cwd=work))
    return work


def test_q_groups_by_batch_and_reads_ads(pool: Pool) -> None:
    _submit(pool)
    me = json.loads(_ok(pool.cli("q", "--json")))[0]["owner"]
    table = _ok(pool.cli("q"))
    assert "BATCH_NAME" in table and "nightly" in table and "1.0-2" in table
    assert "1.1" in _ok(pool.cli("q", "-nobatch"))
    assert _ok(pool.cli("q", "-af", "ClusterId", "ProcId", "JobStatus")).split("\n")[:3] == [
        "1 0 1",
        "1 1 1",
        "1 2 1",
    ]
    picked = json.loads(_ok(pool.cli("q", "-constraint", "ProcId >= 1", "--json")))
    assert [j["id"] for j in picked] == ["1.1", "1.2"]
    whole = _ok(pool.cli("q", "-l", "1.0"))
    assert 'JobBatchName = "nightly"' in whole and "JobStatus = 1" in whole
    assert _ok(pool.cli("q", "--owner", me, "-af", "Owner")).split() == [me] * 3
    assert "nightly" in _ok(pool.cli("q", me))  # a user name, as condor_q takes it
    bad = pool.cli("q", "-constraint", "ProcId >")
    assert bad.returncode != 0 and "constraint" in bad.stderr


def test_targets_qedit_analyze_and_history(pool: Pool) -> None:
    _submit(pool)
    me = json.loads(_ok(pool.cli("q", "--json")))[0]["owner"]
    _ok(pool.cli("qedit", "1.0", "MyTag", '"checked"'))
    assert _ok(pool.cli("q", "1.0", "-af", "MyTag")).strip() == "checked"
    refused = pool.cli("qedit", "1.0", "Owner", '"mallory"')
    assert refused.returncode != 0 and "set by the pool" in refused.stderr
    _ok(pool.cli("hold", "-constraint", "ProcId == 2", "--reason", "wrong input"))
    analysis = _ok(pool.cli("q", "-analyze", "1.2"))
    assert "is held" in analysis and "wrong input" in analysis
    assert "pilotage release 1.2" in analysis
    not_idle = pool.cli("qedit", "1.2", "MyTag", "1")
    assert not_idle.returncode != 0 and "only idle jobs" in not_idle.stderr
    released = _ok(pool.cli("release", me))
    assert "job 1.2 released" in released
    _ok(pool.cli("rm", "-constraint", "ProcId != 1"))
    assert [j["id"] for j in json.loads(_ok(pool.cli("q", "--json")))] == ["1.1"]
    assert _ok(pool.cli("history", "-limit", "1", "-af", "ProcId", "JobStatus")).split() == [
        "2",
        "3",
    ]
    nothing = pool.cli("rm", "-constraint", "ProcId == 99")
    assert nothing.returncode == 2 and "no job in the queue matches" in nothing.stderr


def test_transfer_output_remaps_place_outputs(pool: Pool) -> None:
    work = pool.root / "work"
    elsewhere = pool.root / "elsewhere"
    (work / "results").mkdir(parents=True)
    elsewhere.mkdir()
    (work / "job.sh").write_text(
        "#!/bin/sh\necho one > out1.dat\necho two > out2.dat\n"
        "mkdir -p outdir\necho three > outdir/three.dat\n"
    )
    (work / "job.sh").chmod(0o755)
    (work / "job.sub").write_text(
        "executable = job.sh\nrequest_memory = 64M\n"
        "transfer_output_files = out1.dat, out2.dat, outdir\n"
        f'transfer_output_remaps = "out1.dat = results/one.dat; out2.dat = {elsewhere}/two.dat"\n'
        "queue\n"
    )
    # An output directory that is another file system (a mount in the submit directory):
    # its files are copied across, not renamed.
    mounted = os.geteuid() == 0
    if mounted:
        (work / "outdir").mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work / "outdir")], check=True
        )
    try:
        _ok(pool.cli("submit", "job.sub", cwd=work))
        pool.pilots(1, cpus=1, memory_mb=512)
        _ok(pool.cli("wait", "1", "--timeout", "120", cwd=work))
        assert (work / "results" / "one.dat").read_text() == "one\n"
        assert (elsewhere / "two.dat").read_text() == "two\n"
        assert not (work / "out1.dat").exists() and not (work / "out2.dat").exists()
        assert (work / "outdir" / "three.dat").read_text() == "three\n"
        assert [p.name for p in (work / "outdir").iterdir()] == ["three.dat"]  # no temporary left
    finally:
        if mounted:
            subprocess.run(["umount", str(work / "outdir")], check=True)


def test_an_unmapped_accounting_group_is_refused_and_nothing_is_stored(pool: Pool) -> None:
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sh").write_text("#!/bin/sh\nexit 0\n")
    (work / "job.sub").write_text("executable = job.sh\naccounting_group = group_physics\nqueue\n")
    refused = pool.cli("submit", "job.sub", cwd=work)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "accounting group 'group_physics' is not one this pool maps" in refused.stderr
    assert json.loads(_ok(pool.cli("q", "--json"))) == []
