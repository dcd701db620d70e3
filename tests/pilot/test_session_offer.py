"""The agent's reading of a session offer (pilot/session.py; docs/pilot-protocol.md,
"Sessions"): the server's example, and what it refuses."""

from __future__ import annotations

import pytest

from pilotage.pilot.session import Offer
from pilotage.pilot.wire import ProtocolError

EXAMPLE = {
    "session_id": "9f2c", "claim_id": "c-3q2X_fT0", "job": "12.0", "command": ["ls", "-l"],
    "tty": False, "rows": 24, "cols": 80, "term": "dumb", "max_s": 3600, "idle_s": 900,
    "max_bytes": 67108864, "frame_bytes": 65536,
}  # fmt: skip


def test_the_documented_offer() -> None:
    offer = Offer.from_wire(EXAMPLE)
    assert (offer.command, offer.tty, offer.frame_bytes) == (("ls", "-l"), False, 65536)
    assert Offer.from_wire({**EXAMPLE, "command": None}).command is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": "ls -l"}, "bad command"),
        ({"command": ["ls", 1]}, "bad command"),
        ({"tty": "no"}, "bad value for 'tty'"),
        ({"max_bytes": "lots"}, "bad value for 'max_bytes'"),
        ({"session_id": None}, "bad value for 'session_id'"),
    ],
)
def test_a_malformed_offer_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Offer.from_wire({**EXAMPLE, **change})
