"""The DER read by hand (``pilotage.x509.der``) fuzzed: it sees bytes from anyone.

A proxy's ProxyCertInfo and every name of a presented chain reach ``der.py`` before any
signature is trusted, in the switch as root too. Whatever the bytes, the reader answers
or raises ``DerError`` (a ``ValueError`` the validator turns into "malformed"), never
another exception; valid encodings read back as they were written. Bounded: about 300
examples per property, no deadline, no example database written.
"""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotage.credentials.proxy import encode_oid, encode_proxy_cert_info
from pilotage.x509.der import (
    DerError,
    ProxyCertInfo,
    canonical_name,
    decode_oid,
    decode_proxy_cert_info,
    encode_tlv,
    read_tlv,
    subject_hash,
)

FUZZ = settings(max_examples=300, deadline=None, database=None)

oids = st.builds(
    lambda first, second, rest: ".".join(map(str, [first, second, *rest])),
    st.integers(0, 1),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**40), max_size=8),
) | st.builds(
    lambda second, rest: ".".join(map(str, [2, second, *rest])),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 2**40), max_size=8),
)
infos = st.builds(
    ProxyCertInfo,
    st.none() | st.integers(0, 2**31 - 1),
    oids,
    st.none() | st.binary(max_size=300),
)


def encode(info: ProxyCertInfo) -> bytes:
    return encode_proxy_cert_info(info.policy_language, info.path_length, info.policy)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_der_error(data: bytes) -> None:
    for reader in (decode_proxy_cert_info, canonical_name, subject_hash, decode_oid):
        with contextlib.suppress(DerError):
            reader(data)
    with contextlib.suppress(DerError):
        read_tlv(data, 0)


@FUZZ
@given(infos)
def test_proxy_cert_info_round_trips(info: ProxyCertInfo) -> None:
    assert decode_proxy_cert_info(encode(info)) == info
    assert decode_oid(encode_oid(info.policy_language)[2:]) == info.policy_language


@FUZZ
@given(infos, st.data())
def test_damaged_proxy_cert_info_is_read_or_refused(
    info: ProxyCertInfo, data: st.DataObject
) -> None:
    der = bytearray(encode(info))
    cut = data.draw(st.integers(0, len(der) - 1))
    flipped = bytes(der[:cut]) + bytes([der[cut] ^ data.draw(st.integers(1, 255))]) + der[cut + 1 :]
    for damaged in (bytes(der[:cut]), flipped):
        with contextlib.suppress(DerError):
            assert isinstance(decode_proxy_cert_info(damaged), ProxyCertInfo)
    with pytest.raises(DerError):
        decode_proxy_cert_info(bytes(der) + b"\x00")  # a trailing byte is never DER


@FUZZ
@given(
    st.integers(0, 255).filter(lambda tag: tag & 0x1F != 0x1F),
    st.binary(max_size=300) | st.integers(0, 70000).map(lambda n: b"Z" * n),
)
def test_tlv_round_trips(tag: int, value: bytes) -> None:
    encoded = encode_tlv(tag, value)
    read_tag, start, end = read_tlv(encoded, 0)
    assert (read_tag, encoded[start:end], end) == (tag, value, len(encoded))


names_text = st.text(
    st.characters(codec="ascii", categories=["L", "N"]) | st.just(" "), min_size=1, max_size=40
).filter(str.strip)


@FUZZ
@given(names_text, names_text)
def test_canonical_names_fold_case_and_spaces_as_openssl(org: str, common: str) -> None:
    def name(o: str, cn: str) -> bytes:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        ).public_bytes()

    folded = name(" ".join(org.split()).lower(), " ".join(common.split()).lower())
    assert canonical_name(name(f"  {org.upper()} ", common.swapcase())) == canonical_name(folded)
    assert subject_hash(name(org, common)) == subject_hash(folded)
