"""The state directory of a pool: its keys, certificates, configuration, database, spool.

Layout::

    pilotage.toml           configuration (see pilotage.config)
    ca/ca.crt  ca/ca.key    the pool CA (key 0600)
    server/server.crt .key  the server's TLS certificate (localhost, 127.0.0.1, hostname)
    tokens/signing.pem      the token signing key (0600); older keys kept as signing-*.pem
    pilotage.db             the SQLite database (unless [server] db names another)
    spool/                  sandboxes, content-addressed
    server.sock             the server's Unix socket (local users, peer credentials)
    server.url              the server's HTTPS URL, written when it listens
    credentials/store.key   the credential store's AES-256 key (0600; pilotage.credentials.store)
    audit/credentials.log   every delegation and credential release attempt, as JSON lines
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI finds its state directory without loading these
    from pilotage.config import Settings

DEFAULT_CONFIG = """\
# pilotage pool configuration. Every key can also be set by environment variable
# PILOTAGE_<SECTION>_<KEY> (e.g. PILOTAGE_SERVER_PORT=9619) or by a command-line flag.

[pool]
name = "{name}"

[server]
host = "{host}"              # where to listen; "0.0.0.0" for remote pilots and users
port = 9618
{public_name_line}
# db = "postgresql://pilotage@dbhost/pilotage"   # default: SQLite in this directory
lease_s = 300.0           # a claim not renewed for this long returns its job to IDLE
heartbeat_s = 60.0        # how often agents renew their leases
idle_timeout_s = 1200.0   # an agent with nothing to run exits after this long
max_sandbox_mb = 256      # largest input or output sandbox accepted
max_attempts = 5          # a job started and lost this many times is held
# admins = ["alice"]      # Unix users with the admin role (besides root and the pool's owner)

# Who may hold each role: exact identities, "re:<regex>" or "fqan:<FQAN>" (docs/security.md).
# [authz]
# user = ["re:^/DC=org/DC=example/.*$"]
# pilot = ["fqan:/pilotage/Role=pilot"]

# [x509]
# ca_dir = "/etc/grid-security/certificates"   # trust directory; empty: no X.509 login

# [credentials]
# lifetime_margin_s = 3600     # a job's credential must outlive its walltime by this much
# release_lifetime_s = 3600    # lifetime of the proxies released to pilots
"""


def default_state_dir() -> Path:
    """``$PILOTAGE_STATE_DIR`` or ``~/.local/share/pilotage``."""
    env = os.environ.get("PILOTAGE_STATE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "pilotage"


@dataclass(frozen=True)
class StateDir:
    """Paths inside one pool's state directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "pilotage.toml"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "server.key"

    @property
    def signing_key(self) -> Path:
        return self.root / "tokens" / "signing.pem"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def socket(self) -> Path:
        return self.root / "server.sock"

    @property
    def url_file(self) -> Path:
        return self.root / "server.url"

    @property
    def store_key(self) -> Path:
        return self.root / "credentials" / "store.key"

    @property
    def credential_audit_log(self) -> Path:
        return self.root / "audit" / "credentials.log"

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.root / 'pilotage.db'}"

    def signing_keys(self) -> list[bytes]:
        """The current signing key first, then older ones still accepted (rotation)."""
        keys = [self.signing_key.read_bytes()]
        keys += [p.read_bytes() for p in sorted(self.signing_key.parent.glob("signing-*.pem"))]
        return keys

    def settings(self) -> Settings:
        """The effective settings from this directory's file and the environment."""
        from pilotage.config import load_settings

        return load_settings(self.config)

    def is_initialised(self) -> bool:
        return self.config.exists() and self.ca_cert.exists() and self.signing_key.exists()

    def init(
        self, *, pool_name: str = "pilotage", hosts: Sequence[str] = (), bind: str | None = None
    ) -> list[str]:
        """Create whatever is missing; never overwrite a key. Returns what was created.

        ``hosts``: the names clients and pilots reach the server by (``pilotage init
        --host``), put in the server certificate (:mod:`pilotage.server_names`) and, in a
        new configuration, as ``public_name`` with ``host = bind`` (default ``0.0.0.0``).
        """
        from pilotage import server_names
        from pilotage.credentials import pki

        asked = server_names.parse_hosts(hosts)
        created: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        for sub in ("ca", "server", "tokens", "spool", "credentials", "audit"):
            (self.root / sub).mkdir(exist_ok=True, mode=0o700)
        if not self.ca_cert.exists():
            cert, key = pki.create_pool_ca(f"pilotage pool CA {pool_name}")
            pki.write_private(self.ca_key, key)
            self.ca_cert.write_bytes(cert)
            created.append(str(self.ca_cert))
        issued = server_names.issue(
            self.ca_cert, self.ca_key, self.server_cert, self.server_key, asked
        )
        if issued is not None:
            created.append(issued)
        if not self.signing_key.exists():
            pki.write_private(self.signing_key, pki.create_token_signing_key())
            created.append(str(self.signing_key))
        if not self.store_key.exists():
            pki.write_private(self.store_key, secrets.token_bytes(32))
            created.append(str(self.store_key))
        if not self.config.exists():
            public = hosts[0].strip() if hosts else ""
            text = DEFAULT_CONFIG.format(
                name=pool_name,
                host=bind or ("0.0.0.0" if hosts else "127.0.0.1"),  # noqa: S104
                public_name_line=(
                    f'public_name = "{public}"   # the name in server.url and the certificate'
                    if public
                    else '# public_name = "pool.example.org"   # default: host (or this FQDN)'
                ),
            )
            self.config.write_text(text, encoding="utf-8")
            created.append(str(self.config))
        return created
