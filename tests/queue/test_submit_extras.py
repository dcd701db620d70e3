"""Submit commands for GPUs, containers and URL inputs: their meaning in the job, and
each kind of bad value refused with its line."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from pilotage.queue.jobad import build_job_ad
from pilotage.queue.spec import JobSpec
from pilotage.queue.submit import SubmitError, parse_submit

SHA = "ab" * 32


def parse(tmp_path: Path, body: str) -> JobSpec:
    text = f"executable = /bin/true\ntransfer_executable = false\n{body}\nqueue\n"
    (spec,) = parse_submit(text, source="job.sub", iwd=tmp_path, cluster_id=1, owner="alice")
    return spec


def test_meaning(tmp_path: Path) -> None:
    spec = parse(
        tmp_path,
        'request_gpus = 2\nrequire_gpus = DeviceName != "K80"\n'
        "gpus_minimum_capability = 7.5\ngpus_minimum_memory = 8G\n"
        "container_image = el9.sif\n"
        f"transfer_input_files = in.txt, https://example.org/d/run%201.dat#sha256={SHA.upper()}",
    )
    assert spec.require_gpus == (
        '(DeviceName != "K80") && Capability >= 7.5 && GlobalMemoryMb >= 8192'
    )
    assert spec.container_image == "el9.sif"  # transferred, so named as the node sees it
    assert spec.transfer_input_files == [f"{tmp_path}/in.txt", f"{tmp_path}/el9.sif"]
    (url,) = spec.url_inputs
    assert url.url == "https://example.org/d/run%201.dat"
    assert (url.name, url.sha256) == ("run 1.dat", SHA)
    ad = build_job_ad(spec, cluster_id=1, proc_id=0, owner="alice", qdate=0)
    assert "countMatches(MY.RequireGPUs,TARGET.AvailableGPUs)" in ad
    assert "TARGET.HasContainer is true" in ad
    assert parse(tmp_path, "container_image = docker://almalinux:9").container_image


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("transfer_input_files = https://h/f#md5=00", "after '#' pilotage takes only sha256="),
        ("transfer_input_files = https://h/d/", "names no file"),
        ("transfer_input_files = http://h/a b", "not an http:// or https:// URL"),
        ("transfer_input_files = f, http://h/x/f", "would both arrive as 'f'"),
        ("transfer_input_files = osdf:///ospool/ap20/data/f", "fetch only http:// and https://"),
        ("universe = container", "universe = container needs container_image"),
        ("universe = docker", "universe 'docker' is not supported"),
        ("container_image = s3://b/i.sif", "takes images as docker://"),
        ("container_image = el9.sif\ntransfer_container = false", "must be transferred"),
        ("gpus_minimum_capability = fast", "is not a compute capability"),
        ("require_gpus = Capability >", "is not a valid ClassAd expression"),
        ("docker_image = almalinux:9", "unknown submit command 'docker_image'"),
    ],
)
def test_refusals_name_the_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SubmitError, match=message) as refused:
        parse(tmp_path, body)
    assert refused.value.source == "job.sub" and refused.value.line is not None


def test_the_server_checks_url_inputs_again() -> None:
    for bad in ({"url": "ftp://h/f", "name": "f"}, {"url": "https://h/f", "name": "../f"}):
        with pytest.raises(pydantic.ValidationError):
            JobSpec(executable="x", url_inputs=[bad])  # type: ignore[list-item]
