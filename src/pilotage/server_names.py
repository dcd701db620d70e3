"""The names a pool's server is reached by, and the server certificate that carries them.

``pilotage init --host pool.example.org --host 192.0.2.7`` puts each name in the server
certificate's subject alternative names (DNS names and IP addresses apart), next to
``localhost``, this machine's names, ``127.0.0.1`` and ``::1``; the first ``--host``
becomes the certificate's common name and the config's ``[server] public_name``, which
the server writes to ``server.url`` for clients and pilots.

A certificate that lacks a name asked for is issued again for the old names and the
new ones; the previous certificate and key are kept as ``server.crt.previous`` and
``server.key.previous`` (a key is never overwritten).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pilotage.credentials import pki
from pilotage.errors import BadInput

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
#: Always in the certificate: the server is reached locally by these.
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerNames:
    """DNS names and IP addresses, in the order given, without repeats."""

    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def __or__(self, other: ServerNames) -> ServerNames:
        return ServerNames(
            tuple(dict.fromkeys((*self.dns, *other.dns))),
            tuple(dict.fromkeys((*self.ips, *other.ips))),
        )

    def missing_from(self, carried: ServerNames) -> list[str]:
        """The names here that ``carried`` lacks."""
        return [n for n in self.dns if n not in carried.dns] + [
            i for i in self.ips if i not in carried.ips
        ]


def parse_hosts(hosts: Sequence[str]) -> ServerNames:
    """``--host`` values as DNS names and IP addresses; :class:`BadInput` for others."""
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        text = host.strip()
        try:
            ips.append(str(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        if not _HOSTNAME.match(text) or ".." in text:
            raise BadInput(
                f"--host {host!r} is neither a DNS name (letters, digits, hyphens, dots) nor "
                "an IP address; give the name clients and pilots will use, e.g. "
                "--host pool.example.org"
            )
        dns.append(text.lower())
    return ServerNames(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))


def local_names() -> ServerNames:
    """localhost, this host's names and the loopback addresses."""
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    dns = sorted(n.lower() for n in names if _HOSTNAME.match(n))
    return ServerNames(tuple(dns), LOOPBACK_IPS)


def carried_by(cert_file: Path) -> ServerNames:
    """The names in a certificate's subject alternative names."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ServerNames()
    return ServerNames(
        tuple(n.lower() for n in san.get_values_for_type(x509.DNSName)),
        tuple(str(i) for i in san.get_values_for_type(x509.IPAddress)),
    )


def issue(
    ca_cert: Path, ca_key: Path, cert_file: Path, key_file: Path, asked: ServerNames
) -> str | None:
    """Make sure the server certificate carries ``asked``; say what was done, if anything.

    ``asked`` comes first in the certificate (its first name is the common name).
    """
    names = asked | local_names()
    if cert_file.exists():
        carried = carried_by(cert_file)
        missing = asked.missing_from(carried)
        if not missing:
            return None
        names = asked | carried | local_names()
        cert_file.replace(cert_file.with_name(cert_file.name + ".previous"))
        key_file.replace(key_file.with_name(key_file.name + ".previous"))
        what = f"re-issued {cert_file} to add {', '.join(missing)} (restart the server)"
    else:
        what = str(cert_file)
    cert, key = pki.issue_server_cert(
        ca_cert.read_bytes(),
        ca_key.read_bytes(),
        hostnames=list(names.dns),
        ip_addresses=list(names.ips),
    )
    pki.write_private(key_file, key)
    cert_file.write_bytes(cert)
    return what
