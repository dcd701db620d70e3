"""Build the agent's zipapp: the only files a bare worker node needs, standard library only.

The archive holds exactly ``pilotage/__init__.py``, ``pilotage/errors.py``, the queue
package's ``__init__.py`` and ``sandbox.py``, every ``pilotage/pilot/*.py`` and a
top-level ``__main__.py``. It is reproducible: fixed timestamps, sorted entries, no
compression (``zipimport`` then needs no ``zlib``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # src/pilotage
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SHEBANG = b"#!/usr/bin/env python3\n"
_MAIN = b"""import sys

from pilotage.pilot.__main__ import main

sys.exit(main())
"""


def zipapp_members() -> dict[str, Path]:
    """Archive name -> source file, for every module the agent ships."""
    members = {
        "pilotage/__init__.py": _PACKAGE / "__init__.py",
        "pilotage/errors.py": _PACKAGE / "errors.py",
        "pilotage/queue/__init__.py": _PACKAGE / "queue" / "__init__.py",
        "pilotage/queue/sandbox.py": _PACKAGE / "queue" / "sandbox.py",
    }
    for source in sorted((_PACKAGE / "pilot").glob("*.py")):
        members[f"pilotage/pilot/{source.name}"] = source
    return members


def build_zipapp(out: Path) -> Path:
    """Write the agent's zipapp to ``out`` (made executable) and return ``out``."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw:
        raw.write(_SHEBANG)
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
            entries = {name: src.read_bytes() for name, src in zipapp_members().items()}
            entries["__main__.py"] = _MAIN
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, entries[name])
    os.chmod(tmp, 0o755)  # noqa: S103 - an executable for everyone
    os.replace(tmp, out)
    return out
