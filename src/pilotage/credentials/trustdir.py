"""Writing trust directories in the grid layout, readable by grid tools and OpenSSL.

For each CA: ``<hash>.0`` (certificate), ``<hash>.r0`` (CRL), and its namespace policy
twice, as ``<hash>.namespaces`` (IGTF) and ``<hash>.signing_policy`` (Globus), where
``<hash>`` is OpenSSL's ``subject_hash`` of the CA's subject (``openssl x509 -hash``),
computed by ``pilotage.x509.der.subject_hash``. Validators (ours with its strict
default, ``grid-proxy-init -verify``, canl) refuse a CA without such a policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotage.credentials.atomic import write_file
from pilotage.errors import BadInput
from pilotage.x509.certificate import dn_slash
from pilotage.x509.der import subject_hash

__all__ = ["ALL_SUBJECTS", "check_policy_text", "glob_to_regex", "subject_hash", "write_trust_dir"]

#: The namespace of a pool's own CA unless told otherwise: every subject.
ALL_SUBJECTS = ("*",)
#: Characters that neither policy format can carry inside its quotes.
_UNQUOTABLE = re.compile(r"['\"\\\n\r]")
_REGEX_SPECIAL = re.compile(r"([.^$+?{}\[\]|()])")


def check_policy_text(text: str, what: str) -> None:
    """Refuse a DN or pattern that a policy file could not quote."""
    if _UNQUOTABLE.search(text):
        raise BadInput(
            f"The {what} '{text}' holds a quote, a backslash or a line break, which "
            "namespace policy files cannot carry; choose another."
        )


def write_trust_dir(
    directory: Path,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    *,
    subjects: Sequence[str] = ALL_SUBJECTS,
) -> list[Path]:
    """Write ``ca_cert``, its ``crl`` and its policy into ``directory``; return the files.

    ``subjects`` are the globs (``*`` for any characters) of the DNs this CA may sign.
    Files of other CAs are left alone, so several CAs can share one directory. A CA
    whose hash collides with another's would need ``.1``; that case is refused instead.
    """
    issuer = dn_slash(ca_cert.subject)
    check_policy_text(issuer, "CA subject")
    for glob in subjects:
        check_policy_text(glob, "namespace pattern")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    name_hash = subject_hash(ca_cert.subject.public_bytes())
    cert_path = directory / f"{name_hash}.0"
    pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    if cert_path.exists() and cert_path.read_bytes() != pem:
        other = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if other.subject != ca_cert.subject:
            raise FileExistsError(f"{cert_path} holds another CA, '{dn_slash(other.subject)}'")
    written = [write_file(cert_path, pem, mode=0o644)]
    if crl is not None:
        crl_pem = crl.public_bytes(serialization.Encoding.PEM)
        written.append(write_file(directory / f"{name_hash}.r0", crl_pem, mode=0o644))
    namespaces = "#NAMESPACES-VERSION: 1.0\n" + "".join(
        f'TO Issuer "{issuer}" \\\n  PERMIT Subject "{glob_to_regex(glob)}"\n' for glob in subjects
    )
    patterns = " ".join(f'"{glob}"' for glob in subjects)
    signing_policy = (
        f"access_id_CA X509 '{issuer}'\n"
        "pos_rights globus CA:sign\n"
        f"cond_subjects globus '{patterns}'\n"
    )
    for suffix, text in (("namespaces", namespaces), ("signing_policy", signing_policy)):
        written.append(write_file(directory / f"{name_hash}.{suffix}", text.encode(), mode=0o644))
    return written


def glob_to_regex(glob: str) -> str:
    """The IGTF regular expression of a glob: ``*`` is ``.*``, the rest matches itself."""
    return ".*".join(_REGEX_SPECIAL.sub(r"\\\1", part) for part in glob.split("*"))
