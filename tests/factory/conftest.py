"""Real services for the factory's tests: sshd, Slurm (with munge), all thrown away after.

``condor_pool`` uses the host's own HTCondor when one is installed and skips otherwise,
even under ``CI=true`` (see its docstring).

``sshd_server`` runs OpenSSH's sshd on 127.0.0.1 on a free port with a throwaway host
key and one authorized key; ``slurm_cluster`` runs munged, slurmctld and slurmd for
this host from a minimal slurm.conf. Both are session-scoped (each takes a second or
two to start), skip locally when the software is missing and fail when ``CI=true``
(``require_service``). Each backend of the conformance suite is built on them by
``batch``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from pilotage import testing_slurm
from pilotage.factory.backends.base import BatchSystem
from pilotage.factory.backends.condor import CondorBatch
from pilotage.factory.backends.local import LocalBatch
from pilotage.factory.backends.slurm import SlurmBatch
from pilotage.factory.backends.ssh import SshBatch
from pilotage.testing import end_processes
from pilotage.testing_slurm import Slurm, SlurmUnavailable, free_port, wait_for

Require = Callable[[str, str], NoReturn]


@dataclass(frozen=True)
class Sshd:
    """A running sshd and what a client needs to log in."""

    port: int
    user: str
    identity: Path
    known_hosts: Path

    def params(self, remote_root: str) -> dict[str, str | int | float | bool]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "remote_root": remote_root,
        }


@pytest.fixture(scope="session")
def sshd_server(require_service: Require) -> Iterator[Sshd]:
    """OpenSSH's sshd on 127.0.0.1, a free port, a throwaway host key, one authorized key."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        require_service("sshd", "install openssh-server and openssh-client")
    base = Path(tempfile.mkdtemp(prefix="pilotage-sshd-"))
    os.chmod(base, 0o755)
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / key)], check=True
        )
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    port = free_port()
    host_pub = (base / "host_key.pub").read_text().split()
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (base / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPidFile {base / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nMaxStartups 50\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    log = base / "sshd.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(base / "sshd_config")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Sshd(port, getpass.getuser(), base / "client_key", base / "known_hosts")
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')}")
            probe = SshBatch(server.params(str(base / "probe")))
            try:
                probe.status(["x"])
            except Exception:
                return False
            return True

        wait_for(answers, 30, "sshd", log)
        yield server
    finally:
        end_processes([process], grace_s=10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster(require_service: Require) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd for this host, as root, from a throwaway slurm.conf."""
    try:
        with testing_slurm.slurm_cluster() as cluster:
            yield cluster
    except SlurmUnavailable as exc:
        require_service("Slurm", str(exc))


@pytest.fixture(scope="session")
def condor_pool(require_service: Require) -> None:
    """A running HTCondor pool (schedd and startd), reached by this host's condor_q.

    The one exception to ``require_service``'s rule: HTCondor is not packaged for
    Debian and the ``htcondor`` wheel ships no daemons, so without ``condor_submit``
    the tests skip even under ``CI=true``. Once HTCondor is installed, a schedd that
    does not answer is a failure under CI as any other missing service.
    """
    if shutil.which("condor_submit") is None:
        pytest.skip(
            "HTCondor is not installed (no condor_submit on PATH; Debian has no package "
            "and the htcondor wheel ships no daemons): skipped even under CI=true"
        )
    answer = subprocess.run(["condor_q", "-totals"], capture_output=True, text=True)
    if answer.returncode != 0:
        require_service("HTCondor", f"condor_q failed: {answer.stderr.strip()[:300]}")


BACKENDS = ["local", "ssh", "slurm", "condor"]


@pytest.fixture(params=BACKENDS)
def batch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BatchSystem]:
    """Each backend of the conformance suite, on its real service."""
    backend: BatchSystem
    if request.param == "local":
        backend = LocalBatch(tmp_path / "pilots", grace_s=2)
    elif request.param == "ssh":
        server: Sshd = request.getfixturevalue("sshd_server")
        backend = SshBatch(server.params(str(tmp_path / "remote")), grace_s=1)
    elif request.param == "condor":
        request.getfixturevalue("condor_pool")
        os.chmod(tmp_path, 0o755)  # the shadow writes the output as the job's owner
        backend = CondorBatch({"log_dir": str(tmp_path / "condor-logs")})
    else:
        slurm: Slurm = request.getfixturevalue("slurm_cluster")
        log_dir = tmp_path / "slurm-logs"
        log_dir.mkdir()
        os.chmod(tmp_path, 0o755)
        backend = SlurmBatch({"log_dir": str(log_dir), "slurm_conf": str(slurm.conf)})
    yield backend
    backend.close()


@dataclass(frozen=True)
class Squid:
    """A running Squid: its proxy URL and its access log."""

    url: str
    access_log: Path


@pytest.fixture(scope="session")
def squid_proxy(require_service: Require) -> Iterator[Squid]:
    """Squid on 127.0.0.1, a free port, a memory-only cache, from a throwaway config."""
    squid = shutil.which("squid") or (
        "/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else None
    )
    if squid is None:
        require_service("Squid", "install squid")
    base = Path(tempfile.mkdtemp(prefix="pilotage-squid-"))
    port = free_port()
    user = ""
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam("proxy")  # Debian's squid user
        os.chown(base, account.pw_uid, account.pw_gid)
        user = "cache_effective_user proxy\n"
    (base / "squid.conf").write_text(
        f"http_port 127.0.0.1:{port}\n{user}"
        f"pid_filename {base}/squid.pid\n"
        f"access_log stdio:{base}/access.log squid\n"
        f"cache_log {base}/cache.log\n"
        "cache_store_log none\n"
        f"coredump_dir {base}\n"
        "cache_mem 64 MB\n"
        "maximum_object_size_in_memory 16 MB\n"
        "maximum_object_size 16 MB\n"
        "acl loopback src 127.0.0.1/32\n"
        "http_access allow loopback\n"
        "http_access deny all\n"
        "shutdown_lifetime 1 seconds\n"
        "logfile_rotate 0\n"
    )
    with (base / "stdout.log").open("ab") as out:
        process = subprocess.Popen(
            [squid, "-N", "-f", str(base / "squid.conf")], stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def listening() -> bool:
            if process.poll() is not None:
                logs = [base / "stdout.log", base / "cache.log"]
                text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
                raise RuntimeError(f"squid exited: {text}")
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 30, "squid", base / "cache.log")
        yield Squid(f"http://127.0.0.1:{port}", base / "access.log")
    finally:
        end_processes([process], grace_s=15)
        shutil.rmtree(base, ignore_errors=True)
