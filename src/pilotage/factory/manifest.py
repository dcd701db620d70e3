"""Pilot files: the set the factory serves, its SHA-256 manifest, and the Ed25519 signature.

The manifest is the text ``sha256sum`` prints and checks — one ``<hex>  <name>`` line
per file, sorted by name — so the bootstrap verifies with the node's own tools. Its own
SHA-256 goes on the pilot's command line (through the batch system, the channel the
site already trusts), which pins every byte the pilot will run. ``manifest.sig`` is the
factory key's Ed25519 signature of the manifest, checked by the validation step with
``factory.pub`` (itself listed in the manifest).

A file set is published into ``<root>/<manifest sha256>/``: each version has its own
URLs, so an HTTP cache (a site's Squid) may keep a file forever without ever serving a
stale one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pilotage.credentials.atomic import write_file
from pilotage.errors import BadInput, OperatorError

#: Names a pilot file may have: one path component, no hidden files.
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "manifest"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "factory.pub"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The factory's signing key at ``path`` (PEM, unencrypted), made on first use (0600)."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise OperatorError(
                f"factory key {path} is not an unencrypted PEM key: {exc}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise OperatorError(f"factory key {path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, pem, mode=0o600, replace=False)
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    """The key's public half, as a SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def manifest_text(files: Mapping[str, bytes]) -> bytes:
    """The ``sha256sum``-format manifest of ``files`` (name -> content), sorted by name."""
    lines = []
    for name in sorted(files):
        if not FILE_NAME.match(name) or name in (MANIFEST, SIGNATURE):
            raise BadInput(f"{name!r} cannot be a pilot file name")
        lines.append(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n")
    return "".join(lines).encode("ascii")


@dataclass(frozen=True)
class Published:
    """One published file set."""

    #: SHA-256 of the manifest: the version, the directory name, the bootstrap's argument.
    manifest_sha256: str
    directory: Path
    names: tuple[str, ...]


def publish(root: Path, files: Mapping[str, bytes], key: Ed25519PrivateKey) -> Published:
    """Write ``files``, ``factory.pub``, the manifest and its signature under ``root``.

    Idempotent: the same files give the same directory, rewritten in place only when
    missing. Files are written to a temporary directory and renamed into place, so a
    server never serves half a set.
    """
    everything = dict(files)
    everything[PUBLIC_KEY] = public_pem(key)
    manifest = manifest_text(everything)
    digest = hashlib.sha256(manifest).hexdigest()
    target = root / digest
    names = (*sorted(everything), MANIFEST, SIGNATURE)
    if target.is_dir() and all((target / n).exists() for n in names):
        return Published(digest, target, names)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{digest}.{os.getpid()}"
    staging.mkdir(mode=0o755)
    for name, content in everything.items():
        (staging / name).write_bytes(content)
    (staging / MANIFEST).write_bytes(manifest)
    (staging / SIGNATURE).write_bytes(base64.b64encode(key.sign(manifest)) + b"\n")
    try:
        staging.rename(target)
    except OSError:
        # Another writer published the same set first; theirs is identical.
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
    return Published(digest, target, names)


def verify(directory: Path, manifest_sha256: str) -> list[str]:
    """Names of the files of a published set that do not match its manifest.

    The factory's own check (and the tests'); the pilot does the same in sh.
    """
    manifest = (directory / MANIFEST).read_bytes()
    if hashlib.sha256(manifest).hexdigest() != manifest_sha256:
        return [MANIFEST]
    bad = []
    for line in manifest.decode("ascii").splitlines():
        digest, _, name = line.partition("  ")
        path = directory / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(name)
    return bad
