"""Finding 11 of the security review: any CA of the trust directory could sign any DN.

Two CAs share one grid trust directory, each with its namespace as ``pilotage ca`` writes
it (``<hash>.namespaces`` and ``<hash>.signing_policy``). CA B signing a DN of CA A's
namespace is refused by the validator, by ``pilotage proxy init`` and by ``pilotage
login`` against a real pool. Each rule of the policy files (DENY, which file decides, a
missing or malformed file, CAs up the path) is shown with its own error. See
docs/security.md, "CA namespaces".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pilotage.credentials.names import parse_subject
from pilotage.credentials.proxy import make_proxy, write_proxy_file
from pilotage.credentials.trustdir import write_trust_dir
from pilotage.credentials.x509_testing import Pki, forge, make_pki
from pilotage.errors import BadInput
from pilotage.testing import Pool
from pilotage.x509.chain import (
    NamespacePolicyMalformed,
    NamespacePolicyMissing,
    NamespaceViolation,
    TrustStore,
    validate_chain,
)
from pilotage.x509.der import subject_hash

PEM = serialization.Encoding.PEM
Chain = list[x509.Certificate]


@dataclass
class TwoCas:
    """CA A (namespace /O=Alpha/*) and CA B (/O=Beta/*), exported to one trust directory."""

    a: Pki
    b: Pki
    trust_dir: Path

    def store(self, *, require_namespaces: bool = True) -> TrustStore:
        return TrustStore.from_directory(self.trust_dir, require_namespaces=require_namespaces)

    def policy(self, pki: Pki, kind: str) -> Path:
        return self.trust_dir / f"{subject_hash(pki.ca.cert.subject.public_bytes())}.{kind}"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    root = tmp_path_factory.mktemp("cas")
    a = make_pki(
        root / "a",
        ca_subject="CN=CA A,O=Alpha",
        user_subject="CN=Alice,O=Alpha",
        subjects=("/O=Alpha/*",),
    )
    b = make_pki(
        root / "b",
        ca_subject="CN=CA B,O=Beta",
        user_subject="CN=Bob,O=Beta",
        subjects=("/O=Beta/*",),
    )
    return a, b


@pytest.fixture
def two(cas: tuple[Pki, Pki], tmp_path: Path) -> TwoCas:
    a, b = cas
    a.ca.export_trust_dir(tmp_path / "certificates")
    b.ca.export_trust_dir(tmp_path / "certificates")
    return TwoCas(a, b, tmp_path / "certificates")


def ca_key(pki: Pki) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((pki.ca.directory / "ca.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def signed_by(pki: Pki, subject: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """An end-entity certificate for ``subject`` signed with ``pki``'s CA key, no questions."""
    return forge(parse_subject(subject), (pki.ca.cert, ca_key(pki)))


def proxy_of(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[Chain, rsa.RSAPrivateKey]:
    proxy, proxy_key = make_proxy(cert, key, lifetime_s=1800)
    return [proxy, cert], proxy_key


def test_a_ca_cannot_sign_in_another_cas_namespace(two: TwoCas) -> None:
    store = two.store()
    # Each CA's own users pass.
    assert validate_chain(proxy_of(two.a.user.cert, two.a.user.key)[0], store).identity_dn == (
        "/O=Alpha/CN=Alice"
    )
    assert validate_chain([two.b.user.cert], store).identity_dn == "/O=Beta/CN=Bob"
    # CA B signs Alice's DN: the very attack of the finding.
    chain, _ = proxy_of(*signed_by(two.b, "CN=Alice,O=Alpha"))
    with pytest.raises(NamespaceViolation) as refused:
        validate_chain(chain, store)
    assert refused.value.code == "namespace_violation"
    assert refused.value.message == (
        "The CA '/O=Beta/CN=CA B' may not sign '/O=Alpha/CN=Alice': no rule permits it in "
        f"{two.policy(two.b, 'namespaces')}."
    )
    # And `pilotage ca` never issues such a certificate in the first place.
    with pytest.raises(BadInput, match="outside this CA's namespace"):
        two.b.ca.issue_user("CN=Mallory,O=Alpha")


def test_signing_policy_alone_is_enforced_and_namespaces_decide_when_both_exist(
    two: TwoCas,
) -> None:
    forged, _ = proxy_of(*signed_by(two.b, "CN=Alice,O=Alpha"))
    two.policy(two.b, "namespaces").unlink()
    with pytest.raises(NamespaceViolation, match=r"B\.?.*\.signing_policy"):
        validate_chain(forged, two.store())
    # Both files: the namespaces file decides, whatever the signing policy says.
    two.policy(two.b, "namespaces").write_text(
        'TO Issuer "/O=Beta/CN=CA B" PERMIT Subject "/O=(Alpha|Beta)/.*"\n'
    )
    assert validate_chain(forged, two.store()).identity_dn == "/O=Alpha/CN=Alice"
    two.policy(two.b, "namespaces").write_text('TO Issuer SELF PERMIT Subject "/O=Beta/.*"\n')
    two.policy(two.b, "signing_policy").write_text(
        "access_id_CA X509 '/O=Beta/CN=CA B'\npos_rights globus CA:sign\n"
        "cond_subjects globus '\"*\"'\n"
    )
    with pytest.raises(NamespaceViolation, match=r"\.namespaces\.$"):
        validate_chain(forged, two.store())


def test_a_deny_rule_wins_over_every_permit(two: TwoCas) -> None:
    carol = two.a.ca.issue_user("CN=Carol,O=Alpha")
    two.policy(two.a, "namespaces").write_text(
        "#NAMESPACES-VERSION: 1.0\n"
        "# Alice's certificate was issued by mistake (a comment # with a hash).\n"
        'TO Issuer "/O=Alpha/CN=CA A" \\\n'
        '  PERMIT Subject "/O=Alpha/.*"\n'
        'to issuer SELF deny subject "/o=alpha/cn=alice"   # case is ignored\n'
    )
    store = two.store()
    assert validate_chain([carol.cert], store).identity_dn == "/O=Alpha/CN=Carol"
    with pytest.raises(NamespaceViolation, match=r"rule '/o=alpha/cn=alice' \(line 5\) denies it"):
        validate_chain([two.a.user.cert], store)


def test_every_ca_of_the_path_is_held_to_its_parents_policy(tmp_path: Path) -> None:
    ca_ext = [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
    ]
    root, root_key = forge(parse_subject("/O=Root/CN=Root CA"), None, extensions=ca_ext)
    sub, sub_key = forge(
        parse_subject("/O=Elsewhere/CN=Sub CA"), (root, root_key), extensions=ca_ext
    )
    dan, _ = forge(parse_subject("/O=Elsewhere/CN=Dan"), (sub, sub_key))
    directory = tmp_path / "certificates"
    write_trust_dir(directory, root, subjects=["/O=Root/*"])
    write_trust_dir(directory, sub, subjects=["/O=Elsewhere/*"])
    with pytest.raises(NamespaceViolation, match="'/O=Root/CN=Root CA' may not sign '/O=Else"):
        validate_chain([dan], TrustStore.from_directory(directory))
    write_trust_dir(directory, root, subjects=["/O=Root/*", "/O=Elsewhere/CN=Sub CA"])
    assert validate_chain([dan], TrustStore.from_directory(directory)).identity_dn == (
        "/O=Elsewhere/CN=Dan"
    )


def test_a_ca_without_policy_signs_nothing_unless_the_site_allows_it(two: TwoCas) -> None:
    bob = [two.b.user.cert]
    forged, _ = proxy_of(*signed_by(two.b, "CN=Alice,O=Alpha"))
    for kind in ("namespaces", "signing_policy"):
        two.policy(two.b, kind).unlink()
    with pytest.raises(NamespacePolicyMissing, match="'/O=Beta/CN=CA B' has no namespace") as e:
        validate_chain(bob, two.store())
    assert e.value.code == "namespace_policy_missing"
    # require_namespaces=False: the old rule for CA B only (it has no file) ...
    lax = two.store(require_namespaces=False)
    assert validate_chain(bob, lax).identity_dn == "/O=Beta/CN=Bob"
    assert validate_chain(forged, lax).identity_dn == "/O=Alpha/CN=Alice"
    # ... while CA A, which has its files, is still held to them.
    with pytest.raises(NamespaceViolation, match="'/O=Alpha/CN=CA A' may not sign '/O=Beta/CN=Eve"):
        validate_chain([signed_by(two.a, "CN=Eve,O=Beta")[0]], lax)


@pytest.mark.parametrize(
    ("kind", "text", "why"),
    [
        ("namespaces", 'TO Issuer SELF PERMIT "/O=Beta/.*"\n', "line 1: expected TO Issuer"),
        ("namespaces", "#NAMESPACES-VERSION: 2.0\n", "version 2.0 is not supported"),
        ("namespaces", 'TO Issuer SELF PERMIT Subject "/O=(Beta/.*"\n', "pattern is invalid"),
        ("namespaces", 'TO Issuer SELF PERMIT Subject "/O=Beta/.*" \\\n', "continuation"),
        ("namespaces", b"\xff\xfe", "malformed"),
        (
            "signing_policy",
            "access_id_CA X509 '/O=Beta/CN=CA B'\npos_rights globus CA:sign\n",
            "line 1: expected access_id_CA",
        ),
        (
            "signing_policy",
            "access_id_CA X509 '/O=Beta/CN=CA B'\nneg_rights globus CA:sign\n"
            "cond_subjects globus '\"*\"'\n",
            "line 1: expected",
        ),
        (
            "signing_policy",
            "access_id_CA X509 '/O=Beta/CN=CA B'\npos_rights globus CA:sign\n"
            "cond_subjects globus '/O=Beta/*'\n",
            "line 3: cond_subjects needs",
        ),
    ],
)
def test_a_malformed_policy_file_refuses_its_ca_naming_the_file(
    two: TwoCas, kind: str, text: str | bytes, why: str
) -> None:
    if kind == "signing_policy":
        two.policy(two.b, "namespaces").unlink()
    path = two.policy(two.b, kind)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    store = two.store()
    with pytest.raises(NamespacePolicyMalformed) as refused:
        validate_chain([two.b.user.cert], store)
    assert refused.value.code == "namespace_policy_malformed"
    assert f"The namespace policy file {path} is malformed" in refused.value.message
    assert why in refused.value.message
    # One bad file does not stop the other CA.
    assert validate_chain([two.a.user.cert], store).identity_dn == "/O=Alpha/CN=Alice"


def run_proxy_init(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", "from pilotage.cli.proxy import app; app()", "init", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def write_credential(directory: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Path:
    directory.mkdir(parents=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(PEM))
    key_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "key.pem").chmod(0o600)
    return directory


def test_proxy_init_refuses_a_certificate_outside_its_cas_namespace(
    two: TwoCas, tmp_path: Path
) -> None:
    forged = write_credential(tmp_path / "forged", *signed_by(two.b, "CN=Alice,O=Alpha"))
    alice = write_credential(tmp_path / "alice", two.a.user.cert, two.a.user.key)
    runs = {
        who: run_proxy_init(
            "--cert",
            str(who / "cert.pem"),
            "--key",
            str(who / "key.pem"),
            "--ca-dir",
            str(two.trust_dir),
            "--out",
            str(who / "x509up"),
            home=tmp_path,
        )
        for who in (forged, alice)
    }
    assert runs[forged].returncode == 4, runs[forged].stderr
    assert runs[alice].returncode == 0, runs[alice].stderr
    assert (
        "pilotage: The CA '/O=Beta/CN=CA B' may not sign '/O=Alpha/CN=Alice'" in runs[forged].stderr
    )
    assert not (forged / "x509up").exists()
    assert (alice / "x509up").exists()


def test_login_refuses_a_certificate_outside_its_cas_namespace(
    two: TwoCas, make_pool: Callable[..., Pool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(two.trust_dir))
    pool = make_pool()
    forged_chain, forged_key = proxy_of(*signed_by(two.b, "CN=Alice,O=Alpha"))
    forged = write_proxy_file(tmp_path / "forged", forged_chain[0], forged_key, forged_chain[1:])
    alice_chain, alice_key = proxy_of(two.a.user.cert, two.a.user.key)
    alice = write_proxy_file(tmp_path / "alice", alice_chain[0], alice_key, alice_chain[1:])
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    refused = pool.cli("--server", pool.url, "login", "--proxy", str(forged), env=env)
    assert refused.returncode == 4, refused.stderr
    assert "(namespace_violation): The CA '/O=Beta/CN=CA B' may not sign" in refused.stderr
    assert not (tmp_path / "config" / "pilotage" / "token").exists()
    done = pool.cli("--server", pool.url, "login", "--proxy", str(alice), env=env)
    assert done.returncode == 0, done.stderr
    assert "logged in as /O=Alpha/CN=Alice (user)" in done.stdout


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_made_chains_that_obey_the_policy_pass(tmp_path: Path) -> None:
    ext = tmp_path / "user.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/O=Gamma/CN=Gamma CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp_path,
    )
    for name, subject in (("grace", "/O=Gamma/CN=Grace"), ("eve", "/O=Delta/CN=Eve")):
        openssl(
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=tmp_path,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-sha256",
            "-extfile",
            str(ext),
            "-out",
            f"{name}.pem",
            cwd=tmp_path,
        )
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    write_trust_dir(tmp_path / "certificates", ca, subjects=["/O=Gamma/*"])
    store = TrustStore.from_directory(tmp_path / "certificates")
    grace = x509.load_pem_x509_certificate((tmp_path / "grace.pem").read_bytes())
    grace_key = serialization.load_pem_private_key((tmp_path / "grace.key").read_bytes(), None)
    assert isinstance(grace_key, rsa.RSAPrivateKey)
    assert validate_chain(proxy_of(grace, grace_key)[0], store).identity_dn == "/O=Gamma/CN=Grace"
    eve = x509.load_pem_x509_certificate((tmp_path / "eve.pem").read_bytes())
    with pytest.raises(NamespaceViolation, match="'/O=Gamma/CN=Gamma CA' may not sign '/O=Delta"):
        validate_chain([eve], store)
