"""OpenSSL, the reference most grid middleware builds on, agrees with what is made here."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509

from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import Pki, forge, make_pki, proxy_extension, proxy_subject
from pilotage.x509.certificate import CredentialKey
from pilotage.x509.chain import (
    CredentialError,
    PathLengthExceeded,
    ProxyNamingViolation,
    Revoked,
    validate_chain,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def openssl_verify(
    trust_dir: Path,
    chain: Sequence[x509.Certificate],
    key: CredentialKey,
    tmp_path: Path,
    *extra: str,
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of a proxy file: the file is both the leaf and the untrusted chain."""
    path = tmp_path / "x509up"
    path.write_bytes(proxy_pem(chain[0], key, chain[1:]))
    return subprocess.run(
        [
            "openssl",
            "verify",
            *extra,
            "-CApath",
            str(trust_dir),
            "-untrusted",
            str(path),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_trust_dir_file_name_is_openssls_subject_hash(pki: Pki) -> None:
    out = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(pki.ca.directory / "ca.pem")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (pki.trust_dir / f"{out.stdout.strip()}.0").is_file()
    assert (pki.trust_dir / f"{out.stdout.strip()}.r0").is_file()


@pytest.mark.parametrize(
    ("depth", "limited"), [(1, False), (2, False), (3, False), (1, True)], ids=str
)
def test_openssl_accepts_proxies_made_here(
    pki: Pki, tmp_path: Path, depth: int, limited: bool
) -> None:
    chain, key = pki.proxy(depth=depth, limited=limited)
    for extra in ((), ("-crl_check",), ("-crl_check_all",)):
        result = openssl_verify(pki.trust_dir, chain, key, tmp_path, "-allow_proxy_certs", *extra)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")


def test_openssl_accepts_an_independent_proxy(pki: Pki, tmp_path: Path) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key, independent=True)
    result = openssl_verify(
        pki.trust_dir, [proxy, pki.user.cert], key, tmp_path, "-allow_proxy_certs"
    )
    assert result.returncode == 0, result.stderr


def test_openssl_refuses_our_proxies_unless_told_proxies_are_allowed(
    pki: Pki, tmp_path: Path
) -> None:
    """ProxyCertInfo is critical: software unaware of proxies must refuse them."""
    chain, key = pki.proxy()
    result = openssl_verify(pki.trust_dir, chain, key, tmp_path)
    assert result.returncode != 0


def test_host_certificate_verifies_for_tls_servers(pki: Pki, tmp_path: Path) -> None:
    host = pki.ca.issue_host("node1.example.org")
    path = tmp_path / "hostcert.pem"
    path.write_bytes(host.cert_pem())
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslserver",
            "-crl_check",
            "-CApath",
            str(pki.trust_dir),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_revocation_seen_by_openssl_and_by_the_validator(tmp_path: Path) -> None:
    own = make_pki(tmp_path / "pki")
    chain, key = own.proxy()
    own.ca.revoke(own.user.cert, reason="keyCompromise")
    own.trust.refresh()
    # OpenSSL never revokes proxies themselves, so -crl_check (the leaf only) would pass;
    # -crl_check_all reaches the user certificate, as the validator does.
    result = openssl_verify(
        own.trust_dir, chain, key, tmp_path, "-allow_proxy_certs", "-crl_check_all"
    )
    assert result.returncode != 0
    assert "revoked" in (result.stdout + result.stderr)
    with pytest.raises(Revoked):
        validate_chain(chain, own.trust)


def _misnamed(pki: Pki) -> tuple[list[x509.Certificate], CredentialKey]:
    rdns = [*pki.user.cert.subject.rdns, *proxy_subject(pki.user.cert).rdns[-1:]]
    wrong = x509.Name([*rdns[:-2], rdns[-1], rdns[-2]])  # the CN inserted before Alice's CN
    proxy, key = forge(wrong, (pki.user.cert, pki.user.key), extensions=[proxy_extension()])
    return [proxy, pki.user.cert], key


def _too_deep(pki: Pki) -> tuple[list[x509.Certificate], CredentialKey]:
    first, first_key = make_proxy(pki.user.cert, pki.user.key, path_length=0)
    second, key = forge(proxy_subject(first), (first, first_key), extensions=[proxy_extension()])
    return [second, first, pki.user.cert], key


@pytest.mark.parametrize(
    ("build", "error"),
    [(_misnamed, ProxyNamingViolation), (_too_deep, PathLengthExceeded)],
    ids=["naming", "path-length"],
)
def test_openssl_and_the_validator_refuse_the_same_forgeries(
    pki: Pki, tmp_path: Path, build: object, error: type[CredentialError]
) -> None:
    chain, key = build(pki)  # type: ignore[operator]
    result = openssl_verify(pki.trust_dir, chain, key, tmp_path, "-allow_proxy_certs")
    assert result.returncode != 0, result.stdout
    with pytest.raises(error):
        validate_chain(chain, pki.trust)
