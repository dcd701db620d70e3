"""Chains the validator accepts, what it reports, and how credential files are read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.x509_testing import Pki, forge, make_pki, proxy_extension, proxy_subject
from pilotage.x509.certificate import PPL_INDEPENDENT
from pilotage.x509.chain import (
    Revoked,
    TrustStore,
    TrustStoreError,
    load_credential,
    proxy_info,
    validate_chain,
)

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_end_entity_alone(pki: Pki) -> None:
    result = validate_chain([pki.user.cert], pki.trust, key=pki.user.key)
    assert result.identity_dn == "/O=Example/CN=Alice"
    assert result.identity_rfc4514 == "CN=Alice,O=Example"
    assert (result.proxy_type, result.limited, result.proxy_depth) == ("none", False, 0)
    assert result.path == (pki.user.cert, pki.ca.cert)
    assert result.end_entity == pki.user.cert


def test_full_proxy(pki: Pki) -> None:
    chain, key = pki.proxy(lifetime_s=7200)
    result = validate_chain(chain, pki.trust, key=key, allow_limited=False)
    assert result.identity_dn == "/O=Example/CN=Alice"
    assert result.subject_dn == f"/O=Example/CN=Alice/CN={chain[0].serial_number}"
    assert (result.proxy_type, result.limited, result.proxy_depth) == ("full", False, 1)
    assert result.not_after == chain[0].not_valid_after_utc
    assert result.key_bits == 2048


def test_proxies_of_proxies(pki: Pki) -> None:
    chain, key = pki.proxy(depth=4)
    result = validate_chain(chain, pki.trust, key=key)
    assert result.proxy_depth == 4
    assert result.identity_dn == "/O=Example/CN=Alice"
    assert result.not_after == min(c.not_valid_after_utc for c in chain)
    # The order the chain is given in does not matter past the leaf.
    assert validate_chain([chain[0], *reversed(chain[1:])], pki.trust).proxy_depth == 4


def test_limited_proxy_below_a_full_one_makes_the_chain_limited(pki: Pki) -> None:
    full, full_key = make_proxy(pki.user.cert, pki.user.key)
    limited, _ = make_proxy(full, full_key, [pki.user.cert], limited=True)
    result = validate_chain([limited, full, pki.user.cert], pki.trust)
    assert (result.proxy_type, result.limited) == ("limited", True)


def test_independent_proxy_is_reported(pki: Pki) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key, independent=True)
    result = validate_chain([proxy, pki.user.cert], pki.trust, key=key)
    assert result.proxy_type == "independent"
    forged, _ = forge(
        proxy_subject(pki.user.cert),
        (pki.user.cert, pki.user.key),
        extensions=[proxy_extension(PPL_INDEPENDENT)],
    )
    assert proxy_info([forged, pki.user.cert]).proxy_type == "independent"


def test_load_credential_reads_the_grid_order_and_a_reversed_bundle(pki: Pki) -> None:
    chain, key = pki.proxy(depth=2)
    grid = proxy_pem(chain[0], key, chain[1:])
    certs, loaded_key = load_credential(grid)
    assert certs == chain and loaded_key is not None
    bundle = b"".join(c.public_bytes(PEM) for c in [pki.ca.cert, *reversed(chain)])
    certs, no_key = load_credential(bundle)
    assert no_key is None
    assert certs[: len(chain)] == chain and certs[-1] == pki.ca.cert


def test_proxy_info_describes_without_trusting(pki: Pki) -> None:
    first, first_key = make_proxy(pki.user.cert, pki.user.key, path_length=2, lifetime_s=3600)
    second, _ = make_proxy(first, first_key, [pki.user.cert], limited=True)
    now = dt.datetime.now(dt.UTC)
    info = proxy_info([second, first, pki.user.cert], now=now)
    assert info.subject == f"/O=Example/CN=Alice/CN={first.serial_number}/CN={second.serial_number}"
    assert info.issuer == f"/O=Example/CN=Alice/CN={first.serial_number}"
    assert info.identity == "/O=Example/CN=Alice"
    assert (info.proxy_type, info.path_length, info.key_bits) == ("limited", 1, 2048)
    assert 3500 < info.time_left_s <= 3600
    assert info.to_dict()["type"] == "limited"
    # Without the user certificate, the identity is still the top proxy's issuer.
    assert proxy_info([second, first]).identity == "/O=Example/CN=Alice"
    assert proxy_info([pki.user.cert]).proxy_type == "none"


# --- The trust store ---------------------------------------------------------------------


def test_trust_store_reads_a_grid_directory_and_skips_what_is_not_a_ca(
    pki: Pki, tmp_path: Path
) -> None:
    directory = tmp_path / "certificates"
    pki.ca.export_trust_dir(directory)
    # Real directories hold NAME.pem, <hash>.0 links to it, and files we must not read.
    (directory / "Example.pem").write_bytes(pki.ca.cert.public_bytes(PEM))
    (directory / "Example.namespaces").write_text("TO Issuer ...")
    (directory / "Example.crl_url").write_text("http://crl.example.org/ca.crl")
    (directory / "deadbeef.0").write_bytes(pki.user.cert.public_bytes(PEM))
    (directory / "0badf11e.0").write_bytes(b"garbage")
    store = TrustStore.from_directory(directory)
    assert store.ca_count == 1
    assert any("not a CA" in s for s in store.skipped)
    assert any(s.startswith("0badf11e.0") for s in store.skipped)
    assert validate_chain([pki.user.cert], store, require_crl=True).proxy_type == "none"


def test_trust_store_refresh_sees_a_new_crl(tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    chain, _ = own.proxy()
    assert own.trust.refresh() is False
    validate_chain(chain, own.trust)
    own.ca.revoke(own.user.cert.serial_number)
    assert own.trust.refresh() is True
    with pytest.raises(Revoked, match="revoked"):
        validate_chain(chain, own.trust)


def test_empty_trust_directory_is_the_sites_problem(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="holds no CA certificate") as info:
        validate_chain([pki.user.cert], TrustStore.from_directory(tmp_path))
    assert info.value.code == "trust_store"
    with pytest.raises(TrustStoreError, match="cannot be read"):
        TrustStore.from_directory(tmp_path / "missing")


def test_missing_crl_only_refused_when_required(pki: Pki) -> None:
    store = TrustStore([pki.ca.cert], require_namespaces=False)
    assert validate_chain([pki.user.cert], store).identity_dn == "/O=Example/CN=Alice"
    with pytest.raises(TrustStoreError, match="holds no CRL of the CA"):
        validate_chain([pki.user.cert], store, require_crl=True)


def test_expired_crl_is_the_sites_problem(pki: Pki) -> None:
    crl = x509.load_pem_x509_crl((pki.ca.directory / "crl.pem").read_bytes())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    with pytest.raises(TrustStoreError, match="the site must refresh it"):
        validate_chain(
            [pki.user.cert], TrustStore([pki.ca.cert], [crl], require_namespaces=False), now=later
        )


def test_crl_not_signed_by_the_ca_is_the_sites_problem(pki: Pki, tmp_path: Path) -> None:
    rogue = make_pki(tmp_path, ca_subject=pki.ca.cert.subject.rfc4514_string())
    crl = x509.load_pem_x509_crl((rogue.ca.directory / "crl.pem").read_bytes())
    with pytest.raises(TrustStoreError, match="is not signed by that CA"):
        validate_chain([pki.user.cert], TrustStore([pki.ca.cert], [crl], require_namespaces=False))


def test_broken_link_in_the_trust_directory_is_skipped(pki: Pki, tmp_path: Path) -> None:
    directory = tmp_path / "certificates"
    pki.ca.export_trust_dir(directory)
    (directory / "12345678.0").symlink_to(directory / "gone.pem")
    store = TrustStore.from_directory(directory)
    assert store.ca_count == 1
    assert any(s.startswith("12345678.0") for s in store.skipped)


def test_now_must_carry_a_time_zone(pki: Pki) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_chain([pki.user.cert], pki.trust, now=dt.datetime(2030, 1, 1))
