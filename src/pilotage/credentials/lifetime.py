"""The submit-time check: a job's credential must outlive the job (seed 003).

A job submitted with ``use_x509userproxy`` (or ``x509userproxy = FILE``) names its X.509
identity. The server refuses the whole cluster at once, before storing anything, when
the owner has no stored credential, when it is for another identity, or when it ends
before ``now + walltime + margin`` for any of the jobs: the message gives the end and the
command that fixes it. A job's walltime is its ``allowed_job_duration`` or, without one,
``[credentials] default_walltime_s``; the margin is ``[credentials] lifetime_margin_s``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sqlalchemy as sa

from pilotage.config import CredentialSettings
from pilotage.credentials import store
from pilotage.credentials.errors import CredentialTooShort, IdentityChanged, NoStoredCredential
from pilotage.errors import BadInput
from pilotage.queue.spec import JobSpec


def delegate_command(seconds: float) -> str:
    """``pilotage delegate --valid HH:MM`` for ``seconds`` from now, plus ten minutes to act."""
    minutes = math.ceil(seconds / 60) + 10
    return f"pilotage delegate --valid {minutes // 60:02d}:{minutes % 60:02d}"


def require_lifetime(
    conn: sa.Connection,
    owner: str,
    specs: Sequence[JobSpec],
    settings: CredentialSettings,
    now: float,
) -> None:
    """Refuse ``specs`` if any job's credential would not outlive it; see the module doc."""
    for proc, spec in enumerate(specs):
        if spec.x509userproxy is not None and spec.x509_identity is None:
            raise BadInput(
                f"job {proc} names the proxy {spec.x509userproxy} but no x509_identity; "
                "the client reads it from the proxy file"
            )
    wanted = [(proc, s) for proc, s in enumerate(specs) if s.x509_identity is not None]
    if not wanted:
        return
    walltime = max(s.max_walltime_s or settings.default_walltime_s for _, s in wanted)
    needed_s = walltime + settings.lifetime_margin_s
    stored = store.get(conn, owner)
    if stored is None:
        raise NoStoredCredential(
            f"{owner} has no delegated X.509 credential; run '{delegate_command(needed_s)}'"
        )
    for proc, spec in wanted:
        if spec.x509_identity != stored.identity_dn:
            raise IdentityChanged(
                f"job {proc} names the identity {spec.x509_identity} but your delegated "
                f"credential is for {stored.identity_dn}"
            )
    if stored.not_after < now + needed_s:
        raise CredentialTooShort(
            f"your delegated credential expires at {stored.not_after_text}, before these jobs "
            f"could end (walltime {walltime} s plus a margin of {settings.lifetime_margin_s} s); "
            f"run '{delegate_command(needed_s)}' and submit again"
        )
