"""Why ``pilotage-exec`` stopped before running the payload, and its exit code.

The tree, split by who must act::

    Refusal                 base; ``exit_code`` and a one-sentence ``message``
    ├── ClientError   201   the caller's request is wrong: credential, permissions, path
    ├── SiteError     202   the site must act or retry later: config, authz unreachable
    └── Denied        203   the site's policy says no (banned, no mapping)

The payload's own exit code passes through; in linger mode an exit code of the payload
that collides with these (201 to 204) is reported as ``PAYLOAD_COLLISION`` (204), so a
caller never mistakes a payload's 202 for ours. 202 and 203 are kept apart on purpose:
"retry later" and "never" call for opposite reactions from the pilot.
"""

from __future__ import annotations

CLIENT_ERROR = 201
SITE_ERROR = 202
DENIED = 203
PAYLOAD_COLLISION = 204
OWN_CODES = frozenset({CLIENT_ERROR, SITE_ERROR, DENIED, PAYLOAD_COLLISION})


class Refusal(Exception):
    """Base of every reason the switch stops; ``str()`` is the message shown to the caller."""

    exit_code = SITE_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(Refusal):
    """The request is wrong and retrying it unchanged cannot help (exit 201)."""

    exit_code = CLIENT_ERROR


class SiteError(Refusal):
    """Bad site configuration or a transient failure; the caller may retry later (exit 202)."""

    exit_code = SITE_ERROR


class Denied(Refusal):
    """The site's authorization policy refuses this identity (exit 203)."""

    exit_code = DENIED
