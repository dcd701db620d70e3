"""Every refusal of the validator, one rule broken at a time, by type and message."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import (
    Pki,
    forge,
    make_pki,
    proxy_extension,
    proxy_subject,
    spare_key,
)
from pilotage.x509.certificate import PPL_INDEPENDENT, PPL_LIMITED
from pilotage.x509.chain import (
    BadSignature,
    Expired,
    KeyMismatch,
    LimitedProxyRefused,
    MalformedCredential,
    NotYetValid,
    PathLengthExceeded,
    ProfileViolation,
    ProxyNamingViolation,
    ProxyOutlivesIssuer,
    ProxyPolicyViolation,
    Revoked,
    TrustStore,
    UntrustedIssuer,
    WeakKey,
    load_credential,
    validate_chain,
)

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def user_signer(pki: Pki) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    return pki.user.cert, pki.user.key


def forge_proxy(pki: Pki, **kwargs: object) -> x509.Certificate:
    """A proxy of Alice, forged with the given overrides (key reused, for speed)."""
    options: dict[str, object] = {
        "key": spare_key(),
        "extensions": [proxy_extension()],
    }
    options.update(kwargs)
    subject = options.pop("subject", proxy_subject(pki.user.cert))
    cert, _ = forge(subject, user_signer(pki), **options)  # type: ignore[arg-type]
    return cert


# --- Malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pem", "words"),
    [
        (b"", "no PEM certificate"),
        (b"hello, I am not a certificate", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be read"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "unexpected PUBLIC KEY"),
        (b"x" * (1 << 21), "larger than"),
    ],
)
def test_malformed_pem_is_refused(pem: bytes, words: str) -> None:
    with pytest.raises(MalformedCredential, match=words) as info:
        load_credential(pem)
    assert info.value.code == "malformed"


def test_encrypted_key_is_refused_as_unsupported(pki: Pki) -> None:
    encrypted = pki.user.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(MalformedCredential, match="encrypted; only unencrypted keys"):
        load_credential(pki.user.cert_pem() + encrypted)


def test_malformed_proxy_cert_info_is_refused(pki: Pki) -> None:
    bad = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14"), b"\x30\x03\x02")
    proxy = forge_proxy(pki, extensions=[(bad, True)])
    with pytest.raises(MalformedCredential, match="malformed ProxyCertInfo"):
        validate_chain([proxy, pki.user.cert], pki.trust)


# --- Keys ------------------------------------------------------------------------------


def test_key_not_matching_the_certificate_in_the_file(pki: Pki) -> None:
    other = spare_key(index=1).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyMismatch, match="belongs to no certificate") as info:
        load_credential(pki.user.cert_pem() + other)
    assert info.value.code == "key_mismatch"


def test_key_not_matching_the_leaf(pki: Pki) -> None:
    with pytest.raises(
        KeyMismatch, match="does not belong to the certificate '/O=Example/CN=Alice'"
    ):
        validate_chain([pki.user.cert], pki.trust, key=spare_key(index=1))


def test_weak_key_is_refused(pki: Pki) -> None:
    proxy = forge_proxy(pki, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(WeakKey, match="1024-bit key"):
        validate_chain([proxy, pki.user.cert], pki.trust)


# --- Time ------------------------------------------------------------------------------


def test_expired_proxy(pki: Pki) -> None:
    chain, _ = pki.proxy(lifetime_s=600)
    with pytest.raises(Expired, match=r"The certificate '/O=Example/CN=Alice/CN=\d+' expired"):
        validate_chain(chain, pki.trust, now=NOW + HOUR)


def test_expired_end_entity(pki: Pki) -> None:
    with pytest.raises(Expired, match="'/O=Example/CN=Alice' expired"):
        validate_chain([pki.user.cert], pki.trust, now=NOW + dt.timedelta(days=400))


def test_not_yet_valid_beyond_the_skew(pki: Pki) -> None:
    # The validator is told the time: the test does not depend on how long the suite runs.
    now = dt.datetime.now(dt.UTC)
    proxy = forge_proxy(pki, not_before=now + dt.timedelta(minutes=10))
    with pytest.raises(NotYetValid, match="is not valid before") as info:
        validate_chain([proxy, pki.user.cert], pki.trust, skew_s=300, now=now)
    assert info.value.code == "not_yet_valid"
    # Within the allowance, a proxy from a host whose clock runs ahead passes.
    early = forge_proxy(pki, not_before=now + dt.timedelta(minutes=2))
    assert validate_chain([early, pki.user.cert], pki.trust, skew_s=300, now=now).proxy_depth == 1


def test_proxy_outliving_its_issuer(pki: Pki) -> None:
    end = pki.user.cert.not_valid_after_utc + dt.timedelta(days=1)
    proxy = forge_proxy(pki, not_after=end)
    with pytest.raises(ProxyOutlivesIssuer, match="after its issuer '/O=Example/CN=Alice'"):
        validate_chain([proxy, pki.user.cert], pki.trust)


# --- Trust and signatures ---------------------------------------------------------------


def test_untrusted_ca(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path, ca_subject="CN=Rogue CA,O=Elsewhere")
    chain, _ = other.proxy()
    with pytest.raises(
        UntrustedIssuer, match=r"'/O=Elsewhere/CN=Rogue CA' .* not a CA of the trust"
    ):
        validate_chain(chain, pki.trust)
    # A credential cannot bring its own anchor: CA certificates inside it are ignored.
    with pytest.raises(UntrustedIssuer, match="not a CA of the trust directory"):
        validate_chain([*chain, other.ca.cert], pki.trust)


def test_ca_with_the_trusted_name_but_another_key(pki: Pki) -> None:
    impostor_ca, impostor_key = forge(
        pki.ca.cert.subject,
        None,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    user, _ = forge(pki.user.cert.subject, (impostor_ca, impostor_key), key=spare_key())
    with pytest.raises(BadSignature, match="does not verify"):
        validate_chain([user], pki.trust)


def test_proxy_issuer_missing_from_the_chain(pki: Pki) -> None:
    chain, _ = pki.proxy(depth=2)
    with pytest.raises(UntrustedIssuer, match="is missing from the credential"):
        validate_chain([chain[0], chain[2]], pki.trust)


def test_tampered_proxy_signature(pki: Pki) -> None:
    proxy = forge_proxy(pki)
    der = bytearray(proxy.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature
    tampered = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(BadSignature, match="by '/O=Example/CN=Alice' does not verify"):
        validate_chain([tampered, pki.user.cert], pki.trust)


def test_sha1_signature_is_refused(tmp_path: Path) -> None:
    # cryptography no longer signs with SHA-1, so OpenSSL signs the weak certificate.
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca, ca_key = forge(
        x509.Name.from_rfc4514_string("CN=Old CA"),
        None,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=Eve"))
        .sign(spare_key(), hashes.SHA256())
    )
    (tmp_path / "eve.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "eve.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-sha1",
            "-days",
            "1",
            "-set_serial",
            "7",
            "-out",
            "eve.pem",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    eve = x509.load_pem_x509_certificate((tmp_path / "eve.pem").read_bytes())
    with pytest.raises(BadSignature, match="on '/CN=Eve' by '/CN=Old CA' uses the weak hash sha1"):
        validate_chain([eve], TrustStore([ca], require_namespaces=False))


def test_revoked_end_entity(pki: Pki, tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    chain, _ = own.proxy()
    own.ca.revoke(own.user.cert, reason="keyCompromise")
    own.trust.refresh()
    with pytest.raises(Revoked, match=r"'/O=Example/CN=Alice' \(serial 1\) is revoked") as info:
        validate_chain(chain, own.trust)
    assert info.value.code == "revoked"


# --- RFC 3820 rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject_of_proxy",
    [
        lambda u: x509.Name([*u.subject.rdns]),  # no extra CN
        lambda u: x509.Name(
            [
                *u.subject.rdns,
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "1")]
                ),
            ]
        ),
        lambda u: x509.Name([*proxy_subject(u).rdns, *proxy_subject(u).rdns[-1:]]),  # two CNs
        lambda u: x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Other")]
                ),
                *proxy_subject(u).rdns[1:],
            ]
        ),
    ],
    ids=["no-cn", "not-a-cn", "two-cns", "other-prefix"],
)
def test_proxy_naming_rule(pki: Pki, subject_of_proxy: object) -> None:
    subject = subject_of_proxy(pki.user.cert)  # type: ignore[operator]
    proxy = forge_proxy(pki, subject=subject)
    with pytest.raises(
        ProxyNamingViolation, match="is not named as its issuer '/O=Example/CN=Alice'"
    ):
        validate_chain([proxy, pki.user.cert], pki.trust)


def test_proxy_path_length_exceeded(pki: Pki) -> None:
    first, first_key = make_proxy(pki.user.cert, pki.user.key, path_length=1)
    second, second_key = make_proxy(first, first_key, [pki.user.cert])
    assert validate_chain([second, first, pki.user.cert], pki.trust).proxy_depth == 2
    # make_proxy refuses to go further; a forged third proxy is refused by the validator.
    with pytest.raises(PathLengthExceeded, match="may not sign further proxies"):
        make_proxy(second, second_key, [first, pki.user.cert])
    third, _ = forge(proxy_subject(second), (second, second_key), extensions=[proxy_extension()])
    with pytest.raises(
        PathLengthExceeded, match=f"allowed by '/O=Example/CN=Alice/CN={first.serial_number}'"
    ):
        validate_chain([third, second, first, pki.user.cert], pki.trust)


def test_ca_path_length_exceeded(tmp_path: Path) -> None:
    root, root_key = forge(
        x509.Name.from_rfc4514_string("CN=Root"),
        None,
        extensions=[(x509.BasicConstraints(ca=True, path_length=0), True)],
    )
    sub, sub_key = forge(
        x509.Name.from_rfc4514_string("CN=Sub"),
        (root, root_key),
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    user, _ = forge(x509.Name.from_rfc4514_string("CN=Eve"), (sub, sub_key), key=spare_key())
    with pytest.raises(PathLengthExceeded, match="'/CN=Root' allows 0 intermediate CAs"):
        validate_chain([user], TrustStore([root, sub], require_namespaces=False))


def test_limited_proxy_where_a_full_one_is_required(pki: Pki) -> None:
    chain, _ = pki.proxy(limited=True)
    assert validate_chain(chain, pki.trust).limited
    with pytest.raises(
        LimitedProxyRefused, match="is limited and a full proxy is required"
    ) as info:
        validate_chain(chain, pki.trust, allow_limited=False)
    assert info.value.code == "limited_proxy_refused"


def test_full_proxy_under_a_limited_one(pki: Pki) -> None:
    limited, limited_key = make_proxy(pki.user.cert, pki.user.key, limited=True)
    full, _ = forge(proxy_subject(limited), (limited, limited_key), extensions=[proxy_extension()])
    with pytest.raises(ProxyPolicyViolation, match="is not limited but its issuer"):
        validate_chain([full, limited, pki.user.cert], pki.trust)
    with pytest.raises(ProxyPolicyViolation, match="only a limited proxy can be made"):
        make_proxy(limited, limited_key, [pki.user.cert])


def test_unknown_policy_language(pki: Pki) -> None:
    proxy = forge_proxy(pki, extensions=[proxy_extension("1.2.3.4.5")])
    with pytest.raises(ProxyPolicyViolation, match=r"unknown policy language 1\.2\.3\.4\.5"):
        validate_chain([proxy, pki.user.cert], pki.trust)


@pytest.mark.parametrize(
    ("extensions", "words"),
    [
        ([proxy_extension(critical=False)], "not marked critical"),
        ([proxy_extension(), (x509.BasicConstraints(ca=True, path_length=None), True)], "CA flag"),
        (
            [proxy_extension(), (x509.SubjectAlternativeName([x509.DNSName("a.example")]), False)],
            "alternative name",
        ),
        (
            [
                proxy_extension(),
                (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True),
            ],
            "unknown critical extension 1.2.3.4",
        ),
        (
            [
                (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier("1.3.6.1.4.1.3536.1.222"), b"\x30\x00"
                    ),
                    True,
                )
            ],
            "pre-RFC 3820 draft proxy",
        ),
    ],
    ids=["pci-not-critical", "ca-flag", "san", "unknown-critical", "draft-proxy"],
)
def test_proxy_profile_violations(pki: Pki, extensions: list, words: str) -> None:
    proxy = forge_proxy(pki, extensions=extensions)
    with pytest.raises(ProfileViolation, match=words):
        validate_chain([proxy, pki.user.cert], pki.trust)


def test_proxy_signed_by_a_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    ca_key = serialization.load_pem_private_key((pki.ca.directory / "ca.key").read_bytes(), None)
    proxy, _ = forge(
        proxy_subject(pki.ca.cert), (pki.ca.cert, ca_key), extensions=[proxy_extension()]
    )  # type: ignore[arg-type]
    with pytest.raises(ProfileViolation, match="signed directly by the CA"):
        validate_chain([proxy, pki.ca.cert], pki.trust)


def test_ca_certificate_presented_as_identity(pki: Pki) -> None:
    with pytest.raises(ProfileViolation, match="is a CA, not a user"):
        validate_chain([pki.ca.cert], pki.trust)


def test_issuer_without_digital_signature_cannot_sign_proxies(pki: Pki) -> None:
    usage = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    ca_key = serialization.load_pem_private_key((pki.ca.directory / "ca.key").read_bytes(), None)
    user, user_key = forge(
        x509.Name.from_rfc4514_string("CN=Mallory,O=Example"),
        (pki.ca.cert, ca_key),  # type: ignore[arg-type]
        extensions=[(usage, True)],
    )
    proxy, _ = forge(
        proxy_subject(user), (user, user_key), key=spare_key(), extensions=[proxy_extension()]
    )
    with pytest.raises(ProfileViolation, match="lacks the digitalSignature key usage"):
        validate_chain([proxy, user], pki.trust)


def test_independent_and_limited_languages_are_known(pki: Pki) -> None:
    for language, kind in ((PPL_INDEPENDENT, "independent"), (PPL_LIMITED, "limited")):
        proxy = forge_proxy(pki, extensions=[proxy_extension(language)])
        assert validate_chain([proxy, pki.user.cert], pki.trust).proxy_type == kind


def test_pem_of_a_refused_chain_still_loads(pki: Pki) -> None:
    """Reading and judging are separate: a bad proxy file loads, then is refused."""
    proxy = forge_proxy(pki, not_after=NOW - dt.timedelta(minutes=1), not_before=NOW - HOUR)
    chain, key = load_credential(proxy_pem(proxy, spare_key(), [pki.user.cert]))
    assert key is not None and chain[0] == proxy
    with pytest.raises(Expired):
        validate_chain(chain, pki.trust, key=key)
