"""Fixtures of the credential tests: a pool that trusts a throwaway CA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from credentials.x509_pool import X509Pool
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.testing import Pool


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA with its trust directory, and its user Alice."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def make_x509_pool(
    make_pool: Callable[..., Pool], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., X509Pool]:
    """Start pools (on ``db_url``) trusting ``pki``'s CA; ``env`` adds PILOTAGE_* settings."""

    def start(**env: str) -> X509Pool:
        monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return X509Pool(make_pool(), pki)

    return start


@pytest.fixture
def x509_pool(make_x509_pool: Callable[..., X509Pool]) -> X509Pool:
    """One pool trusting ``pki``'s CA, with default settings."""
    return make_x509_pool()
