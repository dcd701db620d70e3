"""The pilot's bootstrap (POSIX sh), and the launch that runs it at an entry.

The bootstrap is what the batch system runs. With two arguments — the URL of a
published file set and the SHA-256 of its manifest — it:

1. downloads the manifest over plain HTTP (``curl`` or ``wget``, through ``http_proxy``
   when the site sets one, so a Squid can cache it) and checks its SHA-256;
2. downloads every file the manifest lists and checks each one's SHA-256 (``sha256sum``
   or ``openssl dgst``) *before anything is run*; a mismatch stops the pilot with
   ``file <name> does not match the manifest`` and a ``pilotage-validation`` report
   line with reason ``file_mismatch`` and the file's name;
3. finds Python (``PILOTAGE_PYTHON``, ``python3``, ``python``) and runs the validation
   step (:mod:`pilotage.factory.validate`: the manifest's signature, the node, the
   switch's two tests by the pilot's mode, the site's scripts, the lifetime);
4. replaces itself with the agent, with the flags validation wrote.

It works in ``PILOTAGE_SCRATCH``, in a new directory of its own (the local
backend's ``scratch`` param sets it), else in the batch system's working directory.

The pilot token arrives in ``PILOTAGE_PILOT_TOKEN`` (the batch system's environment,
never over HTTP); the bootstrap moves it to a 0600 file and unsets the variable.

Exit codes: 20 the files could not be fetched or did not match; 21 validation refused
the node; otherwise the agent's.
"""

from __future__ import annotations

import re
import shlex

from pilotage.errors import BadInput
from pilotage.factory.backends.base import Launch

BOOTSTRAP = r"""#!/bin/sh
# pilotage bootstrap: fetch the pilot files, check each against the manifest whose
# SHA-256 is given here, validate the node, start the agent. Usage:
#   bootstrap.sh FILES_URL MANIFEST_SHA256
set -u
url=${1:?usage: bootstrap.sh FILES_URL MANIFEST_SHA256}
want=${2:?usage: bootstrap.sh FILES_URL MANIFEST_SHA256}

say() { echo "pilotage-bootstrap: $*" >&2; }
refuse() {  # reason message [file]
    if [ -n "${3:-}" ]; then file=", \"file\": \"$3\""; else file=""; fi
    printf 'pilotage-validation: {"ok": false, "reason": "%s", "message": "%s"%s}\n' \
        "$1" "$2" "$file"
    say "refusing to start: $2"
    exit 20
}
sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
    else
        refuse tools "neither sha256sum nor openssl is available"
    fi
}
fetch() {  # name
    if command -v curl >/dev/null 2>&1; then
        curl --fail --silent --show-error --retry 3 --output "$files/$1" "$url/$1"
    elif command -v wget >/dev/null 2>&1; then
        wget --quiet --tries=3 --output-document="$files/$1" "$url/$1"
    else
        refuse tools "neither curl nor wget is available"
    fi || refuse fetch "cannot download $url/$1" "$1"
}

case $want in
    *[!0-9a-f]*) refuse usage "the manifest hash must be 64 lower-case hex digits" ;;
esac
[ ${#want} -eq 64 ] || refuse usage "the manifest hash must be 64 lower-case hex digits"

# The site's scratch (the entry's "scratch" param) is shared: one directory per pilot.
if [ -n "${PILOTAGE_SCRATCH:-}" ]; then
    scratch=$(mktemp -d "$PILOTAGE_SCRATCH/pilotage.XXXXXX") ||
        refuse scratch "cannot make a directory in $PILOTAGE_SCRATCH"
else
    scratch=$PWD
fi
files=$scratch/pilot-files
mkdir -p "$files" && chmod 700 "$files" || refuse scratch "cannot make $files"
say "files from $url (manifest $want)${http_proxy:+ through $http_proxy}"

fetch manifest
got=$(sha256 "$files/manifest")
[ "$got" = "$want" ] ||
    refuse file_mismatch "file manifest does not match its hash (expected $want, got $got)" manifest
while read -r sum name; do
    case $name in
        '' | .* | */*) refuse manifest "the manifest names a bad file: $name" ;;
    esac
    fetch "$name"
    got=$(sha256 "$files/$name")
    [ "$got" = "$sum" ] || refuse file_mismatch \
        "file $name does not match the manifest (expected $sum, got $got)" "$name"
done <"$files/manifest"
fetch manifest.sig
say "every file matches the manifest"

python=${PILOTAGE_PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
[ -n "$python" ] || refuse python "no python3 on this node"

token=$files/token
(umask 077 && printf '%s\n' "${PILOTAGE_PILOT_TOKEN:-}" >"$token")
unset PILOTAGE_PILOT_TOKEN

# Validation; the switch's two tests (seed 000 section 3.2) run inside it.
"$python" -I "$files/validate.py" "$files" "$scratch" "$token" || exit 21

set --
while IFS= read -r arg; do set -- "$@" "$arg"; done <"$files/agent-args"
say "starting the agent"
exec "$python" -I "$files/agent.pyz" "$@"
"""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bootstrap_launch(
    files_url: str,
    manifest_sha256: str,
    token: str,
    *,
    walltime_s: int,
    name: str = "pilot",
    extra_env: dict[str, str] | None = None,
) -> Launch:
    """The launch that runs the bootstrap for one published file set.

    The bootstrap's text is the launch's script itself (no file to fetch before the
    hashes can be checked); its arguments are the files' URL and the manifest's hash.
    """
    if not _SHA256.match(manifest_sha256):
        raise BadInput("the manifest hash must be 64 lower-case hex digits")
    if not files_url.startswith(("http://", "https://")):
        raise BadInput(f"pilot files URL {files_url!r} must be http:// or https://")
    body = BOOTSTRAP.split("\n", 1)[1]  # the job script has its own #! line
    script = f"set -- {shlex.quote(files_url.rstrip('/'))} {shlex.quote(manifest_sha256)}\n{body}"
    env = {"PILOTAGE_PILOT_TOKEN": token, **(extra_env or {})}
    return Launch(script=script, env=env, walltime_s=walltime_s, name=name)
