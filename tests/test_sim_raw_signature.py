"""raw_signature: r || s cut out of the DER signature, for every INTEGER length DER can give."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.sim.qe import raw_signature


class _FixedSigner:
    """A key whose signature is a given (r, s), DER-encoded as OpenSSL encodes it."""

    def __init__(self, r: int, s: int) -> None:
        self.der = encode_dss_signature(r, s)

    def sign(self, data: bytes, algorithm: Any) -> bytes:
        return self.der


@pytest.mark.parametrize(
    ("r", "s"),
    [
        (0x7F << 248 | 5, 0x01 << 248 | 7),  # 32 and 32 bytes
        (0xFF << 248 | 1, 0x10 << 248 | 2),  # 33 (0x00 first) and 32
        (0x10 << 248 | 3, 0x80 << 248 | 4),  # 32 and 33
        (0x80 << 248, 0xFF << 248 | 0xFF),  # 33 and 33
        (0x7F << 240, 0x55 << 248),  # 31 and 32: the general path
        (1, 2**256 - 1),  # 1 and 33
    ],
)
def test_every_der_integer_length(r: int, s: int) -> None:
    got = raw_signature(_FixedSigner(r, s), b"data")  # type: ignore[arg-type]
    assert got == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_real_signatures_verify_as_sha256_ecdsa() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    lengths = set()
    for i in range(400):
        data = i.to_bytes(4, "big") * 100
        raw = raw_signature(key, data)
        assert len(raw) == 64
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        key.public_key().verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        lengths.add((r.bit_length() > 255, s.bit_length() > 255))
    assert len(lengths) == 4  # all four DER layouts were exercised (each ~1/4 of signatures)
