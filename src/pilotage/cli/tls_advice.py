"""One sentence for a server certificate the client does not accept, naming the fix.

Two cases, told apart by what the TLS library said: the certificate is not signed by a
CA the client trusts (give the pool's CA, ``STATE_DIR/ca/ca.crt`` on the server's host,
with ``--ca`` or ``PILOTAGE_CA``), or it does not name the host the client asked for
(reach the server by a name it carries, or add the name with ``pilotage init --host``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit


def certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (a connection error), if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx and httpcore wrap it once or twice
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tls_advice(url: str, ca: Path | None, error: ssl.SSLCertVerificationError) -> str:
    """What went wrong with the certificate of the server at ``url``, and what to do."""
    host = urlsplit(url).hostname or url
    why = f"CERTIFICATE_VERIFY_FAILED: {error.verify_message or error.reason or error}"
    if error.verify_code == 62 or "mismatch" in why.lower():  # X509_V_ERR_HOSTNAME_MISMATCH
        return (
            f"cannot reach the server at {url}: its certificate does not name {host} ({why}); "
            "reach the server by a name its certificate carries (the one in "
            "STATE_DIR/server.url on the server), or add this one there with "
            f"'pilotage init --host {host}' and restart the server"
        )
    if ca is None:
        return (
            f"cannot reach the server at {url}: its certificate is not signed by a CA this "
            f"client trusts ({why}); give the pool's CA with --ca $STATE/ca/ca.crt (the file "
            "in the server's state directory; copy it here) or set PILOTAGE_CA to that file"
        )
    return (
        f"cannot reach the server at {url}: its certificate is not signed by the CA in {ca} "
        f"({why}); give the pool's own CA, $STATE/ca/ca.crt in the server's state directory, "
        "with --ca or PILOTAGE_CA"
    )
