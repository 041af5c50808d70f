"""Collateral for a simulated platform, signed the way Intel's PCS signs it.

- TCB Info v3 (``id`` "SGX", the platform's FMSPC and PCE-ID, the levels of
  :mod:`~sgx_quote_helper.sim.tcb_history`), signed ECDSA-P256-SHA256 by the SIMULATED TCB
  signing key over the exact compact JSON text that is served;
- QE Identity v2 (``id`` "QE", QE3's MRSIGNER, ISVPRODID 1, the real QE Identity's masks);
  both for any published TCB evaluation of :mod:`~sgx_quote_helper.sim.tcb_history` (the standard
  one by default), and the signed list of evaluation data numbers (PCS v4
  ``tcbevaluationdatanumbers``);
- the PCK certificates Intel would hold for the platform: one per TCB level at or below its TCB,
  same PCK key and PPID (what PCS ``pckcerts`` lists and PCK certificate selection picks from);
- the root CA CRL (issued by the root) and the PCK CRL (issued by the platform's PCK CA), both with
  CRLNumber and AuthorityKeyIdentifier;
- all of it as dcap-qvl's ``QuoteCollateralV3`` JSON (keys and encodings of
  ``shared/testdata/real/*/collateral-*.dcap-qvl.json``).

Dates: issueDate / CRL thisUpdate = ``now`` - 1 hour in whole seconds, nextUpdate = issue + 30 days
(root CRL: a year). The functions are the building blocks a PCCS serves (``pccs/`` reuses them).
No I/O: ``now`` is a parameter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..abi.keyid import QE3_MRSIGNER, QE3_PROD_ID
from . import pki
from .platform import Platform
from .qe import PPID_OAEP, raw_signature
from .tcb_history import EVALUATIONS, TcbEvaluation, TcbLevel, evaluation

#: validity of TCB Info and QE Identity, as Intel's (30 days)
COLLATERAL_VALIDITY = dt.timedelta(days=30)
#: the real QE Identity's MISCSELECT / ATTRIBUTES expectations (flags 0x11 under mask 0xFB..FF)
QE_MISCSELECT = "00000000"
QE_MISCSELECT_MASK = "FFFFFFFF"
QE_ATTRIBUTES = "11000000000000000000000000000000"
QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"


def _rfc3339(t: dt.datetime) -> str:
    return pki.whole_seconds(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(now: dt.datetime) -> tuple[str, str]:
    issue = pki.whole_seconds(now) - pki.ISSUE_BACKDATE
    return _rfc3339(issue), _rfc3339(issue + COLLATERAL_VALIDITY)


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _standard() -> TcbEvaluation:
    standard = evaluation()
    assert standard is not None
    return standard


def tcb_info_json(platform: Platform, now: dt.datetime, published: TcbEvaluation | None = None) -> bytes:
    """The exact ``tcbInfo`` JSON text (compact, Intel's key order) that gets signed, for the TCB
    evaluation ``published`` (default: the standard one)."""
    ev = published or _standard()
    issue, next_update = _window(now)
    levels = []
    for level in ev.tcb_levels:
        entry: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": [{"svn": c} for c in level.components], "pcesvn": level.pcesvn},
            "tcbDate": level.tcb_date,
            "tcbStatus": level.status,
        }
        if level.advisory_ids:
            entry["advisoryIDs"] = list(level.advisory_ids)
        levels.append(entry)
    ident = platform.identity
    return _compact(
        {
            "id": "SGX",
            "version": 3,
            "issueDate": issue,
            "nextUpdate": next_update,
            "fmspc": ident.fmspc.hex().upper(),
            "pceId": ident.pce_id.to_bytes(2, "big").hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": ev.number,
            "tcbLevels": levels,
        }
    )


def qe_identity_json(now: dt.datetime, published: TcbEvaluation | None = None) -> bytes:
    """The exact ``enclaveIdentity`` JSON text of the simulated QE (v2, id "QE"), for the TCB
    evaluation ``published`` (default: the standard one)."""
    ev = published or _standard()
    issue, next_update = _window(now)
    levels = []
    for level in ev.qe_levels:
        entry: dict[str, Any] = {
            "tcb": {"isvsvn": level.isvsvn},
            "tcbDate": level.tcb_date,
            "tcbStatus": level.status,
        }
        if level.advisory_ids:
            entry["advisoryIDs"] = list(level.advisory_ids)
        levels.append(entry)
    return _compact(
        {
            "id": "QE",
            "version": 2,
            "issueDate": issue,
            "nextUpdate": next_update,
            "tcbEvaluationDataNumber": ev.number,
            "miscselect": QE_MISCSELECT,
            "miscselectMask": QE_MISCSELECT_MASK,
            "attributes": QE_ATTRIBUTES,
            "attributesMask": QE_ATTRIBUTES_MASK,
            "mrsigner": QE3_MRSIGNER.hex().upper(),
            "isvprodid": QE3_PROD_ID,
            "tcbLevels": levels,
        }
    )


def tcb_evaluation_data_numbers_json(tee: str, now: dt.datetime) -> bytes:
    """The exact ``tcbEvaluationDataNumbers`` JSON text (PCS v4 model v1: ``id`` SGX|TDX, the
    published numbers newest first with their TCB recovery event date and TCB date)."""
    issue, next_update = _window(now)
    numbers = [
        {
            "tcbEvaluationDataNumber": e.number,
            "tcbRecoveryEventDate": e.tcb_recovery_event_date,
            "tcbDate": e.tcb_date,
        }
        for e in EVALUATIONS
    ]
    return _compact(
        {
            "id": tee.upper(),
            "version": 1,
            "issueDate": issue,
            "nextUpdate": next_update,
            "tcbEvalNumbers": numbers,
        }
    )


def sign_json(platform: Platform, body: bytes) -> bytes:
    """The TCB signing key's raw r||s signature over ``body`` (as TCB Info / QE Identity carry it)."""
    return raw_signature(platform.keys["tcb_signing"], body)


def _response(field: str, body: bytes, signature: bytes) -> bytes:
    return b'{"' + field.encode() + b'":' + body + b',"signature":"' + signature.hex().encode() + b'"}'


def tcb_info_response(platform: Platform, now: dt.datetime) -> tuple[bytes, bytes]:
    """PCS ``GET /sgx/certification/v4/tcb?fmspc=`` answer: (body, TCB-Info-Issuer-Chain PEM)."""
    body = tcb_info_json(platform, now)
    return _response("tcbInfo", body, sign_json(platform, body)), platform.tcb_signing_chain_pem()


def qe_identity_response(platform: Platform, now: dt.datetime) -> tuple[bytes, bytes]:
    """PCS ``GET /sgx/certification/v4/qe/identity`` answer: (body, SGX-Enclave-Identity-Issuer-Chain PEM)."""
    body = qe_identity_json(now)
    return _response("enclaveIdentity", body, sign_json(platform, body)), platform.tcb_signing_chain_pem()


def root_ca_crl_der(platform: Platform, now: dt.datetime) -> bytes:
    """The root CA's CRL (DER, empty, valid a year from ``now`` - 1 hour)."""
    crl = pki.make_crl(platform.keys["root"], platform.certs["root"], now=now, validity=pki.ROOT_CRL_VALIDITY)
    return crl.public_bytes(serialization.Encoding.DER)


def pck_crl_der(platform: Platform, now: dt.datetime, revoked_serials: tuple[int, ...] = ()) -> bytes:
    """The PCK CA's CRL (DER, valid 30 days), listing ``revoked_serials`` (keyCompromise)."""
    crl = pki.make_crl(
        platform.keys["pck_ca"],
        platform.certs["pck_ca"],
        now=now,
        validity=pki.PCK_CRL_VALIDITY,
        revoked_serials=revoked_serials,
    )
    return crl.public_bytes(serialization.Encoding.DER)


def pck_cert_pem(platform: Platform) -> tuple[bytes, bytes]:
    """PCS ``GET /sgx/certification/v4/pckcert`` answer: (leaf PEM, SGX-PCK-Certificate-Issuer-Chain PEM)."""
    leaf = platform.certs["pck"].public_bytes(serialization.Encoding.PEM)
    return leaf, platform.pck_ca_chain_pem()


def _at_or_below(level: TcbLevel, cpusvn: bytes, pcesvn: int) -> bool:
    return level.pcesvn <= pcesvn and all(c <= r for c, r in zip(level.components, cpusvn, strict=True))


def registered_tcbs(platform: Platform) -> list[tuple[bytes, int]]:
    """The (CPUSVN, PCESVN) of every PCK certificate Intel holds for the platform: its own TCB,
    then each distinct TCB level of the published evaluations at or below it, highest first."""
    ident = platform.identity
    out: list[tuple[bytes, int]] = [(ident.cpusvn, ident.pcesvn)]
    for ev in EVALUATIONS:
        for level in ev.tcb_levels:
            tcb = (bytes(level.components), level.pcesvn)
            if tcb not in out and _at_or_below(level, ident.cpusvn, ident.pcesvn):
                out.append(tcb)
    return out


def pck_cert_at(platform: Platform, cpusvn: bytes, pcesvn: int) -> x509.Certificate:
    """A PCK certificate of the platform for another (lower) TCB: same PCK key, PPID, FMSPC and
    issuer, TCB components and PCESVN of the level (signed now by the SIMULATED PCK CA; the
    platform's own TCB gives its stored certificate)."""
    ident = platform.identity
    if (cpusvn, pcesvn) == (ident.cpusvn, ident.pcesvn):
        return platform.certs["pck"]
    own = platform.certs["pck"]
    lower = replace(ident, cpusvn=cpusvn, pcesvn=pcesvn)
    serial = (
        int.from_bytes(
            hashlib.sha256(
                own.serial_number.to_bytes(20, "big") + cpusvn + bytes([pcesvn & 0xFF, pcesvn >> 8])
            ).digest()[:16],
            "big",
        )
        >> 1
    )
    return pki.make_pck_leaf(
        platform.keys["pck"].public_key(),
        ident.ca,
        platform.keys["pck_ca"],
        platform.certs["pck_ca"],
        lower.sgx_extensions().to_der(),
        now=own.not_valid_before_utc + pki.BACKDATE,
        serial=serial,
    )


def tcbm(cpusvn: bytes, pcesvn: int) -> str:
    """An ``SGX-TCBm`` header value: hex(CPUSVN (16) || PCESVN (u16 LE)), upper case."""
    return (cpusvn + pcesvn.to_bytes(2, "little")).hex().upper()


def pck_cert_tcbm(platform: Platform) -> str:
    """The ``SGX-TCBm`` header value of the PCK certificate: hex(CPUSVN (16) || PCESVN (u16 LE)), upper case."""
    ident = platform.identity
    return (ident.cpusvn + ident.pcesvn.to_bytes(2, "little")).hex().upper()


def decrypt_ppid(platform: Platform, encrypted_ppid: bytes) -> bytes | None:
    """What Intel's PCS does with ``pckcert?encrypted_ppid=``: RSA-3072-OAEP-SHA256 decrypt with the
    platform's PCE encryption key. ``None`` if it was not encrypted to this platform."""
    try:
        return platform.pce_encryption_key.decrypt(encrypted_ppid, PPID_OAEP)
    except ValueError:
        return None


def root_ca_der(platform: Platform) -> bytes:
    """The SIMULATED root certificate, DER (the trust anchor a verifier pins)."""
    return platform.certs["root"].public_bytes(serialization.Encoding.DER)


def quote_collateral(platform: Platform, now: dt.datetime) -> dict[str, str]:
    """Everything a verifier needs, in dcap-qvl's ``QuoteCollateralV3`` JSON shape.

    ``pck_certificate_chain`` is included when the platform's quotes carry an encrypted PPID
    (certification data type 3) instead of the chain.
    """
    tcb = tcb_info_json(platform, now)
    qe = qe_identity_json(now)
    signing_chain = platform.tcb_signing_chain_pem().decode()
    out = {
        "pck_crl_issuer_chain": platform.pck_ca_chain_pem().decode(),
        "root_ca_crl": root_ca_crl_der(platform, now).hex(),
        "pck_crl": pck_crl_der(platform, now).hex(),
        "tcb_info_issuer_chain": signing_chain,
        "tcb_info": tcb.decode(),
        "tcb_info_signature": sign_json(platform, tcb).hex(),
        "qe_identity_issuer_chain": signing_chain,
        "qe_identity": qe.decode(),
        "qe_identity_signature": sign_json(platform, qe).hex(),
    }
    if platform.identity.cert_data == "encrypted-ppid":
        out["pck_certificate_chain"] = platform.pck_chain_pem().decode()
    return out


def quote_collateral_json(platform: Platform, now: dt.datetime) -> str:
    """:func:`quote_collateral` as JSON text (what ``sim collateral`` writes)."""
    return json.dumps(quote_collateral(platform, now), indent=1) + "\n"


__all__ = [
    "COLLATERAL_VALIDITY",
    "decrypt_ppid",
    "pck_cert_at",
    "pck_cert_pem",
    "pck_cert_tcbm",
    "pck_crl_der",
    "qe_identity_json",
    "qe_identity_response",
    "quote_collateral",
    "quote_collateral_json",
    "registered_tcbs",
    "root_ca_crl_der",
    "root_ca_der",
    "sign_json",
    "tcb_evaluation_data_numbers_json",
    "tcb_info_json",
    "tcb_info_response",
    "tcbm",
]
