"""One JSON line per invocation in the audit log, and the same line to syslog (authpriv).

Fields (absent when unknown): ``time`` (ISO 8601 UTC), ``event`` (``exec``, ``exit``,
``signal``, ``refresh``, ``refused``), ``caller``, ``pilot``, ``user``, ``issuer``,
``groups``, ``account``, ``mode``, ``linger``, ``job``, ``command``, ``pid``, ``exit``,
``message``, and in linger mode ``cpu_s``, ``wall_s``, ``max_rss_kb``. A record that
cannot be written is reported on stderr; it never changes the exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def write(path: str, use_syslog: bool, record: dict[str, Any]) -> None:
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
    if use_syslog:
        import syslog

        syslog.openlog("pilotage-exec", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(syslog.LOG_INFO, line)
