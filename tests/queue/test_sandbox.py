"""Sandbox tar streams: malicious archives are refused, honest ones round-trip."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pilotage.errors import BadInput
from pilotage.queue.sandbox import SandboxError, SandboxTooLarge, extract, pack, spool, validate

MAX = 1 << 20


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """Build a tar in memory from hand-made members, whatever they claim."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return special(name, tarfile.SYMTYPE, target)


def refused(data: bytes, tmp_path: Path, **limits: int) -> str:
    """Assert that validate, spool and extract all refuse ``data`` alike; return the message."""
    kwargs = {"max_bytes": MAX, "max_members": 100} | limits
    with pytest.raises(SandboxError) as by_validate:
        validate(io.BytesIO(data), **kwargs)
    spooled = tmp_path / "upload.tar"
    with pytest.raises(SandboxError) as by_spool:
        spool(io.BytesIO(data), spooled, **kwargs)
    assert not spooled.exists()
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SandboxError) as by_extract:
        extract(io.BytesIO(data), dest, **kwargs)
    assert str(by_validate.value) == str(by_spool.value) == str(by_extract.value)
    return str(by_extract.value)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([reg("/etc/evil")], "sandbox member '/etc/evil' has an absolute path"),
        ([reg("../x")], "sandbox member '../x' climbs out of the sandbox with '..'"),
        ([reg("a/../../x")], "sandbox member 'a/../../x' climbs out of the sandbox"),
        ([special("h", tarfile.LNKTYPE, "etc")], "sandbox member 'h' is a hard link"),
        ([special("dev", tarfile.CHRTYPE)], "sandbox member 'dev' is a device"),
        ([special("blk", tarfile.BLKTYPE)], "sandbox member 'blk' is a device"),
        ([special("pipe", tarfile.FIFOTYPE)], "sandbox member 'pipe' is a FIFO"),
        ([special("vol", b"V")], "sandbox member 'vol' has the unsupported tar type"),
        (
            [symlink("passwd", "/etc/passwd")],
            "sandbox member 'passwd' is a symlink to the absolute path '/etc/passwd'",
        ),
        (
            [symlink("d/up", "../../etc")],
            "sandbox member 'd/up' is a symlink pointing outside the sandbox",
        ),
        (
            [symlink("etc", "d"), reg("etc/passwd")],
            "sandbox member 'etc/passwd' goes through the symlink 'etc'",
        ),
        (
            [symlink("f", "g"), reg("f")],
            "sandbox member 'f' would replace the symlink of that name",
        ),
        ([reg("f"), reg("f")], "sandbox member 'f' appears twice in the archive"),
        ([reg("f"), reg("f/g")], "sandbox member 'f/g' lies below the file 'f'"),
        (
            # Each link looks harmless alone; sub/b goes sub/a (= .) then .. out of the root.
            [symlink("sub/a", ".."), symlink("sub/b", "a/../..")],
            "sandbox member 'sub/b' is a symlink that leads outside the sandbox through",
        ),
        ([symlink("x", "y"), symlink("y", "x")], "sandbox member 'x' is part of a symlink loop"),
    ],
)
def test_malicious_member_is_refused(
    members: list[tuple[tarfile.TarInfo, bytes | None]], expected: str, tmp_path: Path
) -> None:
    message = refused(make_tar(*members), tmp_path)
    assert message.startswith(expected)


def test_nul_in_name_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("plain")
    info.pax_headers = {"path": "a\x00b"}
    message = refused(make_tar((info, b"x")), tmp_path)
    assert message == "sandbox member 'a\\x00b' has a NUL byte in its name"


def test_symlink_then_file_through_it_writes_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_tar(symlink("link", "../outside"), reg("link/pwned"))
    message = refused(data, tmp_path)
    assert "pointing outside the sandbox" in message
    assert list(outside.iterdir()) == []


def test_extract_never_writes_through_a_symlink_already_in_dest(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f").symlink_to(outside / "f")
    (dest / "d").symlink_to(outside)
    with pytest.raises(SandboxError, match="sandbox member 'f' already exists"):
        extract(io.BytesIO(make_tar(reg("f"))), dest, max_bytes=MAX)
    with pytest.raises(SandboxError, match="sandbox member 'd/g' lies below 'd', not a dir"):
        extract(io.BytesIO(make_tar(reg("d/g"))), dest, max_bytes=MAX)
    assert list(outside.iterdir()) == []


def test_too_many_members(tmp_path: Path) -> None:
    data = make_tar(*(reg(f"f{i}") for i in range(4)))
    message = refused(data, tmp_path, max_members=3)
    assert message == "sandbox member 'f3' is one more than the limit of 3 members"
    with pytest.raises(SandboxTooLarge):
        validate(io.BytesIO(data), max_bytes=MAX, max_members=3)


def test_too_much_member_data(tmp_path: Path) -> None:
    data = make_tar(reg("a", b"a" * 30000), reg("b", b"b" * 30000))
    # The header of 'b' declares more than the limit allows before its data is read.
    message = refused(data, tmp_path, max_bytes=50000)
    assert message == (
        "sandbox member 'b' brings the sandbox to 60000 bytes, over the limit of 50000"
    )


def test_stream_larger_than_limit(tmp_path: Path) -> None:
    data = make_tar(reg("a", b"a" * 100)) + b"\0" * 20000
    message = refused(data, tmp_path, max_bytes=len(data) - 1)
    assert message == f"the sandbox stream is larger than the limit of {len(data) - 1} bytes"


def test_too_large_maps_to_http_413_and_refusals_to_422() -> None:
    assert SandboxTooLarge.http_status == 413
    assert SandboxError.http_status == 422
    assert issubclass(SandboxError, BadInput)


def test_not_a_tar(tmp_path: Path) -> None:
    message = refused(b"hello, this is not an archive\n" * 40, tmp_path)
    assert message.startswith("the sandbox is not a tar archive (")
    assert message.endswith("an uncompressed tar is expected")


def test_empty_input(tmp_path: Path) -> None:
    assert refused(b"", tmp_path) == (
        "the sandbox is empty (0 bytes); an uncompressed tar is expected"
    )


def test_gzip_tar_is_refused(tmp_path: Path) -> None:
    data = gzip.compress(make_tar(reg("a")))
    assert refused(data, tmp_path) == (
        "the sandbox is gzip-compressed; an uncompressed tar is expected"
    )


def test_truncated_tar(tmp_path: Path) -> None:
    data = make_tar(reg("big", b"z" * 50000))[:30000]
    assert "the sandbox tar stream is damaged or truncated" in refused(data, tmp_path)


def test_empty_archive_is_fine(tmp_path: Path) -> None:
    data = make_tar()
    assert extract(io.BytesIO(data), tmp_path, max_bytes=MAX) == []
    assert validate(io.BytesIO(data), max_bytes=MAX) == hashlib.sha256(data).hexdigest()


def test_inside_symlinks_and_dot_prefix_are_accepted(tmp_path: Path) -> None:
    data = make_tar(
        special("./", tarfile.DIRTYPE),
        reg("./lib/libx.so.1", b"elf"),
        symlink("lib/libx.so", "libx.so.1"),
        symlink("bin/x", "../lib/libx.so"),
    )
    names = extract(io.BytesIO(data), tmp_path, max_bytes=MAX)
    assert names == [".", "./lib/libx.so.1", "lib/libx.so", "bin/x"]
    assert (tmp_path / "bin" / "x").read_bytes() == b"elf"


def test_spool_copies_the_whole_stream(tmp_path: Path) -> None:
    data = make_tar(reg("a", b"hello")) + b"\0" * 512  # extra padding is kept verbatim
    dest = tmp_path / "up.tar"
    digest, size = spool(io.BytesIO(data), dest, max_bytes=MAX)
    assert dest.read_bytes() == data
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))


def make_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o4777)
    (root / "sub" / "data.txt").write_bytes(b"data" * 1000)
    (root / "sub" / "deep" / "z").write_bytes(b"")
    os.utime(root / "sub" / "data.txt", (1_700_000_000, 1_700_000_000))


def test_pack_extract_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    out = io.BytesIO()
    size = pack([(str(src / "sub"), "sub"), (str(src / "run.sh"), "run.sh")], out, max_bytes=MAX)
    assert size == len(out.getvalue())
    dest = tmp_path / "dest"
    dest.mkdir()
    names = extract(io.BytesIO(out.getvalue()), dest, max_bytes=MAX)
    assert names == ["run.sh", "sub", "sub/data.txt", "sub/deep", "sub/deep/z"]
    assert (dest / "sub" / "data.txt").read_bytes() == b"data" * 1000
    assert (dest / "sub" / "data.txt").stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755  # setuid and o+w dropped
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        for member in archive.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")


def test_pack_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first, second = io.BytesIO(), io.BytesIO()
    pack([(str(src / "run.sh"), "a/run.sh"), (str(src / "sub"), "b")], first, max_bytes=MAX)
    pack([(str(src / "sub"), "b"), (str(src / "run.sh"), "a/run.sh")], second, max_bytes=MAX)
    assert first.getvalue() == second.getvalue()


def test_pack_refuses_symlinks_bad_names_and_size(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("token")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "out").symlink_to(tmp_path / "secret")
    (tmp_path / "big").write_bytes(b"b" * 5000)
    sink = io.BytesIO()
    with pytest.raises(SandboxError, match=r"'.*/job/out' cannot be read .*symlinks are not"):
        pack([(str(tmp_path / "job"), "job")], sink, max_bytes=MAX)
    with pytest.raises(SandboxError, match="'out' cannot be read"):
        pack([("out", "out")], sink, max_bytes=MAX, base=tmp_path / "job")
    with pytest.raises(SandboxError, match=r"sandbox member '\.\./x' climbs out"):
        pack([(str(tmp_path / "big"), "../x")], sink, max_bytes=MAX)
    with pytest.raises(SandboxError, match="has an absolute path"):
        pack([(str(tmp_path / "big"), "/x")], sink, max_bytes=MAX)
    with pytest.raises(SandboxError, match="'missing' does not exist"):
        pack([("missing", "missing")], sink, max_bytes=MAX, base=tmp_path)
    with pytest.raises(SandboxTooLarge, match="would make the sandbox larger than 4096"):
        pack([(str(tmp_path / "big"), "big")], sink, max_bytes=4096)


def test_pack_base_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("x")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "d").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SandboxError, match="'d/f' cannot be read"):
        pack([("d/f", "d/f")], io.BytesIO(), max_bytes=MAX, base=tmp_path / "job")
