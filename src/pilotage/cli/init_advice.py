"""What ``pilotage init`` says after it: the next three commands, and where an existing
configuration does not match the ``--host`` and ``--bind`` asked for."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pilotage.statedir import StateDir, default_state_dir

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def next_steps(state: StateDir) -> list[str]:
    """Start the server, mint a pilot token, start a pilot: with this pool's paths."""
    root = state.root.resolve()
    prefix = "pilotage"
    if root != default_state_dir().resolve():
        prefix = f"pilotage --state-dir {shlex.quote(str(root))}"
    ca = shlex.quote(str(root / "ca" / "ca.crt"))
    url = shlex.quote(str(root / "server.url"))
    return [
        f"{prefix} server --detach",
        f"{prefix} token issue --role pilot --subject site-pilots --lifetime 12h --out pilot.token",
        f"pilotage pilot --server $(cat {url}) --ca {ca} --token pilot.token --workdir /tmp/pilot1",
    ]


def config_notes(state: StateDir, hosts: Sequence[str], bind: str | None) -> list[str]:
    """Where the (existing) configuration does not do what ``--host``/``--bind`` ask."""
    if not hosts and bind is None:
        return []
    server = state.settings().server
    notes = []
    if hosts and server.public_name.lower() not in {h.strip().lower() for h in hosts}:
        notes.append(
            f"{state.config} keeps public_name = {server.public_name!r}: set "
            f'[server] public_name = "{hosts[0].strip()}" so that server.url names it'
        )
    if bind is not None and server.host != bind:
        notes.append(f'{state.config} keeps host = {server.host!r}: set [server] host = "{bind}"')
    elif bind is None and hosts and server.host in _LOOPBACK:
        notes.append(
            f"{state.config} keeps host = {server.host!r}, so only this machine can connect: "
            'set [server] host = "0.0.0.0" to listen for remote pilots and users'
        )
    return notes
