"""The files the agent writes for a switched claim: the job's credential, the job wrapper.

The job's credential: the agent makes a key and a CSR (``cryptography``, imported only
in ``--switch`` mode, where the switch needs it on the node anyway), the server signs a
proxy with the claim's one-time key, and the file is written in the grid order. The job
wrapper (:mod:`pilotage.pilot.wrapper`) is written once per agent into its work
directory, where the job's owner can read and run it but never change it.
"""

from __future__ import annotations

import os
import pkgutil
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pilotage.errors import OperatorError, UserError

from .client import error_kind
from .wire import Failure, HoldCode

NO_CREDENTIAL = (
    "this pilot runs jobs only under their owner's identity; submit with use_x509userproxy"
)
#: Refusals of a credential release that hold the job (the credential, not the pilot, is bad).
_HOLDING = ("NoStoredCredential", "IdentityChanged", "StoredCredentialUnusable")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.S)

_wrapper_lock = threading.Lock()
_wrappers: dict[Path, Path] = {}


def install_wrapper(workdir: Path) -> Path:
    """Write the job wrapper into ``workdir`` (once per agent), mode 0644; its path.

    The file is the pilot's in the pilot's directory: the user can read and run it, never
    change it. It is replaced atomically if an older one is there.
    """
    with _wrapper_lock:
        if workdir in _wrappers:
            return _wrappers[workdir]
        source = pkgutil.get_data("pilotage.pilot", "wrapper.py")
        if source is None:
            raise OperatorError("the job wrapper (pilotage/pilot/wrapper.py) is missing")
        path = workdir / "pilotage-job-wrapper.py"
        tmp = workdir / f".pilotage-job-wrapper.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(source)
        os.chmod(tmp, 0o644)  # whatever the umask: the job's owner must read it
        os.replace(tmp, path)
        _wrappers[workdir] = path
        return path


def check_switch_mode() -> None:
    """Refuse ``--switch`` at start on a node without ``cryptography``."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise OperatorError(
            "--switch needs the Python package cryptography (the switch needs it too): "
            "the agent makes the key of each job's credential"
        ) from None


def fetch(call: Callable[[str, str, dict[str, Any] | None], Any]) -> tuple[bytes, Any]:
    """The job's credential as the proxy file's bytes, and the server's release (its
    identity and times). ``call(what, path, body)`` posts to the claim's ``path``: the
    one-time key first, then the release, for a CSR of a key made here."""
    issued = call("credential key", "/credential-key", None)
    key_pem, csr_pem = make_key_request()
    body = {"v": 1, "key": str(issued["key"]), "csr_pem": csr_pem}
    released = call("credential", "/credential", body)
    return proxy_file_bytes(str(released["chain_pem"]), key_pem), released


def refusal_hold(exc: UserError) -> Failure | None:
    """The hold for a refused release that the job's owner must fix; None for others."""
    kind = error_kind(exc)
    if kind == "JobWithoutCredential":
        return Failure(HoldCode.IDENTITY, NO_CREDENTIAL)
    if kind in _HOLDING:
        return Failure(HoldCode.IDENTITY, f"the job's credential cannot be released: {exc.message}")
    return None


def make_key_request() -> tuple[bytes, str]:
    """A new RSA key (PEM) and a CSR for it (PEM); the subject is ignored by the server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pilotage-agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def proxy_file_bytes(chain_pem: str, key_pem: bytes) -> bytes:
    """The grid order: the released proxy certificate, its key, then the rest of the chain."""
    certs = _PEM_CERT.findall(chain_pem.encode())
    if not certs:
        raise OperatorError("the server's credential release holds no certificate")
    return b"".join(_line_ended(c) for c in (certs[0], key_pem, *certs[1:]))


def _line_ended(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"
