"""A small X.509 certification authority over a directory, for pools and tests.

Layout of the CA directory (mode 0700)::

    ca.key            the CA's private key (0600)
    ca.pem            the CA certificate
    serial            the next serial number (decimal)
    index.json        every certificate issued, with its revocation if any; the CRL number;
                      the CA's namespace: globs of the subjects it may sign (``subjects``)
    crl.pem           the latest CRL
    issued/<n>.pem    a copy of each certificate issued
    certificates/     a trust directory in the grid layout, kept current (see ``trustdir``)

User and host certificates get RSA 2048 keys (what grid tools expect) and SHA-256
signatures. The trust directory carries the CA's namespace as ``<hash>.namespaces`` and
``<hash>.signing_policy``, so validators that require one (ours by default) accept the
CA; ``issue`` refuses a subject outside it. Mutations take an exclusive lock on the
directory, so two ``pilotage ca`` commands never hand out the same serial.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pilotage.credentials.atomic import write_file
from pilotage.credentials.names import parse_subject
from pilotage.credentials.trustdir import (
    ALL_SUBJECTS,
    check_policy_text,
    glob_to_regex,
    write_trust_dir,
)
from pilotage.errors import BadInput, Conflict, NotFound
from pilotage.x509.certificate import dn_slash, key_matches

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class IssuedEntry:
    """One line of the CA's index: a certificate issued, and its revocation if any."""

    serial: int
    subject: str
    subject_dn: str
    kind: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class IssuedCredential:
    """A certificate just issued, with its new private key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#1 PEM, as grid tools read it."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


class CertificateAuthority:
    """A CA whose state lives in ``directory``; open one with ``init`` or the constructor."""

    def __init__(self, directory: str | os.PathLike[str], *, crl_days: int = 30) -> None:
        self.directory = Path(directory)
        self.crl_days = crl_days
        try:
            self.cert = x509.load_pem_x509_certificate((self.directory / "ca.pem").read_bytes())
            key = serialization.load_pem_private_key(
                (self.directory / "ca.key").read_bytes(), password=None
            )
        except FileNotFoundError as exc:
            raise NotFound(
                f"{self.directory} is not a CA directory (run 'pilotage ca init')."
            ) from exc
        except (ValueError, TypeError) as exc:
            raise BadInput(f"The CA files in {self.directory} cannot be read ({exc}).") from exc
        if not isinstance(key, rsa.RSAPrivateKey) or not key_matches(self.cert, key):
            raise BadInput(f"The CA key in {self.directory} does not match its certificate.")
        self._key = key

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        subject: str,
        *,
        lifetime_days: int = 3650,
        key_bits: int = 3072,
        crl_days: int = 30,
        subjects: Sequence[str] = ALL_SUBJECTS,
    ) -> CertificateAuthority:
        """Create a new CA in ``directory`` (which must not already hold one).

        ``subjects``: globs (``/O=Example/*``) of the DNs it may sign; every DN by default.
        """
        path = Path(directory)
        if (path / "ca.pem").exists():
            raise Conflict(f"{path} already holds a CA.")
        name = parse_subject(subject)
        check_policy_text(dn_slash(name), "CA subject")
        if not subjects:
            raise BadInput("A CA needs at least one subject pattern in its namespace.")
        for glob in subjects:
            check_policy_text(glob, "namespace pattern")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / "issued").mkdir(mode=0o700, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=lifetime_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        write_file(path / "ca.key", key_pem, mode=0o600, replace=False)
        write_file(path / "serial", b"1\n", mode=0o600)
        index = {"crl_number": 0, "issued": [], "subjects": list(subjects)}
        write_file(path / "index.json", (json.dumps(index) + "\n").encode(), mode=0o600)
        write_file(path / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        ca = cls(path, crl_days=crl_days)
        ca.crl()
        return ca

    def issue_user(self, subject: str, *, lifetime_days: int = 365) -> IssuedCredential:
        """A user certificate for ``subject``: ``CN=Alice,O=Example`` or ``/O=Example/CN=Alice``."""
        name = parse_subject(subject)
        extensions: list[x509.ExtensionType] = [
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
            ),
        ]
        return self._issue(name, "user", lifetime_days, extensions)

    def issue_host(self, host: str, *, lifetime_days: int = 395) -> IssuedCredential:
        """A host certificate: the CA's subject with its CN replaced by ``host``, plus a SAN."""
        host = host.strip().lower()
        if not _HOST_NAME.match(host):
            raise BadInput(f"'{host}' is not a valid host name.")
        rdns = [r for r in self.cert.subject.rdns if all(a.oid != NameOID.COMMON_NAME for a in r)]
        name = x509.Name(
            [*rdns, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, host)])]
        )
        extensions: list[x509.ExtensionType] = [
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            x509.SubjectAlternativeName([x509.DNSName(host)]),
        ]
        return self._issue(name, "host", lifetime_days, extensions)

    def _issue(
        self, name: x509.Name, kind: str, lifetime_days: int, extensions: list[x509.ExtensionType]
    ) -> IssuedCredential:
        self._check_namespace(name)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(days=lifetime_days), self.cert.not_valid_after_utc)
        with self._locked():
            serial = int((self.directory / "serial").read_text())
            builder = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                # digitalSignature: RFC 3820 requires it of a certificate that signs proxies.
                .add_extension(
                    _key_usage(digital_signature=True, key_encipherment=True), critical=True
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                    critical=False,
                )
            )
            for ext in extensions:
                builder = builder.add_extension(ext, critical=False)
            cert = builder.sign(self._key, hashes.SHA256())
            write_file(self.directory / "serial", f"{serial + 1}\n".encode(), mode=0o600)
            write_file(
                self.directory / "issued" / f"{serial}.pem",
                cert.public_bytes(serialization.Encoding.PEM),
                mode=0o644,
                replace=False,
            )
            index = self._read_index()
            entry = IssuedEntry(
                serial,
                name.rfc4514_string(),
                dn_slash(name),
                kind,
                cert.not_valid_after_utc.isoformat(),
            )
            index["issued"].append(asdict(entry))
            self._write_index(index)
        return IssuedCredential(cert, key)

    def issued(self) -> list[IssuedEntry]:
        """Every certificate this CA has issued, oldest first."""
        return [IssuedEntry(**e) for e in self._read_index()["issued"]]

    def revoke(self, target: int | x509.Certificate, *, reason: str = "unspecified") -> IssuedEntry:
        """Revoke a certificate (by serial or the certificate itself) and publish a new CRL."""
        if isinstance(target, x509.Certificate):
            if target.issuer != self.cert.subject:
                raise BadInput(
                    f"The certificate '{dn_slash(target.subject)}' was not issued by this CA."
                )
            target = target.serial_number
        try:
            x509.ReasonFlags(reason)
        except ValueError as exc:
            raise BadInput(f"'{reason}' is not a revocation reason (e.g. keyCompromise).") from exc
        with self._locked():
            index = self._read_index()
            entries = [e for e in index["issued"] if e["serial"] == target]
            if not entries:
                raise NotFound(f"This CA issued no certificate with serial {target}.")
            if entries[0]["revoked_at"] is None:
                entries[0]["revoked_at"] = (
                    dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
                )
                entries[0]["reason"] = reason
                self._write_index(index)
        self.crl()
        return IssuedEntry(**entries[0])

    def crl(self) -> x509.CertificateRevocationList:
        """Sign a fresh CRL, write it to ``crl.pem`` and refresh ``certificates/``."""
        now = dt.datetime.now(dt.UTC)
        with self._locked():
            index = self._read_index()
            index["crl_number"] += 1
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(self.cert.subject)
                .last_update(now - dt.timedelta(minutes=5))
                .next_update(now + dt.timedelta(days=self.crl_days))
                .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                    critical=False,
                )
            )
            for entry in index["issued"]:
                if entry["revoked_at"] is None:
                    continue
                revoked = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(entry["serial"])
                    .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                )
                if entry["reason"] != "unspecified":
                    revoked = revoked.add_extension(
                        x509.CRLReason(x509.ReasonFlags(entry["reason"])), critical=False
                    )
                builder = builder.add_revoked_certificate(revoked.build())
            crl = builder.sign(self._key, hashes.SHA256())
            self._write_index(index)
            write_file(
                self.directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM), mode=0o644
            )
            write_trust_dir(self.directory / "certificates", self.cert, crl, subjects=self.subjects)
        return crl

    @property
    def subjects(self) -> tuple[str, ...]:
        """Globs of the subjects this CA may sign (older CA directories: every subject)."""
        return tuple(self._read_index().get("subjects", ALL_SUBJECTS))

    def export_trust_dir(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write this CA's ``<hash>.0``, ``.r0``, ``.namespaces`` and ``.signing_policy``."""
        crl = x509.load_pem_x509_crl((self.directory / "crl.pem").read_bytes())
        return write_trust_dir(Path(directory), self.cert, crl, subjects=self.subjects)

    def _check_namespace(self, name: x509.Name) -> None:
        # Why: a certificate outside the CA's own policy would be refused by every validator.
        dn = dn_slash(name)
        if not any(re.fullmatch(glob_to_regex(g), dn, re.IGNORECASE) for g in self.subjects):
            raise BadInput(
                f"The subject '{dn}' is outside this CA's namespace "
                f"({', '.join(self.subjects)}); choose a subject within it."
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        return json.loads((self.directory / "index.json").read_text())  # type: ignore[no-any-return]

    def _write_index(self, index: dict[str, Any]) -> None:
        write_file(
            self.directory / "index.json", (json.dumps(index, indent=1) + "\n").encode(), mode=0o600
        )


def _key_usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})
