"""The credential store at rest: AES-GCM sealing bound to each record, the key file, and
pending delegations that time out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pilotage.config import load_settings
from pilotage.credentials import delegation
from pilotage.credentials.errors import UnknownDelegation, X509Disabled
from pilotage.credentials.service import CredentialService
from pilotage.credentials.store import StoreKey
from pilotage.credentials.x509_testing import spare_key
from pilotage.errors import Conflict, InternalError, OperatorError
from pilotage.statedir import StateDir
from pilotage.store.engine import Store


def test_a_sealed_key_opens_only_for_its_own_purpose_and_owner(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.init(pool_name="t")
    assert oct(os.stat(state.store_key).st_mode & 0o777) == "0o600"
    store_key = StoreKey.load(state.store_key)
    sealed = store_key.seal_key(spare_key(), "credential", "alice")
    assert b"PRIVATE KEY" not in sealed
    opened = store_key.unseal_key(sealed, "credential", "alice")
    assert isinstance(opened, rsa.RSAPrivateKey)
    assert opened.private_numbers() == spare_key().private_numbers()
    # Two seals of one key differ (fresh nonce), so equal keys cannot be spotted at rest.
    assert store_key.seal_key(spare_key(), "credential", "alice") != sealed
    with pytest.raises(InternalError, match="moved to another owner"):
        store_key.unseal(sealed, "credential", "bob")
    with pytest.raises(InternalError, match="altered"):
        store_key.unseal(sealed, "delegation:x", "alice")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(InternalError, match="altered"):
        store_key.unseal(tampered, "credential", "alice")
    with pytest.raises(InternalError, match="unknown format"):
        store_key.unseal(b"\x02" + sealed[1:], "credential", "alice")
    other = StoreKey(os.urandom(32))
    with pytest.raises(InternalError, match="another store key"):
        other.unseal(sealed, "credential", "alice")


def test_the_store_key_file_must_exist_and_be_private(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    with pytest.raises(OperatorError, match="run 'pilotage init'"):
        StoreKey.load(path)
    path.write_bytes(os.urandom(32))
    path.chmod(0o640)
    with pytest.raises(OperatorError, match="readable by others"):
        StoreKey.load(path)
    path.chmod(0o600)
    path.write_bytes(os.urandom(16))
    with pytest.raises(OperatorError, match="must be 32 bytes"):
        StoreKey.load(path)


def test_a_pending_delegation_serves_one_attempt_before_it_times_out(db_url: str) -> None:
    store = Store(db_url)
    store_key = StoreKey(os.urandom(32))
    try:
        store.migrate()
        with store.write() as conn:
            late = delegation.start(conn, "alice", store_key, ttl_s=60, now=1000.0)
            once = delegation.start(conn, "alice", store_key, ttl_s=60, now=1000.0)
        with pytest.raises(UnknownDelegation, match="timed out"), store.write() as conn:
            delegation.take(conn, "alice", late.delegation_id, store_key, now=1061.0)
        with pytest.raises(UnknownDelegation, match="no delegation"), store.write() as conn:
            delegation.take(conn, "bob", once.delegation_id, store_key, now=1001.0)
        with store.write() as conn:
            delegation.take(conn, "alice", once.delegation_id, store_key, now=1001.0)
        with pytest.raises(UnknownDelegation, match="no delegation"), store.write() as conn:
            delegation.take(conn, "alice", once.delegation_id, store_key, now=1002.0)
        # Each pending delegation costs an RSA key generation: a few per owner at once.
        with store.write() as conn:
            for _ in range(delegation.MAX_PENDING):
                delegation.start(conn, "carol", store_key, ttl_s=60, now=2000.0)
        with pytest.raises(Conflict, match="4 delegations in progress"), store.write() as conn:
            delegation.start(conn, "carol", store_key, ttl_s=60, now=2001.0)
        with store.write() as conn:  # once they time out, they are swept
            delegation.start(conn, "carol", store_key, ttl_s=60, now=2061.0)
    finally:
        store.dispose()


def test_without_a_trust_directory_x509_is_refused_and_a_bad_one_stops_the_server(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path / "state")
    state.init(pool_name="t")
    service = CredentialService.build(state, load_settings(None, env={}))
    with pytest.raises(X509Disabled, match="no \\[x509\\] ca_dir"):
        service.trust()
    missing = {"PILOTAGE_X509_CA_DIR": str(tmp_path / "nowhere")}
    with pytest.raises(OperatorError, match=r"\[x509\] ca_dir: The trust directory"):
        CredentialService.build(state, load_settings(None, env=missing))
    state.store_key.unlink()
    with pytest.raises(OperatorError, match="run 'pilotage init'"):
        CredentialService.build(state, load_settings(None, env={}))
