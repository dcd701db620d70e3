"""Submitting a cluster from the submit host, and bringing its outputs back.

Submission follows the queue's transaction: parse the description (refusing a bad one
before anything reaches the server), allocate a cluster, upload each distinct input
sandbox once, then commit every job of the cluster in one call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, cast

from pilotage.cli.client import Client
from pilotage.cli.progress import Report
from pilotage.errors import BadInput
from pilotage.queue import eventlog, sandbox
from pilotage.queue.spec import ClusterSubmission, JobSpec
from pilotage.queue.submit import check_inputs, parse_submit

#: What the client is willing to pack into one input sandbox.
MAX_INPUT_BYTES = 1024 * 1024 * 1024


def read_description(path: Path) -> str:
    """The text of a submit description file, or a clear error."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"submit file {path} does not exist") from None
    except UnicodeDecodeError:
        raise BadInput(f"submit file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise BadInput(f"cannot read submit file {path}: {exc.strerror}") from None


def input_members(spec: JobSpec) -> list[tuple[str, str]]:
    """(source, name in the sandbox) for each input: files land at the sandbox's top by
    their base name; a directory given with a trailing slash contributes its contents."""
    members: list[tuple[str, str]] = []
    if spec.transfer_executable:
        members.append((spec.executable, os.path.basename(spec.executable)))
    for item in spec.transfer_input_files:
        source = Path(item)
        if item.endswith("/") and source.is_dir():
            members += [(str(c.resolve()), c.name) for c in sorted(source.iterdir())]
        else:
            members.append((str(source.resolve()), source.name))
    return members


def submit(client: Client, path: Path, owner: str, report: Report | None = None) -> tuple[int, int]:
    """Submit the description at ``path``; return (cluster id, number of jobs).

    ``report(what, done, total)``, if given, hears how far the submission is (the CLI
    draws a progress bar with it for big clusters).
    """
    text = read_description(path)
    iwd = Path.cwd()
    # One parse before any server call refuses a bad description; the jobs are parsed
    # again with the cluster id once it is allocated.
    draft = parse_submit(text, source=str(path), iwd=iwd, cluster_id=0, owner=owner)
    check_inputs(draft)
    identities = _proxy_identities(draft)
    cluster_id = int(client.call("POST", "/api/v1/clusters")["cluster_id"])
    specs = parse_submit(text, source=str(path), iwd=iwd, cluster_id=cluster_id, owner=owner)
    uploaded: dict[tuple[tuple[str, str], ...], str] = {}
    final: list[JobSpec] = []
    for number, spec in enumerate(specs):
        members = tuple(sorted(input_members(spec)))
        if members and members not in uploaded:
            if report is not None:
                report(f"cluster {cluster_id}: input sandboxes", number, len(specs))
            uploaded[members] = _upload(client, list(members))
        digest = uploaded.get(members) if members else None
        identity = identities.get(spec.x509userproxy) if spec.x509userproxy else None
        final.append(spec.model_copy(update={"input_sandbox": digest, "x509_identity": identity}))
    if report is not None:
        report(f"sending {len(final)} jobs of cluster {cluster_id}", len(final), len(final))
    body = ClusterSubmission(jobs=final).model_dump(mode="json")
    answer = client.call("POST", f"/api/v1/clusters/{cluster_id}/jobs", json=body)
    for warning in answer.get("warnings") or ():  # e.g. no mail relay for notification
        sys.stderr.write(f"pilotage: warning: {warning}\n")
    return cluster_id, int(answer["jobs"])


def _proxy_identities(specs: list[JobSpec]) -> dict[str, str]:
    """The identity of each proxy file the jobs name (``x509userproxy``), read once each."""
    from pilotage.cli.credentials import proxy_identity

    paths = {spec.x509userproxy for spec in specs if spec.x509userproxy is not None}
    return {path: proxy_identity(Path(path)) for path in sorted(paths)}


def _upload(client: Client, members: list[tuple[str, str]]) -> str:
    with tempfile.TemporaryFile() as tar:
        sandbox.pack(members, tar, max_bytes=MAX_INPUT_BYTES)
        tar.seek(0)
        return str(client.upload("/api/v1/sandboxes", tar)["digest"])


def fetch_outputs(client: Client, job: dict[str, Any], into: Path | None = None) -> list[str]:
    """Bring a finished job's output sandbox back into its submit directory (or ``into``).

    The tar is unpacked with every safety check into a fresh directory first, then merged
    in: each file replaces its namesake atomically and a symlink planted in the submit
    directory is replaced, never written through.
    """
    if not job.get("has_output"):
        return []
    dest = into or Path(job["iwd"])
    work = Path(tempfile.mkdtemp(prefix=".pilotage-out-", dir=dest))
    try:
        with client.stream(f"/api/v1/jobs/{job['id']}/output") as response:
            reader = _ResponseReader(response.iter_bytes())
            sandbox.extract(cast(BinaryIO, reader), work, max_bytes=MAX_INPUT_BYTES)
        _remap(work, dest, job.get("transfer_output_remaps") or {})
        return _merge(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remap(work: Path, iwd: Path, remaps: dict[str, str]) -> None:
    """Move each remapped output from the unpacked tree to its destination, as
    ``transfer_output_remaps`` asks; a destination whose directory is missing is
    refused with its name, and the output then stays in ``initialdir``."""
    for name, destination in remaps.items():
        source = work / name
        if source.is_symlink() or not source.is_file():
            continue
        target = iwd / destination  # an absolute destination replaces iwd
        if not target.parent.is_dir():
            sys.stderr.write(
                f"pilotage: warning: transfer_output_remaps: {target.parent} does not exist; "
                f"{name} is left in {iwd}\n"
            )
            continue
        if target.is_symlink():
            target.unlink()
        shutil.move(source, target)  # the destination may be on another file system


def _merge(source: Path, dest: Path, prefix: str = "") -> list[str]:
    """Move the tree ``source`` into ``dest``: directories are merged (a symlink or file
    in a directory's place is replaced by a real directory), files replace their
    namesakes atomically. Returns the files placed, relative to ``dest``."""
    placed: list[str] = []
    for entry in sorted(source.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
            placed += _merge(entry, target, f"{prefix}{entry.name}/")
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            _place(entry, target)
            placed.append(prefix + entry.name)
    return placed


def _place(entry: Path, target: Path) -> None:
    """Put the unpacked file ``entry`` at ``target`` atomically. When ``target``'s
    directory is another file system (a mount inside the submit directory), the file is
    copied next to it first, then renamed over it."""
    try:
        os.replace(entry, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    fd, name = tempfile.mkstemp(prefix=".pilotage-out-", dir=target.parent)
    os.close(fd)
    try:
        if entry.is_symlink():
            os.unlink(name)
            os.symlink(os.readlink(entry), name)
        else:
            shutil.copyfile(entry, name)
            shutil.copymode(entry, name)
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


class _ResponseReader:
    """A file-like reader over an iterator of byte chunks."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def write_user_log(
    path: Path,
    history: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    *,
    json_form: bool = False,
) -> None:
    """Write the event log of the jobs sharing one ``log`` file in HTCondor's format.

    The whole file is rewritten from the server's history each time, so it is always
    complete and in time order however often outputs are fetched.
    """
    host = f"<{socket.gethostname()}>"
    events = [
        e for job, changes in history for e in eventlog.events_of(job, changes, submit_host=host)
    ]
    text = eventlog.render_json(events) if json_form else eventlog.render_text(events)
    path.write_text(text, encoding="utf-8")
