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

The line is written by ``to_json``, not by the ``json`` package, whose imports (regular
expressions compiled at import) cost about 2 ms at every start: strings go through the
very C function ``json.dumps`` uses, so the line is byte for byte what ``json.dumps``
would write. The datagram goes through ``_socket``, the C module behind ``socket``, which
would import ``enum`` and more. Neither is written to disk with ``fsync``: the log is an
append, and a node that loses power loses its jobs too.
"""

from __future__ import annotations

import os
import sys
import time

try:  # the C function behind json.dumps' strings (ASCII out, every other character escaped)
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    from json.encoder import py_encode_basestring_ascii as _quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: authpriv (10) * 8 + info (6)
AUTHPRIV_INFO = 86
INFINITY = float("inf")


def to_json(value: Any) -> str:
    """``value`` as ``json.dumps`` writes it: str, int, float, bool, None, and lists, tuples
    and dicts (str keys) of them; ``TypeError`` for anything else."""
    if isinstance(value, str):
        return _quote(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (INFINITY, -INFINITY):
            return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return "{" + ", ".join(f"{_quote(k)}: {to_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} is not written to the audit")


def write(path: str, syslog_socket: str, record: dict[str, Any]) -> None:
    """Append ``record`` to the audit log at ``path`` and to syslog."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    line = to_json({k: v for k, v in record.items() if v is not None})
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
        import _socket

        message = f"<{AUTHPRIV_INFO}>pilotage-exec[{os.getpid()}]: {line}".encode()
        # As syslog(3): silent when no daemon listens (stderr may be the payload's own).
        try:
            sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            try:
                sender.sendto(message, syslog_socket)
            finally:
                sender.close()
        except OSError:
            pass
