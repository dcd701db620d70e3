"""Where the switch finds its configuration and keeps its state.

These two constants are the only paths the switch trusts before reading its config. They
are never taken from the environment or the command line: the caller controls both. A
site that wants other paths installs the switch with ``python -m pilotage.exec_install
--config PATH --state-dir DIR --prefix DIR``, which writes a copy of this package with
these two lines rewritten (and nothing else changed).
"""

CONFIG_PATH = "/etc/pilotage/exec.toml"
STATE_DIR = "/var/lib/pilotage-exec"
