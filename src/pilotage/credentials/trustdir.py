"""Writing trust directories in the grid layout, readable by grid tools and OpenSSL.

For each CA: ``<hash>.0`` (certificate), ``<hash>.r0`` (CRL) and ``<hash>.signing_policy``
(for Globus-based tools), where ``<hash>`` is OpenSSL's ``subject_hash`` of the CA's
subject (``openssl x509 -hash``), computed by ``pilotage.x509.der.subject_hash``.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotage.credentials.atomic import write_file
from pilotage.x509.certificate import dn_slash
from pilotage.x509.der import subject_hash

__all__ = ["subject_hash", "write_trust_dir"]


def write_trust_dir(
    directory: Path, ca_cert: x509.Certificate, crl: x509.CertificateRevocationList | None = None
) -> list[Path]:
    """Write ``ca_cert`` (and its ``crl``) into ``directory``; return the files written.

    Files of other CAs are left alone, so several CAs can share one directory. A CA
    whose hash collides with another's would need ``.1``; that case is refused instead.
    """
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
    policy = (
        f"access_id_CA X509 '{dn_slash(ca_cert.subject)}'\n"
        "pos_rights globus CA:sign\n"
        "cond_subjects globus '\"*\"'\n"
    )
    written.append(
        write_file(directory / f"{name_hash}.signing_policy", policy.encode(), mode=0o644)
    )
    return written
