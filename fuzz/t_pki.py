"""Certificate targets: the PCK chain loader and checks (``verify.steps``/``verify.chain``), CRLs, the
trusted-root loader and issuer-chain headers, on mutated DER of the real certificates.

Invariant: every step raises VerificationError / CollateralError (or passes), never a
``cryptography`` ValueError or anything else.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgx_quote_helper.abi.quote import parse_quote
from sgx_quote_helper.cli.inspect_cmd import pck_fields
from sgx_quote_helper.verify import chain as ch
from sgx_quote_helper.verify import steps
from sgx_quote_helper.verify.collateral import decode_issuer_chain

from .seeds import real_files, real_quotes
from .target import Target, ours

#: a fixed "now" (checks take time as a parameter; the fuzz run reads no clock)
NOW = datetime(2024, 6, 1, tzinfo=UTC)
MODES = ("leaf", "ca", "pem", "crl", "root", "header", "inspect-leaf")


def pem(der: bytes) -> bytes:
    """DER wrapped as one PEM certificate block."""
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


@cache
def real_chain() -> tuple[bytes, ...]:
    """DER of the first real PCK chain found (leaf, PCK CA, root), or () without the vectors."""
    for raw in real_quotes():
        quote = ours(parse_quote, raw)
        chain_pem = ours(lambda q=quote: q.pck_chain_pem) if quote is not None else None
        if chain_pem:
            certs = x509.load_pem_x509_certificates(chain_pem)
            return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return ()


def _chain_with(position: int, der: bytes) -> bytes:
    parts = list(real_chain()) or [b"", b"", b""]
    parts[position] = der
    return b"".join(pem(p) for p in parts if p)


def check_pki(data: bytes) -> int:
    """Byte 0 picks what the rest is: a PCK leaf or PCK CA (DER, placed in the real chain), PEM
    text, a DER CRL, a trusted root, an issuer-chain header, or a PCK leaf for ``inspect``."""
    if not data:
        return 1
    mode, body = MODES[data[0] % len(MODES)], data[1:]
    if mode in ("leaf", "ca", "pem"):
        text = body if mode == "pem" else _chain_with(0 if mode == "leaf" else 1, body)
        chain = ours(steps.load_pck_chain, text, ch.TrustedRoot.intel())
        if chain is not None:
            ours(steps.check_pck_chain, chain, NOW)
            ours(ch.sgx_extensions, chain.leaf, steps.Step.PCK_CHAIN)
            ch.common_name(chain.leaf)
    elif mode == "crl":
        crl = ours(ch.load_crl, body, steps.Step.CRL, "pck-crl")
        if crl is not None and real_chain():
            ca = x509.load_der_x509_certificate(real_chain()[1])
            ours(ch.check_crl, crl, ca, NOW, steps.Step.CRL, "pck-crl")
            ours(ch.check_not_revoked, crl, ca, steps.Step.CRL, "pck-ca")
    elif mode == "root":
        root = ours(ch.TrustedRoot.load, body)
        if root is not None:
            root.sha256  # noqa: B018
    elif mode == "header":
        ours(decode_issuer_chain, body.decode("latin-1"))
    else:  # what ``sgx-quote-helper inspect`` decodes from a quote's PCK chain
        ours(pck_fields, _chain_with(0, body))
    return 1


@cache
def pki_seeds() -> tuple[bytes, ...]:
    """Each real certificate in each role, the real CRLs, the chain as PEM and as a header."""
    from urllib.parse import quote as urlquote

    chain = real_chain()
    seeds = [bytes([i]) + der for i, der in enumerate(chain[:2])]
    seeds += [bytes([6]) + der for der in chain[:1]]
    if chain:
        seeds.append(bytes([2]) + b"".join(pem(d) for d in chain))
        seeds.append(bytes([4]) + chain[-1])
        seeds.append(bytes([5]) + urlquote(b"".join(pem(d) for d in chain[1:])).encode())
    for raw in real_files("*.dcap-qvl.json")[:1]:
        obj = json.loads(raw)
        for key in ("pck_crl", "root_ca_crl"):
            if isinstance(obj.get(key), str):
                seeds.append(bytes([3]) + bytes.fromhex(obj[key]))
    return tuple(seeds)


PKI = Target(
    "pki",
    "verify PCK chain loader/checks, CRL loader, trusted root, issuer-chain headers, inspect's PCK "
    "decoder (mutated real DER)",
    check_pki,
    pki_seeds,
    max_size=4096,
)

__all__ = ["PKI", "pem", "real_chain"]
