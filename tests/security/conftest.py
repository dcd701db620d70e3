"""The security tier: one test (at least) per finding of the security review.

Each test runs an attack against real parts (real accounts, the installed switch, a real
pool on 127.0.0.1) and asserts that it is refused the way docs/security.md says. CI runs
this tier as root; a test that needs root or a service skips locally without it and fails
under ``CI=true`` (``require_service``).
"""

from .switch_helpers import screds, ssite  # noqa: F401 - the switch tests' site
