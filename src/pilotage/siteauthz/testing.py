"""Running ``pilotage site-authz serve`` for tests and benchmarks, on 127.0.0.1 port 0.

Shipped in the package (as ``pilotage.credentials.x509_testing`` is) so the switch's tests,
the service's tests and ``bench/switch.py`` start the real service the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from pilotage.credentials.ca import CertificateAuthority


class Service:
    """A running service subprocess: its URL, its CA file, and how to reload or stop it."""

    def __init__(
        self, policy: Path, ca: CertificateAuthority, directory: Path, *, decisions: bool = False
    ) -> None:
        host = ca.issue_host("localhost")
        self.cert, self.key = directory / "authz.pem", directory / "authz.key"
        self.cert.write_bytes(host.cert_pem())
        self.key.write_bytes(host.key_pem())
        self.key.chmod(0o600)
        self.ca_file = directory / "authz-ca.pem"
        self.ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        self.policy = policy
        self.port_file = directory / "authz.port"
        self.log = directory / "authz.log"
        #: With ``decisions``, the service's decision log (``--decision-log``).
        self.decision_log = directory / "decisions.jsonl" if decisions else None
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 20) -> Service:
        """Start the service and wait until it listens."""
        self.port_file.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "pilotage.cli.siteauthz", "serve",
            "--policy", str(self.policy), "--cert", str(self.cert), "--key", str(self.key),
            "--host", "127.0.0.1", "--port", "0", "--port-file", str(self.port_file),
        ]  # fmt: skip
        if self.decision_log is not None:
            command += ["--decision-log", str(self.decision_log)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while not (self.port_file.exists() and self.port_file.read_text().endswith("\n")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"site-authz did not start: {self.log.read_text()}")
            time.sleep(0.05)
        port = int(self.port_file.read_text())
        self.url = f"https://localhost:{port}/v1/decision"
        _wait_listening(port, deadline)
        return self

    def decisions(self) -> list[dict[str, Any]]:
        """The decision log's records so far (none without ``decisions``)."""
        if self.decision_log is None or not self.decision_log.exists():
            return []
        # Whole lines only: the last piece is empty, or a line still being written.
        lines = self.decision_log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def reload(self) -> None:
        """Send SIGHUP: the service reloads its policy."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_listening(port: int, deadline: float) -> None:
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ca_for_service(directory: Path) -> CertificateAuthority:
    """A throwaway CA for the service's TLS certificate."""
    os.makedirs(directory, exist_ok=True)
    return CertificateAuthority.init(directory / "authz-ca", "CN=site authz test CA,O=Example",
                                     key_bits=2048)  # fmt: skip
