"""Hostile sandboxes sent to a real server: refused with the member named, spool untouched.

Input sandboxes arrive from users (``POST /api/v1/sandboxes``), output sandboxes from
pilots (``PUT /pilot/v1/claims/{id}/output``); both go through the same checks before
anything is renamed into the spool.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from e2e_callers import ProtocolPilot, refusal, snapshot, spool_files, submit_api

from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]
LIMIT = 1024 * 1024  # max_sandbox_mb = 1
TAR = {"Content-Type": "application/x-tar"}


Member = tuple[str, bytes, bytes, str]


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> Member:
    """A tar member to write: name, tar type, data (regular files), link target."""
    return name, kind, data, link


def _tar(*members: Member) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


OK = _member("ok.txt", data=b"fine\n")

#: name -> (tar stream, the words the refusal must contain: the member, and why).
HOSTILE: dict[str, tuple[bytes, str]] = {
    "absolute path": (
        _tar(OK, _member("/etc/cron.d/evil", data=b"x")),
        "sandbox member '/etc/cron.d/evil' has an absolute path",
    ),
    "dot-dot": (
        _tar(OK, _member("sub/../../escape", data=b"x")),
        "sandbox member 'sub/../../escape' climbs out of the sandbox with '..'",
    ),
    "symlink to an absolute path": (
        _tar(OK, _member("passwd", tarfile.SYMTYPE, link="/etc/passwd")),
        "sandbox member 'passwd' is a symlink to the absolute path '/etc/passwd'",
    ),
    "symlink climbing out": (
        _tar(OK, _member("d", tarfile.DIRTYPE), _member("d/up", tarfile.SYMTYPE, link="../..")),
        "sandbox member 'd/up' is a symlink pointing outside the sandbox",
    ),
    "symlink escaping through another symlink": (
        _tar(
            _member("a", tarfile.DIRTYPE),
            _member("a/b", tarfile.DIRTYPE),
            _member("a/b/top", tarfile.SYMTYPE, link="../.."),
            _member("out", tarfile.SYMTYPE, link="a/b/top/.."),
        ),
        "sandbox member 'out' is a symlink that leads outside the sandbox through other symlinks",
    ),
    "member written through a symlink": (
        _tar(
            _member("d", tarfile.DIRTYPE),
            _member("link", tarfile.SYMTYPE, link="d"),
            _member("link/file", data=b"x"),
        ),
        "sandbox member 'link/file' goes through the symlink 'link'",
    ),
    "hard link": (
        _tar(OK, _member("hard", tarfile.LNKTYPE, link="ok.txt")),
        "sandbox member 'hard' is a hard link",
    ),
    "character device": (
        _tar(OK, _member("null", tarfile.CHRTYPE)),
        "sandbox member 'null' is a device",
    ),
    "block device": (_tar(_member("sda", tarfile.BLKTYPE)), "sandbox member 'sda' is a device"),
    "fifo": (_tar(_member("pipe", tarfile.FIFOTYPE)), "sandbox member 'pipe' is a FIFO"),
    "member given twice": (
        _tar(OK, _member("ok.txt", data=b"other")),
        "sandbox member 'ok.txt' appears twice",
    ),
    "not a tar": (b"#!/bin/sh\nrm -rf /\n" * 40, "the sandbox is not a tar archive"),
    "compressed": (gzip.compress(_tar(OK)), "the sandbox is gzip-compressed"),
    "empty": (b"", "the sandbox is empty (0 bytes)"),
    "truncated": (_tar(_member("big", data=b"y" * 9000))[:2048], "damaged or truncated"),
}

#: Refused as too large: 413, not 422.
TOO_LARGE: dict[str, tuple[bytes, str]] = {
    "over the byte limit": (
        _tar(_member("big.bin", data=b"z" * (LIMIT + 1))),
        f"the limit is {LIMIT} bytes",
    ),
    "over the member limit": (
        _tar(*(_member(f"f{i}", data=b"") for i in range(21))),
        "sandbox member 'f20' is one more than the limit of 20 members",
    ),
}


@pytest.fixture
def small_pool(make_pool: Callable[..., Pool]) -> Pool:
    # A long lease: no claim runs out while a test sends it one refused output after another.
    return make_pool(max_sandbox_mb="1", max_sandbox_members="20", lease_s="120")


def _chunks(data: bytes) -> Iterator[bytes]:
    """A body without Content-Length: the server must count as it reads."""
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


def test_hostile_input_sandboxes_are_refused_naming_the_member(
    small_pool: Pool, clients: Clients
) -> None:
    pool = small_pool
    alice = clients(pool, pool.token("alice", "user"))
    accepted = alice.post("/api/v1/sandboxes", content=_tar(OK), headers=TAR)
    assert accepted.status_code == 201, accepted.text
    before = snapshot(pool)
    for case, (body, words) in HOSTILE.items():
        status, message = refusal(alice.post("/api/v1/sandboxes", content=body, headers=TAR))
        assert status == 422, (case, message)
        assert words in message, (case, message)
    for case, (body, words) in TOO_LARGE.items():
        for content in (body, _chunks(body)):
            status, message = refusal(alice.post("/api/v1/sandboxes", content=content, headers=TAR))
            assert status == 413, (case, message)
            assert words in message or "the sandbox exceeds the limit" in message, (case, message)
    assert snapshot(pool) == before
    assert "incoming" in spool_files(pool) and not list((pool.state.spool / "incoming").iterdir())


def test_hostile_output_sandboxes_are_refused_and_the_claim_lives_on(
    small_pool: Pool, clients: Clients
) -> None:
    pool = small_pool
    with pool.admin() as admin:
        submit_api(admin, 1)
    pilot = ProtocolPilot(clients(pool, pool.token("pilots", "pilot")))
    claim = pilot.ask()
    assert claim is not None
    claim_id = claim["claim_id"]
    before = snapshot(pool)
    for case, (body, words) in HOSTILE.items():
        status, message = refusal(pilot.upload_output(claim_id, body))
        assert status == 422 and words in message, (case, message)
    for case, (body, words) in TOO_LARGE.items():
        status, message = refusal(pilot.upload_output(claim_id, body))
        assert status == 413, (case, message)
        assert words in message or "the sandbox exceeds the limit" in message, (case, message)
    assert snapshot(pool) == before

    # Nothing was lost: the claim is still live and a good output is taken.
    assert pilot.upload_output(claim_id, _tar(OK)).status_code == 204
    assert pilot.report(claim_id).status_code == 200
    with pool.admin() as admin:
        (job,) = admin.call("GET", "/api/v1/jobs", params={"id": "1.0"})
    assert (job["state"], job["has_output"]) == ("COMPLETED", True)


def test_an_input_sandbox_over_the_limit_stops_a_cli_submit(small_pool: Pool) -> None:
    pool = small_pool
    work = pool.root / "work"
    work.mkdir()
    (work / "run.sh").write_text("#!/bin/sh\ncat data.bin >/dev/null\n")
    (work / "run.sh").chmod(0o755)
    (work / "data.bin").write_bytes(b"d" * (2 * LIMIT))
    (work / "job.submit").write_text(
        "executable = run.sh\ntransfer_input_files = data.bin\nqueue 3\n"
    )
    before = spool_files(pool)
    result = pool.cli("submit", "job.submit", cwd=work)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("pilotage: the sandbox is ")
    assert result.stderr.endswith(f"bytes; the limit is {LIMIT} bytes\n")
    assert spool_files(pool) == before
    queue = pool.cli("q", "--json")
    assert (queue.returncode, queue.stdout.strip()) == (0, "[]")


def test_an_output_that_arrives_after_its_lease_ended_leaves_nothing_in_the_spool(
    make_pool: Callable[..., Pool], clients: Clients
) -> None:
    pool = make_pool(lease_s="2")
    with pool.admin() as admin:
        submit_api(admin, 1)
    pilot = ProtocolPilot(clients(pool, pool.token("pilots", "pilot")))
    claim = pilot.ask()
    assert claim is not None
    body = _tar(_member("out.txt", data=b"o" * 40_000))
    before = snapshot(pool)

    def slowly() -> Iterator[bytes]:
        """The upload starts while the claim is live and ends after its lease did."""
        for start in range(0, len(body), len(body) // 8):
            yield body[start : start + len(body) // 8]
            time.sleep(0.6)

    answer = pilot.http.put(
        f"/pilot/v1/claims/{claim['claim_id']}/output", content=slowly(), headers=TAR
    )
    assert refusal(answer) == (409, f"claim {claim['claim_id']} is no longer live (lease_expired)")
    assert pool.wait_jobs(["1.0"], ("IDLE",))[0]["has_output"] is False
    after = snapshot(pool)
    assert after["spool"] == before["spool"]
