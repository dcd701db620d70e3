"""The payload's environment: cleared, then an allow-list, then what the switch sets.

``PATH`` always comes from the config, never from the caller (seed 000, §4.9). Names the
dynamic loader or an interpreter reads at start-up never pass, even if a site's
allow-list would let them: they turn "run this program" into "run my code first".
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: Prefixes and names that never reach the payload, whatever the allow-list says.
NEVER_PREFIXES = ("LD_", "DYLD_", "MALLOC_", "GCONV_", "PYTHON", "PERL", "RUBY", "NODE_",
                  "JAVA_TOOL", "_JAVA", "BASH_FUNC_", "PILOTAGE_EXEC_")  # fmt: skip
NEVER_NAMES = frozenset(
    {
        "BASH_ENV", "ENV", "IFS", "CDPATH", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN",
        "RES_OPTIONS", "NLSPATH", "TMPDIR", "SHELLOPTS", "PS4",
        "X509_USER_PROXY", "BEARER_TOKEN", "BEARER_TOKEN_FILE",
    }
)  # fmt: skip


def allowed(name: str, allow: tuple[str, ...]) -> bool:
    """Whether the caller's variable ``name`` may pass to the payload."""
    if name.startswith(NEVER_PREFIXES) or name in NEVER_NAMES:
        return False
    return any(_matches(name, pattern) for pattern in allow)


def _matches(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase``; a plain ``NAME`` or ``PREFIX*`` without it (its regular
    expressions cost 1-2 ms of imports at every start)."""
    head = pattern.removesuffix("*")
    if not any(char in head for char in "*?[]"):
        return name.startswith(head) if head != pattern else name == pattern
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def build(
    caller_env: Mapping[str, str],
    allow: tuple[str, ...],
    *,
    search_path: str,
    account: str,
    home: str,
    shell: str,
    credential: tuple[str, str] | None,
) -> dict[str, str]:
    """The payload's environment; ``credential`` is (variable, path of the user's copy)."""
    env = {k: v for k, v in caller_env.items() if allowed(k, allow) and "\0" not in v}
    env.update(PATH=search_path, HOME=home, USER=account, LOGNAME=account, SHELL=shell)
    if credential is not None:
        env[credential[0]] = credential[1]
    return env
