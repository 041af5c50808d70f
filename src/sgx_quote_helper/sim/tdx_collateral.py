"""TDX collateral for a simulated platform, signed the way Intel's PCS signs it.

The TDX counterparts of :mod:`~sgx_quote_helper.sim.collateral` (whose CRLs, issuer chains and
JSON signing this reuses):

- TCB Info v3 ``id`` "TDX" (PCS ``GET /tdx/certification/v4/tcb?fmspc=``): the platform's FMSPC and
  PCE-ID, ``tdxModule`` (MRSIGNERSEAM zero, attributes zero under an all-ones mask, as Intel's),
  ``tdxModuleIdentities`` (``TDX_01`` with its levels) and the TDX TCB levels of
  :mod:`~sgx_quote_helper.sim.tdx_tcb_history` (``sgxtcbcomponents``, ``pcesvn``,
  ``tdxtcbcomponents``);
- QE Identity v2 ``id`` "TD_QE" (PCS ``GET /tdx/certification/v4/qe/identity``): Intel's TDQE
  MRSIGNER, ISVPRODID 2, the TDQE levels;
- all of it as dcap-qvl's ``QuoteCollateralV3`` JSON;

both for any published TCB evaluation (``published``: the standard one by default; the PCCS serves
the others for ``update=early`` and ``tcbEvaluationDataNumber=N``).

No I/O: ``now`` is a parameter.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from .collateral import (
    QE_ATTRIBUTES,
    QE_ATTRIBUTES_MASK,
    QE_MISCSELECT,
    QE_MISCSELECT_MASK,
    _compact,
    _response,
    _standard,
    _window,
    pck_crl_der,
    root_ca_crl_der,
    sign_json,
)
from .platform import Platform
from .tcb_history import QeLevel, TcbEvaluation
from .tdqe import TDQE_MRSIGNER, TDQE_PROD_ID
from .tdx_tcb_history import MODULE_LEVELS, MODULE_MAJOR, TDQE_LEVELS, ModuleLevel, tdx_tcb_levels

#: the TDX module identity Intel publishes: MRSIGNERSEAM zero, SEAM attributes zero (all bits checked)
MODULE_MRSIGNER = "00" * 48
MODULE_ATTRIBUTES = "0000000000000000"
MODULE_ATTRIBUTES_MASK = "FFFFFFFFFFFFFFFF"


def _level_entry(level: ModuleLevel | QeLevel) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tcb": {"isvsvn": level.isvsvn},
        "tcbDate": level.tcb_date,
        "tcbStatus": level.status,
    }
    if level.advisory_ids:
        entry["advisoryIDs"] = list(level.advisory_ids)
    return entry


def tdx_tcb_info_json(platform: Platform, now: dt.datetime, published: TcbEvaluation | None = None) -> bytes:
    """The exact TDX ``tcbInfo`` JSON text (compact, Intel's key order) that gets signed, for the TCB
    evaluation ``published`` (default: the standard one)."""
    ev = published or _standard()
    issue, next_update = _window(now)
    levels = []
    for level in tdx_tcb_levels(ev):
        entry: dict[str, Any] = {
            "tcb": {
                "sgxtcbcomponents": [{"svn": c} for c in level.sgx.components],
                "pcesvn": level.sgx.pcesvn,
                "tdxtcbcomponents": [{"svn": c} for c in level.tdx_components],
            },
            "tcbDate": level.sgx.tcb_date,
            "tcbStatus": level.status,
        }
        if level.advisory_ids:
            entry["advisoryIDs"] = list(level.advisory_ids)
        levels.append(entry)
    module = {
        "mrsigner": MODULE_MRSIGNER,
        "attributes": MODULE_ATTRIBUTES,
        "attributesMask": MODULE_ATTRIBUTES_MASK,
    }
    ident = platform.identity
    return _compact(
        {
            "id": "TDX",
            "version": 3,
            "issueDate": issue,
            "nextUpdate": next_update,
            "fmspc": ident.fmspc.hex().upper(),
            "pceId": ident.pce_id.to_bytes(2, "big").hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": ev.number,
            "tdxModule": module,
            "tdxModuleIdentities": [
                {
                    "id": f"TDX_{MODULE_MAJOR:02X}",
                    **module,
                    "tcbLevels": [_level_entry(lv) for lv in MODULE_LEVELS],
                }
            ],
            "tcbLevels": levels,
        }
    )


def td_qe_identity_json(now: dt.datetime, published: TcbEvaluation | None = None) -> bytes:
    """The exact ``enclaveIdentity`` JSON text of the simulated TDQE (v2, id "TD_QE"), for the TCB
    evaluation ``published`` (default: the standard one; the TDQE levels are the same in each)."""
    ev = published or _standard()
    issue, next_update = _window(now)
    return _compact(
        {
            "id": "TD_QE",
            "version": 2,
            "issueDate": issue,
            "nextUpdate": next_update,
            "tcbEvaluationDataNumber": ev.number,
            "miscselect": QE_MISCSELECT,
            "miscselectMask": QE_MISCSELECT_MASK,
            "attributes": QE_ATTRIBUTES,
            "attributesMask": QE_ATTRIBUTES_MASK,
            "mrsigner": TDQE_MRSIGNER.hex().upper(),
            "isvprodid": TDQE_PROD_ID,
            "tcbLevels": [_level_entry(lv) for lv in TDQE_LEVELS],
        }
    )


def tdx_tcb_info_response(platform: Platform, now: dt.datetime) -> tuple[bytes, bytes]:
    """PCS ``GET /tdx/certification/v4/tcb?fmspc=`` answer: (body, TCB-Info-Issuer-Chain PEM)."""
    body = tdx_tcb_info_json(platform, now)
    return _response("tcbInfo", body, sign_json(platform, body)), platform.tcb_signing_chain_pem()


def td_qe_identity_response(platform: Platform, now: dt.datetime) -> tuple[bytes, bytes]:
    """PCS ``GET /tdx/certification/v4/qe/identity`` answer: (body, SGX-Enclave-Identity-Issuer-Chain PEM)."""
    body = td_qe_identity_json(now)
    return _response("enclaveIdentity", body, sign_json(platform, body)), platform.tcb_signing_chain_pem()


def tdx_quote_collateral(
    platform: Platform, now: dt.datetime, published: TcbEvaluation | None = None
) -> dict[str, str]:
    """Everything a verifier needs for the platform's TDX quotes, as dcap-qvl's ``QuoteCollateralV3``
    (TCB Info and TD QE Identity of the evaluation ``published``, default the standard one)."""
    tcb = tdx_tcb_info_json(platform, now, published)
    qe = td_qe_identity_json(now, published)
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


def tdx_quote_collateral_json(platform: Platform, now: dt.datetime) -> str:
    """:func:`tdx_quote_collateral` as JSON text (what ``sim collateral --tee tdx`` writes)."""
    return json.dumps(tdx_quote_collateral(platform, now), indent=1) + "\n"


__all__ = [
    "MODULE_ATTRIBUTES",
    "MODULE_ATTRIBUTES_MASK",
    "MODULE_MRSIGNER",
    "td_qe_identity_json",
    "td_qe_identity_response",
    "tdx_quote_collateral",
    "tdx_quote_collateral_json",
    "tdx_tcb_info_json",
    "tdx_tcb_info_response",
]
