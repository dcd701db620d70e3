"""Reading a credential file on the user's side: one rule for every command.

A file holding a private key (a proxy, ``userkey.pem``) must be the caller's own regular
file, not a symlink, with mode 0600 or 0400: a key that others can read may already be
stolen, and grid tools (``grid-proxy-init``, the switch) refuse it too. ``pilotage login``,
``delegate`` and ``proxy init``/``info`` all read through here, so none of them is laxer
than another (review finding 13). A certificate alone (``usercert.pem``) may be public.

The file is opened once, without following a final symlink and without blocking on a
FIFO, and checked with ``fstat`` on that descriptor, so what is checked is what is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pilotage.errors import BadInput, NotFound

#: More than any credential (the validator refuses larger ones anyway).
MAX_FILE_BYTES = 1 << 20
_KEY_MARKER = b"PRIVATE KEY-----"


class UnsafeCredentialFile(BadInput):
    """A file holding a private key is a symlink, not the caller's, or open to others."""


def read_credential_file(path: Path, what: str, *, private: bool = False) -> bytes:
    """The bytes of ``path``; refuse it as ``check_private`` says if it holds a key.

    ``private=True`` (a proxy or key file) applies the rule even before reading the key.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    is_link = False
    try:
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            is_link = True
            fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"The {what} {path} does not exist.") from None
    except OSError as exc:
        raise BadInput(f"The {what} {path} cannot be read: {exc.strerror}.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"The {what} {path} is not a regular file.")
        if private:
            check_private(path, what, st, is_link=is_link)
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"The {what} {path} is larger than {MAX_FILE_BYTES} bytes.")
    if _KEY_MARKER in data:
        check_private(path, what, st, is_link=is_link)
    return data


def check_private(path: Path, what: str, st: os.stat_result, *, is_link: bool) -> None:
    """Refuse a key file that is a symlink, someone else's, or readable by others."""
    fix = f"run 'chmod 600 {path}'"
    # Why: a symlink can be re-pointed by whoever owns its directory; grid tools refuse it.
    if is_link:
        raise UnsafeCredentialFile(
            f"The {what} {path} is a symbolic link; a file holding a private key must be a "
            "regular file of yours (copy it, then run 'chmod 600' on the copy)."
        )
    # Why: a key another account owns was not made for the caller (or was planted).
    if st.st_uid != os.getuid():
        raise UnsafeCredentialFile(
            f"The {what} {path} belongs to uid {st.st_uid}, not to you; a file holding a "
            f"private key must be your own (copy it, then {fix} on the copy)."
        )
    # Why: as grid-proxy-init and the switch: a key others can read may already be stolen.
    if st.st_mode & 0o177:
        mode = stat.S_IMODE(st.st_mode)
        why = "is readable by others" if mode & 0o077 else "is not mode 0600 or 0400"
        raise UnsafeCredentialFile(
            f"The {what} {path} holds a private key and {why} (mode {mode:04o}); {fix}."
        )
