"""The collateral a quote is verified against, and loaders for the shapes it travels in.

:class:`Collateral` mirrors dcap-qvl's ``QuoteCollateralV3``: issuer chains as PEM text, CRLs as
DER, TCB Info and QE Identity as the *exact signed JSON text* plus their raw r||s signatures, and
an optional PCK chain. Loaders:

- :func:`load_dcap_qvl_json` — the ``QuoteCollateralV3`` JSON (CRLs hex-encoded DER).
- :func:`from_pcs_responses` — raw PCS/PCCS response bodies (``{"tcbInfo": ..., "signature": ...}``)
  and the issuer-chain header values (URL-encoded PEM), CRLs in DER, PEM or hex text.

Loading never verifies anything; it only checks shapes. The CRLs may be absent (``None``) for
partial collateral; the verifier refuses that unless told ``dangerous_skip_crls``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import unquote

from ..errors import CollateralError
from ._json import loads_object, top_level_members
from .qeidentity import QeIdentity
from .tcbinfo import TcbInfo

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----")


@dataclass(frozen=True)
class Collateral:
    """Everything besides the quote that DCAP verification needs (QuoteCollateralV3 shape)."""

    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    pck_crl_issuer_chain: str | None = None
    root_ca_crl: bytes | None = None
    pck_crl: bytes | None = None
    pck_certificate_chain: str | None = None

    def __post_init__(self) -> None:
        for name in ("tcb_info_signature", "qe_identity_signature"):
            if len(getattr(self, name)) != 64:
                raise CollateralError(f"collateral: {name} must be 64 bytes (r||s)")

    @property
    def cache_key(self) -> tuple[object, ...]:
        """Every field, as an exact (collision-free) cache key for verified collateral."""
        return (
            self.tcb_info_issuer_chain,
            self.tcb_info,
            self.tcb_info_signature,
            self.qe_identity_issuer_chain,
            self.qe_identity,
            self.qe_identity_signature,
            self.pck_crl_issuer_chain,
            self.root_ca_crl,
            self.pck_crl,
            self.pck_certificate_chain,
        )

    @cached_property
    def tcb_info_model(self) -> TcbInfo:
        """The parsed TCB Info (CollateralError if it does not parse)."""
        return TcbInfo.parse(self.tcb_info)

    @cached_property
    def qe_identity_model(self) -> QeIdentity:
        """The parsed QE Identity (CollateralError if it does not parse)."""
        return QeIdentity.parse(self.qe_identity)

    def to_dcap_qvl_dict(self) -> dict[str, Any]:
        """The dcap-qvl ``QuoteCollateralV3`` JSON shape (absent CRLs become empty strings)."""
        out: dict[str, Any] = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain or "",
            "root_ca_crl": (self.root_ca_crl or b"").hex(),
            "pck_crl": (self.pck_crl or b"").hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }
        if self.pck_certificate_chain is not None:
            out["pck_certificate_chain"] = self.pck_certificate_chain
        return out

    def to_dcap_qvl_json(self) -> str:
        """:meth:`to_dcap_qvl_dict` as JSON text."""
        return json.dumps(self.to_dcap_qvl_dict())


def _sig(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CollateralError(f"collateral: {what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise CollateralError(f"collateral: {what} is not hex") from None
    if len(raw) != 64:
        raise CollateralError(f"collateral: {what} must be 64 bytes (r||s)")
    return raw


def _text(obj: dict[str, Any], key: str, optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise CollateralError(f"collateral: field {key!r} must be a string")
    return value


def crl_to_der(value: bytes | str, what: str = "CRL") -> bytes:
    """Normalise a CRL given as DER, PEM, or hex text (PCCS ``/rootcacrl``) to DER."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if raw[:1] == b"\x30":
        return raw
    stripped = raw.strip()
    m = _PEM_CRL.search(stripped)
    if m:
        try:
            return base64.b64decode(b"".join(m.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            raise CollateralError(f"{what}: bad PEM") from None
    try:
        der = bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CollateralError(f"{what}: neither DER, PEM nor hex") from None
    if der[:1] != b"\x30":
        raise CollateralError(f"{what}: hex text does not hold a DER CRL")
    return der


def load_dcap_qvl_json(data: str | bytes) -> Collateral:
    """Load dcap-qvl's ``QuoteCollateralV3`` JSON (empty CRL strings mean "absent")."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise CollateralError("collateral: not UTF-8 text") from None
    obj = loads_object(text, "collateral")

    def crl(key: str) -> bytes | None:
        value = _text(obj, key, optional=True)
        if not value:
            return None
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise CollateralError(f"collateral: {key} is not hex") from None

    return Collateral(
        pck_crl_issuer_chain=_text(obj, "pck_crl_issuer_chain", optional=True) or None,
        root_ca_crl=crl("root_ca_crl"),
        pck_crl=crl("pck_crl"),
        tcb_info_issuer_chain=_text(obj, "tcb_info_issuer_chain") or "",
        tcb_info=_text(obj, "tcb_info") or "",
        tcb_info_signature=_sig(obj.get("tcb_info_signature"), "tcb_info_signature"),
        qe_identity_issuer_chain=_text(obj, "qe_identity_issuer_chain") or "",
        qe_identity=_text(obj, "qe_identity") or "",
        qe_identity_signature=_sig(obj.get("qe_identity_signature"), "qe_identity_signature"),
        pck_certificate_chain=_text(obj, "pck_certificate_chain", optional=True) or None,
    )


def signed_member(body: bytes | str, member: str) -> tuple[str, bytes]:
    """From a PCS response body, the exact text of ``member`` and the decoded ``signature``."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise CollateralError(f"{member} response: not UTF-8 text") from None
    members = top_level_members(text, f"{member} response")
    if member not in members or "signature" not in members:
        raise CollateralError(f"{member} response: needs '{member}' and 'signature'")
    signature = loads_object('{"s":' + members["signature"] + "}", f"{member} response")["s"]
    return members[member], _sig(signature, f"{member} signature")


def decode_issuer_chain(value: str | bytes) -> str:
    """An issuer-chain header value (URL-encoded PEM) or plain PEM, as PEM text."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if "%" in text:
        text = unquote(text)
    if not _PEM_CERT.search(text.encode("latin-1", "replace")):
        raise CollateralError("issuer chain: no PEM certificate in it")
    return text


def from_pcs_responses(
    *,
    tcb_info_response: bytes | str,
    tcb_info_issuer_chain: str | bytes,
    qe_identity_response: bytes | str,
    qe_identity_issuer_chain: str | bytes | None = None,
    pck_crl: bytes | str | None = None,
    pck_crl_issuer_chain: str | bytes | None = None,
    root_ca_crl: bytes | str | None = None,
    pck_certificate_chain: str | None = None,
) -> Collateral:
    """Build :class:`Collateral` from raw PCS/PCCS response bodies and issuer-chain headers.

    Example::

        c = from_pcs_responses(tcb_info_response=body, tcb_info_issuer_chain=hdr,
                               qe_identity_response=qe_body, qe_identity_issuer_chain=qe_hdr,
                               pck_crl=crl_der, pck_crl_issuer_chain=crl_hdr, root_ca_crl=root_hex)

    The QE Identity chain defaults to the TCB Info chain (the same Intel TCB Signing key signs both).
    """
    tcb_text, tcb_sig = signed_member(tcb_info_response, "tcbInfo")
    qe_text, qe_sig = signed_member(qe_identity_response, "enclaveIdentity")
    tcb_chain = decode_issuer_chain(tcb_info_issuer_chain)
    return Collateral(
        tcb_info_issuer_chain=tcb_chain,
        tcb_info=tcb_text,
        tcb_info_signature=tcb_sig,
        qe_identity_issuer_chain=(
            decode_issuer_chain(qe_identity_issuer_chain) if qe_identity_issuer_chain else tcb_chain
        ),
        qe_identity=qe_text,
        qe_identity_signature=qe_sig,
        pck_crl_issuer_chain=decode_issuer_chain(pck_crl_issuer_chain) if pck_crl_issuer_chain else None,
        pck_crl=crl_to_der(pck_crl, "PCK CRL") if pck_crl is not None else None,
        root_ca_crl=crl_to_der(root_ca_crl, "root CA CRL") if root_ca_crl is not None else None,
        pck_certificate_chain=pck_certificate_chain,
    )


__all__ = [
    "Collateral",
    "crl_to_der",
    "decode_issuer_chain",
    "from_pcs_responses",
    "load_dcap_qvl_json",
    "signed_member",
]
