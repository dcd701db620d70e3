"""Job ads: the server builds them; users cannot override what the pool relies on."""

from __future__ import annotations

import pytest

from pilotage.errors import BadInput
from pilotage.queue.jobad import (
    build_job_ad,
    check_spec_expressions,
    load_ad,
    slot_ad,
    symmetric_match,
)
from pilotage.queue.spec import JobSpec


def _slot(**attrs: object) -> object:
    base = {"Cpus": 4, "Memory": 4000, "Disk": 10000, "GPUs": 0, "Site": "alpha"}
    return slot_ad({**base, **attrs}, "true")


def test_requirements_and_resources_both_count() -> None:
    spec = JobSpec(executable="run", requirements='TARGET.Site == "alpha"', request_memory_mb=2000)
    ad = load_ad(build_job_ad(spec, cluster_id=3, proc_id=1, owner="alice", qdate=10))
    assert ad["Owner"] == "alice" and ad["ClusterId"] == 3 and ad["ProcId"] == 1
    assert symmetric_match(ad, _slot())
    assert not symmetric_match(ad, _slot(Site="beta"))
    assert not symmetric_match(ad, _slot(Memory=1000))


def test_slot_side_can_refuse() -> None:
    spec = JobSpec(executable="run")
    ad = load_ad(build_job_ad(spec, cluster_id=1, proc_id=0, owner="bob", qdate=10))
    picky = slot_ad({"Cpus": 4, "Memory": 4000, "Disk": 1e6, "GPUs": 0}, 'TARGET.Owner == "alice"')
    assert not symmetric_match(ad, picky)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            JobSpec(executable="x", requirements="Memory >="),
            "requirements 'Memory >=' is not a valid ClassAd expression",
        ),
        (JobSpec(executable="x", rank="((("), "rank"),
        (JobSpec(executable="x", attrs={"Owner": '"root"'}), r"\+Owner is set by the pool"),
        (JobSpec(executable="x", attrs={"Foo": "1 +"}), r"attribute \+Foo"),
    ],
)
def test_bad_expressions_refused(spec: JobSpec, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        check_spec_expressions(spec)


def test_custom_attributes_reach_the_ad() -> None:
    spec = JobSpec(executable="x", attrs={"Experiment": '"cms"', "Weight": "2 * 3"})
    ad = load_ad(build_job_ad(spec, cluster_id=1, proc_id=0, owner="bob", qdate=10))
    assert ad["Experiment"] == "cms" and ad.eval("Weight") == 6


@pytest.mark.parametrize("text", ["blue ]", "x == 1 ;", "x == 1 ; y", "1); __q = (2", "a &&"])
def test_trailing_text_is_not_silently_dropped(text: str) -> None:
    with pytest.raises(BadInput, match="is not a valid ClassAd expression"):
        check_spec_expressions(JobSpec(executable="x", requirements=text))


@pytest.mark.parametrize("name", ["AcctGroup", "User", "x509userproxysubject"])
def test_accounting_and_identity_attributes_are_the_pools(name: str) -> None:
    with pytest.raises(BadInput, match="is set by the pool"):
        check_spec_expressions(JobSpec(executable="x", attrs={name: '"cms"'}))
