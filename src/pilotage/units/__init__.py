"""Systemd units of pilotage's services, and the accounts they run as.

The templates here (``*.in``) name the ``pilotage`` executable ``@PILOTAGE@`` and the
configuration directory ``@CONFDIR@``; :func:`render` fills them in.
``pilotage admin install-units`` writes them for this installation; the repository's
``packaging/systemd/`` holds them rendered for ``/usr/bin/pilotage`` and ``/etc/pilotage``
(a test keeps the two in step). docs/operations.md says how to use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pilotage.errors import BadInput

_HERE = Path(__file__).resolve().parent

#: The services, in the order an admin starts them.
UNITS = (
    "pilotage-server.service",
    "pilotage-factory.service",
    "pilotage-frontend.service",
    "pilotage-site-authz.service",
)
SYSUSERS = "pilotage.sysusers"
#: What the packaged units name.
PACKAGED_PILOTAGE = "/usr/bin/pilotage"
PACKAGED_CONFDIR = "/etc/pilotage"


@dataclass(frozen=True)
class Rendered:
    """One file to install: its name and its text."""

    name: str
    text: str


def render(pilotage: str, confdir: str) -> list[Rendered]:
    """Every unit and the sysusers file, for this ``pilotage`` executable and config dir."""
    for value, what in ((pilotage, "the pilotage executable"), (confdir, "the config dir")):
        if not value.startswith("/") or any(c.isspace() for c in value) or "%" in value:
            raise BadInput(
                f"{what} must be an absolute path without spaces or '%' "
                f"(systemd reads it in ExecStart=): {value!r}"
            )
    out = []
    for name in (*UNITS, SYSUSERS):
        template = (_HERE / f"{name}.in").read_text(encoding="utf-8")
        text = template.replace("@PILOTAGE@", pilotage).replace("@CONFDIR@", confdir.rstrip("/"))
        out.append(Rendered(name, text))
    return out


def install(dest: Path, sysusers_dir: Path | None, *, pilotage: str, confdir: str) -> list[Path]:
    """Write the units to ``dest`` and the accounts to ``sysusers_dir/pilotage.conf``."""
    if not dest.is_dir():
        raise BadInput(f"{dest} is not a directory; create it or choose another --dest")
    written = []
    for unit in render(pilotage, confdir):
        if unit.name == SYSUSERS:
            if sysusers_dir is None:
                continue
            sysusers_dir.mkdir(parents=True, exist_ok=True)
            target = sysusers_dir / "pilotage.conf"
        else:
            target = dest / unit.name
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(unit.text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(target)
        written.append(target)
    return written
