"""The trusted CAs and CRLs, read from a grid CA directory.

The usual layout (``/etc/grid-security/certificates``): ``<hash>.N`` CA certificates,
``<hash>.rN`` CRLs, ``*.pem`` CA certificates, and each CA's namespace policy in
``<hash>.namespaces`` or ``<hash>.signing_policy`` (see ``namespaces``); other files
(``NAME.namespaces``, ``.info``, ``.crl_url``) are not read. Imports: the standard
library, ``cryptography`` and the sibling modules ``certificate``, ``der``,
``namespaces`` and ``errors``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .certificate import PublicKey, is_ca, name_key, subject_of, utc_text
from .der import subject_hash
from .errors import (
    CredentialError,
    NamespacePolicyMalformed,
    NamespacePolicyMissing,
    NamespaceViolation,
    Revoked,
    TrustStoreError,
)
from .namespaces import CaPolicy, PolicySyntaxError, decide, parse_namespaces, parse_signing_policy

_CA_FILE = re.compile(r"^[0-9a-f]{8}\.[0-9]+$|\.pem$")
_CRL_FILE = re.compile(r"^[0-9a-f]{8}\.r[0-9]+$")
_POLICY_FILE = re.compile(r"^[0-9a-f]{8}\.(namespaces|signing_policy)$")
#: Policy file kinds, the one that decides first (as the grid's own tools do).
_POLICY_KINDS = ("namespaces", "signing_policy")
_SHA256 = hashes.SHA256()


class TrustStore:
    """The trusted CA certificates and their CRLs, usually read from a grid CA directory.

    Invariant: every certificate held is a CA (basicConstraints cA true); files that are
    not, or cannot be read, are listed in ``skipped`` and otherwise ignored, so one bad
    file in a site's directory does not stop the others from working. A policy file that
    cannot be parsed is kept as its error: chains through its CA are refused, others pass.

    ``require_namespaces`` (default True): a CA with neither ``<hash>.namespaces`` nor
    ``<hash>.signing_policy`` signs nothing. False keeps the old rule for such CAs only
    (a site whose directory lacks the files); a CA that has a file is always held to it.
    """

    def __init__(
        self,
        cas: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        *,
        directory: Path | None = None,
        require_namespaces: bool = True,
    ) -> None:
        self.directory = directory
        self.require_namespaces = require_namespaces
        self.skipped: tuple[str, ...] = ()
        self._stamp: tuple[tuple[str, int, int], ...] = ()
        self._policies: dict[str, CaPolicy | str] = {}
        self._set(list(cas), list(crls), [])

    @classmethod
    def from_directory(
        cls, path: str | os.PathLike[str], *, require_namespaces: bool = True
    ) -> TrustStore:
        """Load the CA certificates, CRLs and namespace policies of the directory ``path``."""
        store = cls([], directory=Path(path), require_namespaces=require_namespaces)
        store.refresh()
        return store

    def refresh(self) -> bool:
        """Re-read the directory if any file changed (fetch-crl rewrites CRLs); say if it did."""
        if self.directory is None:
            return False
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError as exc:
            raise TrustStoreError(
                f"The trust directory {self.directory} cannot be read ({exc})."
            ) from exc
        stamp_list: list[tuple[str, int, int]] = []
        broken: list[str] = []
        for entry in entries:
            if not (
                _CA_FILE.search(entry.name)
                or _CRL_FILE.match(entry.name)
                or _POLICY_FILE.match(entry.name)
            ):
                continue
            try:
                st = entry.stat()  # follows the <hash>.0 -> NAME.pem links
            except OSError as exc:
                broken.append(f"{entry.name}: {exc.strerror}")
                continue
            stamp_list.append((entry.name, st.st_mtime_ns, st.st_size))
        stamp = tuple(stamp_list)
        if stamp == self._stamp and self._stamp:
            return False
        cas: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        policies: dict[str, CaPolicy | str] = {}
        skipped = broken
        for name, _, _ in stamp:
            try:
                data = (self.directory / name).read_bytes()
                if _POLICY_FILE.match(name):
                    policies[name] = _load_policy(self.directory / name, data)
                elif _CRL_FILE.match(name):
                    crls.append(_load_crl(data))
                else:
                    cas.extend(_load_certs(data))
            except (OSError, ValueError) as exc:
                skipped.append(f"{name}: {exc}")
        self._stamp = stamp
        self._policies = policies
        self._set(cas, crls, skipped)
        return True

    def _set(
        self,
        cas: list[x509.Certificate],
        crls: list[x509.CertificateRevocationList],
        skipped: list[str],
    ) -> None:
        by_subject: dict[bytes, dict[bytes, x509.Certificate]] = {}
        for cert in cas:
            try:
                if not is_ca(cert):
                    skipped.append(f"{subject_of(cert)}: not a CA certificate")
                    continue
                key = name_key(cert.subject)
            except CredentialError as exc:
                skipped.append(f"{subject_of(cert)}: {exc}")
                continue
            # Dedupe: real directories hold the same CA as NAME.pem, <hash>.0 and old hashes.
            by_subject.setdefault(key, {})[cert.fingerprint(_SHA256)] = cert
        by_issuer: dict[bytes, list[x509.CertificateRevocationList]] = {}
        for crl in crls:
            try:
                by_issuer.setdefault(name_key(crl.issuer), []).append(crl)
            except CredentialError as exc:
                skipped.append(f"a CRL: {exc}")
        # One assignment each, so a concurrent reader sees either the old or the new state.
        self._cas = {k: tuple(v.values()) for k, v in by_subject.items()}
        self._crls = {k: tuple(v) for k, v in by_issuer.items()}
        self.skipped = tuple(skipped)

    @property
    def ca_count(self) -> int:
        """How many distinct CA certificates are trusted."""
        return sum(len(v) for v in self._cas.values())

    def cas_named(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The trusted CA certificates whose subject is ``name`` (several during a rollover)."""
        return self._cas.get(name_key(name), ())

    def crls_of(self, name: x509.Name) -> tuple[x509.CertificateRevocationList, ...]:
        """The CRLs in the store whose issuer is ``name`` (signatures not yet checked)."""
        return self._crls.get(name_key(name), ())

    def check_namespace(self, cert: x509.Certificate, ca: x509.Certificate) -> None:
        """Refuse ``cert`` unless the namespace policy of ``ca``, its issuer, permits its subject.

        ``<hash>.namespaces`` decides when it speaks of ``ca``, else ``<hash>.signing_policy``.
        """
        # Why: without it any CA of the directory could sign any DN (review finding 11).
        prefix = subject_hash(ca.subject.public_bytes())
        for kind in _POLICY_KINDS:
            policy = self._policies.get(f"{prefix}.{kind}")
            if isinstance(policy, str):
                raise NamespacePolicyMalformed(policy)
            rules = policy.rules_for(ca) if policy is not None else ()
            if policy is None or not rules:
                continue
            permitted, rule = decide(cert.subject, rules)
            if permitted:
                return
            why = (
                f"rule '{rule.text}' (line {rule.line}) denies it"
                if rule is not None
                else "no rule permits it"
            )
            raise NamespaceViolation(
                f"The CA '{subject_of(ca)}' may not sign '{subject_of(cert)}': {why} "
                f"in {policy.file}."
            )
        if self.require_namespaces:
            raise NamespacePolicyMissing(
                f"The CA '{subject_of(ca)}' has no namespace policy ({prefix}.namespaces or "
                f"{prefix}.signing_policy) in the trust directory {self.directory}; the site "
                "must install it, or allow CAs without one in its configuration."
            )

    def check_revocation(
        self,
        cert: x509.Certificate,
        ca: x509.Certificate,
        now: dt.datetime,
        *,
        require_crl: bool = False,
    ) -> None:
        """Refuse ``cert`` if the newest CRL of ``ca`` that ``ca``'s key signed lists it."""
        crls = self.crls_of(ca.subject)
        # Why: grid CAs publish CRLs that fetch-crl installs; a site may insist on having one.
        if not crls:
            if require_crl:
                raise TrustStoreError(
                    f"The trust directory holds no CRL of the CA '{subject_of(ca)}'."
                )
            return
        public_key = ca.public_key()
        if not isinstance(public_key, PublicKey):
            raise TrustStoreError(f"The CA '{subject_of(ca)}' has an unsupported key type.")
        signed = [crl for crl in crls if crl.is_signature_valid(public_key)]
        # Why: a CRL we cannot verify could hide revocations; the site must fix it (fetch-crl).
        if not signed:
            raise TrustStoreError(f"The CRL of the CA '{subject_of(ca)}' is not signed by that CA.")
        crl = max(signed, key=lambda c: c.last_update_utc)
        # Why: a CRL past its nextUpdate may miss recent revocations; again the site's to fix.
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise TrustStoreError(
                f"The CRL of the CA '{subject_of(ca)}' expired at "
                f"{utc_text(crl.next_update_utc)}; the site must refresh it."
            )
        # Why: the CA withdrew this certificate (stolen key, person gone); nothing under it holds.
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise Revoked(
                f"The certificate '{subject_of(cert)}' (serial {cert.serial_number}) is revoked by "
                f"its CA '{subject_of(ca)}'."
            )


def _load_policy(path: Path, data: bytes) -> CaPolicy | str:
    """The parsed policy file, or the sentence saying why it cannot be used."""
    try:
        text = data.decode("utf-8")
        if path.name.endswith(".namespaces"):
            return parse_namespaces(text, str(path))
        return parse_signing_policy(text, str(path))
    except (UnicodeDecodeError, PolicySyntaxError) as exc:
        return f"The namespace policy file {path} is malformed ({exc}); the site must fix it."


def _load_certs(data: bytes) -> list[x509.Certificate]:
    return (
        x509.load_pem_x509_certificates(data)
        if b"-----BEGIN" in data
        else [x509.load_der_x509_certificate(data)]
    )


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)
