"""The few DER structures read by hand: ProxyCertInfo and canonical names.

``cryptography`` parses certificates but hands RFC 3820's ProxyCertInfo extension over as
raw bytes, and has no OpenSSL-style canonical name (the one behind ``<hash>.0`` file names
and name comparison). Both are small, so they are decoded here with a strict reader of
definite-length DER: any trailing byte, overlong length or indefinite form is refused.

Standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_UTF8_STRING = 0x0C
TAG_SEQUENCE = 0x30
TAG_SET = 0x31

#: String types OpenSSL canonicalises (re-encoded as lowercased UTF8String), with their
#: codecs. T61String is read as Latin-1, as OpenSSL does.
_CANONICAL_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # T61String
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True)
class ProxyCertInfo:
    """The decoded RFC 3820 ProxyCertInfo extension value."""

    path_length: int | None
    policy_language: str
    policy: bytes | None


def read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one TLV at ``pos``; return ``(tag, value_start, value_end)``."""
    if pos + 2 > len(data):
        raise DerError("truncated tag or length")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not expected here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # Why: 0x80 is BER's indefinite form, never DER; four length bytes are plenty here.
        if count == 0 or count > 4 or pos + count > len(data):
            raise DerError("bad length encoding")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("non-minimal length encoding")
        pos += count
    if pos + length > len(data):
        raise DerError("value runs past the end of the data")
    return tag, pos, pos + length


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one DER TLV (definite, minimal length)."""
    n = len(value)
    if n < 0x80:
        return bytes((tag, n)) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + value


def decode_oid(value: bytes) -> str:
    """Decode the contents of an OBJECT IDENTIFIER into dotted form."""
    if not value or value[-1] & 0x80:
        raise DerError("truncated object identifier")
    arcs: list[int] = []
    current = 0
    for i, byte in enumerate(value):
        if current == 0 and byte == 0x80 and (i == 0 or not value[i - 1] & 0x80):
            raise DerError("non-minimal object identifier arc")
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_proxy_cert_info(der: bytes) -> ProxyCertInfo:
    """Decode ``ProxyCertInfo ::= SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL,
    proxyPolicy SEQUENCE { policyLanguage OID, policy OCTET STRING OPTIONAL } }``."""
    tag, start, end = read_tlv(der, 0)
    if tag != TAG_SEQUENCE or end != len(der):
        raise DerError("ProxyCertInfo is not one SEQUENCE")
    tag, v_start, v_end = read_tlv(der, start)
    path_length: int | None = None
    if tag == TAG_INTEGER:
        if v_end == v_start or v_end - v_start > 4 or der[v_start] & 0x80:
            raise DerError("pCPathLenConstraint is not a small non-negative INTEGER")
        path_length = int.from_bytes(der[v_start:v_end], "big")
        tag, v_start, v_end = read_tlv(der, v_end)
    if tag != TAG_SEQUENCE or v_end != end:
        raise DerError("proxyPolicy is not the last element, or not a SEQUENCE")
    tag, o_start, o_end = read_tlv(der, v_start)
    if tag != TAG_OID:
        raise DerError("policyLanguage is not an OBJECT IDENTIFIER")
    language = decode_oid(der[o_start:o_end])
    policy: bytes | None = None
    if o_end != v_end:
        tag, p_start, p_end = read_tlv(der, o_end)
        if tag != TAG_OCTET_STRING or p_end != v_end:
            raise DerError("policy is not a single OCTET STRING")
        policy = der[p_start:p_end]
    return ProxyCertInfo(path_length, language, policy)


def _canonical_value(tag: int, raw_tlv: bytes, value: bytes) -> bytes:
    """OpenSSL's canonical form of one attribute value."""
    codec = _CANONICAL_STRING_CODECS.get(tag)
    if codec is None:
        return raw_tlv  # Other types (NumericString, BIT STRING ...) are kept as they are.
    try:
        text = value.decode(codec).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise DerError(f"attribute value is not valid {codec}") from exc
    # Strip, collapse runs of ASCII whitespace to one space, lowercase ASCII letters only.
    canonical = b" ".join(text.split()).lower()
    return encode_tlv(TAG_UTF8_STRING, canonical)


def canonical_name(name_der: bytes) -> bytes:
    """OpenSSL's canonical encoding of a DER Name: the RDN SETs, re-encoded, no outer SEQUENCE.

    Two names that OpenSSL considers equal have equal canonical encodings; the switch uses
    it to find issuers and CRLs, and the CA uses it for ``<hash>.0`` file names.
    """
    tag, pos, end = read_tlv(name_der, 0)
    if tag != TAG_SEQUENCE or end != len(name_der):
        raise DerError("a Name is not one SEQUENCE")
    out = bytearray()
    while pos < end:
        tag, set_pos, set_end = read_tlv(name_der, pos)
        if tag != TAG_SET:
            raise DerError("an RDN is not a SET")
        members: list[bytes] = []
        while set_pos < set_end:
            tag, ava_pos, ava_end = read_tlv(name_der, set_pos)
            if tag != TAG_SEQUENCE:
                raise DerError("an attribute is not a SEQUENCE")
            tag, _, oid_end = read_tlv(name_der, ava_pos)
            if tag != TAG_OID:
                raise DerError("an attribute type is not an OBJECT IDENTIFIER")
            v_tag, v_start, v_end = read_tlv(name_der, oid_end)
            if v_end != ava_end:
                raise DerError("an attribute has trailing data")
            oid_tlv = name_der[ava_pos:oid_end]
            value = _canonical_value(v_tag, name_der[oid_end:v_end], name_der[v_start:v_end])
            members.append(encode_tlv(TAG_SEQUENCE, oid_tlv + value))
            set_pos = ava_end
        # Why: DER orders SET OF members by their encodings; OpenSSL re-sorts them too.
        out += encode_tlv(TAG_SET, b"".join(sorted(members)))
        pos = set_end
    return bytes(out)


def subject_hash(name_der: bytes) -> str:
    """OpenSSL's ``subject_hash`` (``openssl x509 -hash``): 8 hex digits.

    SHA-1 of the canonical encoding; its first four bytes read as a little-endian number.
    """
    digest = hashlib.sha1(canonical_name(name_der), usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"
