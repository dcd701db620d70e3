"""The credential parts of a running server, built once at start-up and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pilotage.config import CredentialSettings, Settings
from pilotage.credentials.audit import AuditLog
from pilotage.credentials.authz import RoleRules
from pilotage.credentials.errors import X509Disabled
from pilotage.credentials.store import StoreKey
from pilotage.errors import OperatorError
from pilotage.statedir import StateDir
from pilotage.x509.chain import CredentialError, TrustStore


@dataclass
class CredentialService:
    """Role rules, the X.509 trust directory, the store key and the audit log."""

    settings: CredentialSettings
    rules: RoleRules
    store_key: StoreKey
    audit: AuditLog
    require_crl: bool
    _trust: TrustStore | None

    @staticmethod
    def check(settings: Settings) -> tuple[RoleRules, TrustStore | None]:
        """The ``[authz]`` rules and the ``[x509]`` trust directory the settings name, or
        :class:`OperatorError` naming the key (``pilotage config check`` runs this too)."""
        trust = None
        if settings.x509.ca_dir:
            try:
                trust = TrustStore.from_directory(
                    Path(settings.x509.ca_dir),
                    require_namespaces=settings.x509.require_namespaces,
                )
            except CredentialError as exc:
                raise OperatorError(f"configuration [x509] ca_dir: {exc.message}") from None
        return RoleRules(settings.authz), trust

    @classmethod
    def build(cls, state: StateDir, settings: Settings) -> CredentialService:
        """Read everything the configuration names; refuse at start what cannot work."""
        rules, trust = cls.check(settings)
        state.credential_audit_log.parent.mkdir(mode=0o700, exist_ok=True)
        return cls(
            settings=settings.credentials,
            rules=rules,
            store_key=StoreKey.load(state.store_key),
            audit=AuditLog(state.credential_audit_log),
            require_crl=settings.x509.require_crl,
            _trust=trust,
        )

    def trust(self) -> TrustStore:
        """The trust directory, re-read if a file changed (fetch-crl); refused when off."""
        if self._trust is None:
            raise X509Disabled(
                "this pool accepts no X.509 credential: its operator has set no [x509] ca_dir"
            )
        try:
            self._trust.refresh()
        except CredentialError as exc:
            raise OperatorError(f"the [x509] trust directory: {exc.message}") from None
        return self._trust
