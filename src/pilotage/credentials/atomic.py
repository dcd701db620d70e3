"""Writing credential files safely: whole or not at all, private from the first byte.

Grid tools write proxies to ``/tmp/x509up_u<uid>``, a world-writable directory, so the
write must neither follow a planted symlink nor leave a readable half-written key. The
data goes to a fresh ``O_EXCL`` temporary file with mode 0600 in the target directory,
is synced, then renamed over the target. An existing target owned by another user, or
that is not a regular file, is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from pilotage.errors import BadInput


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, replace: bool = True
) -> Path:
    """Write ``data`` to ``path`` atomically with ``mode``; return the path.

    With ``replace=False`` an existing file is an error (``BadInput``) rather than
    overwritten; the check and the link are one atomic step.
    """
    target = Path(path)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BadInput(f"Cannot inspect {target}: {exc.strerror}.") from exc
    if st is not None:
        if not replace:
            raise BadInput(f"{target} already exists; remove it or choose another path.")
        # Why: never replace another user's file, e.g. one planted in /tmp to be trusted.
        if st.st_uid != os.geteuid():
            raise BadInput(f"{target} belongs to another user; refusing to replace it.")
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{target} is not a regular file; refusing to replace it.")
    try:
        # mkstemp opens with O_CREAT | O_EXCL and mode 0600: no one else can open it.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise BadInput(f"Cannot write in {target.parent}: {exc.strerror}.") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp_name, target)
        else:
            os.link(tmp_name, target)
    except FileExistsError as exc:
        raise BadInput(f"{target} already exists; remove it or choose another path.") from exc
    except OSError as exc:
        raise BadInput(f"Cannot write {target}: {exc.strerror}.") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return target
