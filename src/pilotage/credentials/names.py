"""Reading distinguished names typed by people: RFC 4514 or the grid's slash form.

``CN=Alice,O=Example`` (RFC 4514, most specific first) and ``/O=Example/CN=Alice`` (the
grid form, most significant first) name the same subject. A ``/`` inside a slash-form
value is kept when what follows is not ``KEY=``, so ``/CN=host/node1.example.org`` works.
"""

from __future__ import annotations

import re

from cryptography import x509

from pilotage.errors import BadInput
from pilotage.x509.certificate import SHORT_NAMES

_BY_SHORT_NAME = {short.lower(): oid for oid, short in SHORT_NAMES.items()}
_SLASH_SPLIT = re.compile(r"/(?=[A-Za-z][A-Za-z0-9.]*=)")


def parse_subject(text: str) -> x509.Name:
    """The ``x509.Name`` written as ``text`` in RFC 4514 or slash form."""
    text = text.strip()
    if not text:
        raise BadInput("The subject is empty; write it as 'CN=Alice,O=Example'.")
    try:
        if text.startswith("/"):
            name = x509.Name([_slash_rdn(part) for part in _SLASH_SPLIT.split(text[1:])])
        else:
            name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise BadInput(f"The subject '{text}' cannot be read ({exc}).") from exc
    if not name.rdns:
        raise BadInput(f"The subject '{text}' names nothing.")
    return name


def _slash_rdn(part: str) -> x509.RelativeDistinguishedName:
    key, sep, value = part.partition("=")
    oid = _BY_SHORT_NAME.get(key.lower())
    if not sep or oid is None or not value:
        raise ValueError(f"'{part}' is not KEY=VALUE with a known KEY")
    return x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)])
