"""One JSON line per invocation in the audit log, and the same line to syslog (authpriv).

Fields (absent when unknown): ``time`` (ISO 8601 UTC), ``event`` (``exec``, ``exit``,
``signal``, ``end``, ``refresh``, ``enter``, ``leave``, ``refused``), ``caller``, ``pilot``,
``user``, ``issuer``, ``groups``, ``account``, ``mode``, ``linger``, ``job``, ``family``,
``command``, ``pid``, ``exit``, ``cut`` (``leave``: the caller ended the session),
``message``, and usage (``exit`` with linger, ``end``, ``leave``): ``cpu_user_s``,
``cpu_sys_s``, ``wall_s``, ``max_rss_kb``. Syslog gets one RFC 3164 datagram on the
configured socket (``/dev/log``), written here rather than by ``syslog(3)`` so the site
chooses the socket. A record that cannot be written is reported on stderr; it never
changes the exit code. Invariant: no job's environment is ever in a record (the switch
receives none: the payload's own wrapper reads it from a pipe).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

#: authpriv (10) * 8 + info (6)
AUTHPRIV_INFO = 86


def write(path: str, syslog_socket: str, record: dict[str, Any]) -> None:
    """Append ``record`` to the audit log at ``path`` and to syslog."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    line = json.dumps({k: v for k, v in record.items() if v is not None}, sort_keys=False)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"pilotage-exec: the audit log {path} cannot be written ({exc.strerror})",
              file=sys.stderr)  # fmt: skip
    if syslog_socket:
        import socket

        message = f"<{AUTHPRIV_INFO}>pilotage-exec[{os.getpid()}]: {line}".encode()
        # As syslog(3): silent when no daemon listens (stderr may be the payload's own).
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message, syslog_socket)
