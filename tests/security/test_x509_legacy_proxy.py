"""Finding 12 of the security review: legacy Globus proxies passed for end entities.

``grid-proxy-init -old`` makes a proxy without the RFC 3820 extension: its subject is
the issuer's plus ``CN=proxy`` (``CN=limited proxy`` when limited), signed by the user's
key. Read as an end-entity certificate it speaks for ``.../CN=proxy``, a wrong identity.
It is refused by name, like a draft proxy, with the way out (an RFC 3820 proxy), by the
validator, ``pilotage proxy info`` and ``pilotage proxy init``. See docs/security.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from pilotage.credentials.proxy import write_proxy_file
from pilotage.credentials.x509_testing import Pki, forge, make_pki, proxy_subject
from pilotage.x509.chain import LegacyProxyRefused, proxy_info, validate_chain

ADVICE = (
    "is a legacy Globus proxy, which is not accepted; make an RFC 3820 proxy "
    "('pilotage proxy init', or grid-proxy-init -rfc or voms-proxy-init -rfc)."
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def legacy_proxy(pki: Pki, cn: str = "proxy") -> tuple[list[x509.Certificate], rsa.RSAPrivateKey]:
    """As ``grid-proxy-init -old``: no ProxyCertInfo, subject = issuer + CN=proxy."""
    cert, key = forge(proxy_subject(pki.user.cert, cn), (pki.user.cert, pki.user.key))
    return [cert, pki.user.cert], key


@pytest.mark.parametrize("cn", ["proxy", "limited proxy"])
def test_the_validator_refuses_a_legacy_proxy_by_name(pki: Pki, cn: str) -> None:
    chain, _ = legacy_proxy(pki, cn)
    with pytest.raises(LegacyProxyRefused) as refused:
        validate_chain(chain, pki.trust)
    assert refused.value.code == "legacy_proxy"
    assert refused.value.message == f"The certificate '/O=Example/CN=Alice/CN={cn}' {ADVICE}"
    # Describing it would show the wrong identity '.../CN=proxy': refused as well.
    with pytest.raises(LegacyProxyRefused):
        proxy_info(chain)
    # An RFC 3820 proxy of the same user passes.
    assert validate_chain(pki.proxy()[0], pki.trust).identity_dn == "/O=Example/CN=Alice"


def run_proxy(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", "from pilotage.cli.proxy import app; app()", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_proxy_info_and_init_refuse_a_legacy_proxy_file(pki: Pki, tmp_path: Path) -> None:
    chain, key = legacy_proxy(pki)
    path = write_proxy_file(tmp_path / "x509up_old", chain[0], key, chain[1:])
    info = run_proxy("info", "--file", str(path), home=tmp_path)
    assert info.returncode == 4, info.stdout
    assert f"pilotage: The certificate '/O=Example/CN=Alice/CN=proxy' {ADVICE}" in info.stderr
    assert "CN=proxy" not in info.stdout
    made = run_proxy(
        "init",
        "--cert",
        str(path),
        "--ca-dir",
        str(pki.trust_dir),
        "--out",
        str(tmp_path / "new"),
        home=tmp_path,
    )
    assert made.returncode == 4, made.stdout
    assert "is a legacy Globus proxy" in made.stderr
    assert not (tmp_path / "new").exists()
