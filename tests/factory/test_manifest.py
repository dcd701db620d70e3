"""Published pilot files: the manifest, its signature, and the pilot's own verifier."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pilotage.errors import BadInput, OperatorError
from pilotage.factory.manifest import load_or_create_key, manifest_text, publish, verify
from pilotage.factory.validate import Refused, check_signature, ed25519_verify

FILES = {"agent.pyz": b"PK agent", "validate.py": b"print('ok')\n", "pilot.json": b"{}\n"}


def test_manifest_is_sha256sum_format_and_sha256sum_accepts_it(tmp_path: Path) -> None:
    published = publish(tmp_path, FILES, Ed25519PrivateKey.generate())
    lines = (published.directory / "manifest").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted([*FILES, "factory.pub"])
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "manifest"],
        cwd=published.directory,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert verify(published.directory, published.manifest_sha256) == []


def test_publish_is_idempotent_and_versioned(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    first = publish(tmp_path, FILES, key)
    assert publish(tmp_path, FILES, key) == first
    second = publish(tmp_path, {**FILES, "pilot.json": b'{"v": 2}\n'}, key)
    assert second.manifest_sha256 != first.manifest_sha256
    assert first.directory.name == first.manifest_sha256
    assert (first.directory / "pilot.json").read_bytes() == b"{}\n"


def test_verify_names_a_tampered_file(tmp_path: Path) -> None:
    published = publish(tmp_path, FILES, Ed25519PrivateKey.generate())
    (published.directory / "agent.pyz").write_bytes(b"PK evil")
    assert verify(published.directory, published.manifest_sha256) == ["agent.pyz"]
    assert verify(published.directory, "0" * 64) == ["manifest"]


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "manifest", ""])
def test_bad_file_names_are_refused(name: str) -> None:
    with pytest.raises(BadInput):
        manifest_text({name: b""})


def test_the_pilot_checks_the_signature(tmp_path: Path) -> None:
    published = publish(tmp_path, FILES, Ed25519PrivateKey.generate())
    check_signature(published.directory)
    (published.directory / "manifest").write_bytes(b"0" * 64 + b"  agent.pyz\n")
    with pytest.raises(Refused, match="signature does not verify"):
        check_signature(published.directory)


def test_pure_python_ed25519_agrees_with_cryptography() -> None:
    for size in (0, 1, 64, 1000):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(size)
        signature = key.sign(message)
        public = key.public_key().public_bytes_raw()
        assert ed25519_verify(public, message, signature)
        assert not ed25519_verify(public, message + b"x", signature)
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        assert not ed25519_verify(public, message, flipped)
        other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        assert not ed25519_verify(other, message, signature)
    assert not ed25519_verify(b"\xff" * 32, b"", b"\x00" * 64)
    assert not ed25519_verify(public, b"", b"short")


def test_factory_key_is_made_private_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "factory.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_key(path)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    path.write_text("not a key")
    with pytest.raises(OperatorError, match="not an unencrypted PEM key"):
        load_or_create_key(path)


def test_signature_file_is_base64_of_64_bytes(tmp_path: Path) -> None:
    published = publish(tmp_path, FILES, Ed25519PrivateKey.generate())
    assert len(base64.b64decode((published.directory / "manifest.sig").read_text())) == 64
