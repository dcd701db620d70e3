"""The output selection rule of the protocol, on real files."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from pilotage.pilot.outputs import (
    OutputError,
    credential_needles,
    find_credential,
    pack_outputs,
    select_outputs,
    snapshot,
)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    root.mkdir()
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "in.txt").write_text("input")
    (root / "kept.txt").write_text("unchanged")
    (root / "data").mkdir()
    (root / "data" / "x").write_text("x")
    return root


def test_without_a_list_new_and_changed_top_files_return(scratch: Path) -> None:
    before = snapshot(scratch)
    (scratch / "result.dat").write_text("new")
    (scratch / "in.txt").write_text("changed!")  # an input the job rewrote
    (scratch / "data" / "deep.txt").write_text("not at the top")
    (scratch / "link").symlink_to("kept.txt")  # not a regular file
    (scratch / "logs").mkdir()
    (scratch / "logs" / "out.txt").write_text("stdout")
    names = select_outputs(scratch, before, None, "logs/out.txt", None)
    assert names == ["in.txt", "logs/out.txt", "result.dat"]


def test_a_replaced_file_counts_as_changed(scratch: Path) -> None:
    before = snapshot(scratch)
    st = (scratch / "kept.txt").stat()
    (scratch / "kept.new").write_text("unchanged")  # same size and time, another inode
    os.utime(scratch / "kept.new", ns=(st.st_atime_ns, st.st_mtime_ns))
    (scratch / "kept.new").replace(scratch / "kept.txt")
    assert select_outputs(scratch, before, None, None, None) == ["kept.txt"]


def test_with_a_list_exactly_those_plus_stdout_and_stderr(scratch: Path) -> None:
    before = snapshot(scratch)
    (scratch / "out").write_text("o")
    (scratch / "err").write_text("e")
    (scratch / "ignored.dat").write_text("not listed")
    names = select_outputs(scratch, before, ("data", "./kept.txt"), "out", "err")
    assert names == ["data", "err", "kept.txt", "out"]


def test_a_missing_listed_file_is_an_error(scratch: Path) -> None:
    with pytest.raises(OutputError, match=r"output file 'result\.dat' was not created by the job"):
        select_outputs(scratch, snapshot(scratch), ("result.dat",), None, None)
    with pytest.raises(OutputError, match=r"output file '\.\./x' is not a path inside"):
        select_outputs(scratch, snapshot(scratch), ("../x",), None, None)


def test_pack_outputs_follows_no_symlink(scratch: Path, tmp_path: Path) -> None:
    (tmp_path / "pilot.token").write_text("secret")
    (scratch / "stolen").symlink_to(tmp_path / "pilot.token")
    with pytest.raises(OutputError, match=r"the output sandbox is refused: .*'stolen'"):
        pack_outputs(scratch, ["stolen"], 1 << 20, tmp_path)


def test_pack_outputs_too_large(scratch: Path, tmp_path: Path) -> None:
    (scratch / "big").write_bytes(b"b" * 100_000)
    with pytest.raises(OutputError, match="larger than 50000 bytes"):
        pack_outputs(scratch, ["big"], 50_000, tmp_path)


def test_pack_outputs_round_trip(scratch: Path, tmp_path: Path) -> None:
    with pack_outputs(scratch, ["data", "kept.txt"], 1 << 20, tmp_path) as tar:
        tar.seek(0)
        with tarfile.open(fileobj=tar, mode="r|") as archive:
            assert [m.name for m in archive] == ["data", "data/x", "kept.txt"]


def _proxy_file(path: Path) -> bytes:
    """A file shaped like a proxy: a certificate block, then an RSA key in PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    data = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" + key_pem
    path.write_bytes(data)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("how", ["copy", "key-pem", "one-line", "der", "der-slice"])
def test_an_output_carrying_the_credential_is_found(
    scratch: Path, tmp_path: Path, how: str
) -> None:
    proxy = tmp_path / "x509_proxy"
    der = _proxy_file(proxy)
    data = proxy.read_bytes()
    pem = data[data.index(b"-----BEGIN RSA") :]
    carried = {
        "copy": data,
        "key-pem": b"log line\n" + pem + b"more\n",
        "one-line": b"prefix " + pem.splitlines()[5] + b" suffix",
        "der": b"\x00" * 5000 + der,
        "der-slice": der[600:700],
    }[how]
    (scratch / "clean.txt").write_bytes(b"nothing here\n" * 1000)
    (scratch / "data" / "stolen").write_bytes(carried)
    tar = pack_outputs(scratch, ["clean.txt", "data"], 1 << 24, tmp_path)
    with tar:
        assert find_credential(tar, credential_needles([proxy])) == "data/stolen"


def test_outputs_without_the_credential_pass(scratch: Path, tmp_path: Path) -> None:
    proxy = tmp_path / "x509_proxy"
    _proxy_file(proxy)
    tar = pack_outputs(scratch, ["in.txt", "data"], 1 << 24, tmp_path)
    with tar:
        assert find_credential(tar, credential_needles([proxy, tmp_path / "absent"])) is None
        assert tar.tell() == 0  # rewound for the upload
