"""A verified quote (its verdict, collateral and the request) -> the claims of an MAA token.

SGX claims as MAA issues them (``articles/attestation/attestation-token-examples.md``):
``x-ms-attestation-type: "sgx"``, ``x-ms-ver: "1.0"``, ``x-ms-sgx-mrenclave`` / ``-mrsigner``
(lower-case hex), ``x-ms-sgx-product-id`` / ``-svn`` (integers), ``x-ms-sgx-is-debuggable``
(boolean), ``x-ms-sgx-ehd`` (base64url of runtimeData.data), ``x-ms-sgx-collateral`` (SHA-256 hex
of each collateral document), the KSS claims when the enclave has KSS, ``x-ms-runtime`` /
``x-ms-inittime`` for JSON data. TDX claims follow MAA's TDX EAT profile
(``trust-domain-extensions-eat-profile.md``): ``tdx_mrtd``, ``tdx_rtmr0..3``, ``tdx_td_attributes*``,
``attester_tcb_status``... Ours, on both: ``x-sgxqh-tcb-status`` (and platform / QE statuses),
``x-sgxqh-advisory-ids``, ``x-sgxqh-tcb-evaluation-data-number`` (the lower of the TCB Info's and
the QE Identity's, as QVL's ``tcb_eval_ref_num``; both also on their own), ``x-sgxqh-tcb-date``,
``x-sgxqh-fmspc``.

:func:`policy_claims` turns them into the incoming claim set a policy sees, with the legacy
``$``-names of policy version 1.0 (``$is-debuggable``, ``$sgx-mrsigner``, ...).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection
from typing import Any

from ..abi.report import FLAG_KSS, ReportBody
from ..abi.tdreport import TdReport10, TdReport15
from ..errors import AttestationError
from ..verify.collateral import Collateral
from ..verify.verdict import Verdict
from .policy import Claim, b64url
from .request import AttestRequest

EAT_PROFILE_TDX = "https://aka.ms/maa-eat-profile-tdxvm"
#: TD_ATTRIBUTES bits (Intel TDX DCAP Quoting Library API, A.3.4)
TD_DEBUG, TD_SEPT_VE_DISABLE, TD_PKS, TD_KL, TD_PERFMON = 0, 28, 30, 31, 63


def _sha256_hex(data: bytes | str | None) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else (data or b"")
    return hashlib.sha256(raw).hexdigest()


@functools.lru_cache(maxsize=256)
def _document_hashes(c: Collateral) -> tuple[dict[str, str], dict[str, str]]:
    # the same collateral serves many quotes (Collateral is frozen and hashable: cache its digests),
    # in x-ms-sgx-collateral's (sorted) order: those before "quotehash", and those after it
    docs = {
        "qeidcertshash": _sha256_hex(c.qe_identity_issuer_chain),
        "qeidcrlhash": _sha256_hex(c.root_ca_crl),
        "qeidhash": _sha256_hex(c.qe_identity),
        "tcbinfocertshash": _sha256_hex(c.tcb_info_issuer_chain),
        "tcbinfocrlhash": _sha256_hex(c.root_ca_crl),
        "tcbinfohash": _sha256_hex(c.tcb_info),
    }
    return (
        {k: v for k, v in sorted(docs.items()) if k < "quotehash"},
        {k: v for k, v in sorted(docs.items()) if k > "quotehash"},
    )


def collateral_hashes(quote: bytes, c: Collateral) -> dict[str, str]:
    """``x-ms-sgx-collateral``: SHA-256 (hex) of the quote and each collateral document used."""
    before, after = _document_hashes(c)
    return {**before, "quotehash": hashlib.sha256(quote).hexdigest(), **after}


def check_bound_data(req: AttestRequest, body: ReportBody | TdReport10 | TdReport15) -> None:
    """MAA's checks: ``report_data[0:32] == SHA-256(runtimeData.data)``, and (KSS / TDX) the first
    32 bytes of CONFIGID / MRCONFIGID equal SHA-256(initTimeData.data)."""
    if req.runtime_data is not None:
        want = hashlib.sha256(req.runtime_data.data).digest()
        if body.report_data[:32] != want:
            raise AttestationError(
                "InvalidParameter",
                "runtimeData does not match the quote: report_data[0:32] is not SHA-256(runtimeData.data)",
            )
    if req.init_time_data is not None:
        config = body.config_id if isinstance(body, ReportBody) else body.mr_config_id
        if config[:32] != hashlib.sha256(req.init_time_data.data).digest():
            raise AttestationError(
                "InvalidParameter",
                "initTimeData does not match the quote: CONFIGID[0:32] is not SHA-256(initTimeData.data)",
            )


def _ours(v: Verdict) -> dict[str, Any]:
    advisories = sorted(set(v.advisory_ids) | set(v.qe_advisory_ids))
    return {
        "x-sgxqh-tcb-status": v.status.value,
        "x-sgxqh-platform-tcb-status": v.platform_status.value,
        "x-sgxqh-qe-tcb-status": v.qe_status.value,
        "x-sgxqh-advisory-ids": advisories,
        "x-sgxqh-tcb-evaluation-data-number": v.tcb_evaluation_data_number,
        "x-sgxqh-tcb-info-evaluation-data-number": v.tcb_info_evaluation_data_number,
        "x-sgxqh-qe-identity-evaluation-data-number": v.qe_identity_evaluation_data_number,
        "x-sgxqh-tcb-date": v.tcb_date.isoformat(),
        "x-sgxqh-fmspc": v.fmspc.hex().upper(),
    }


def _data_claims(req: AttestRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.runtime_data is not None and req.runtime_data.data_type == "JSON":
        out["x-ms-runtime"] = req.runtime_data.json("runtimeData")
    if req.init_time_data is not None and req.init_time_data.data_type == "JSON":
        out["x-ms-inittime"] = req.init_time_data.json("initTimeData")
    return out


def sgx_claims(req: AttestRequest, v: Verdict, c: Collateral) -> dict[str, Any]:
    """The service's claims for an SGX enclave (SgxEnclave and OpenEnclave routes)."""
    b = v.body
    if not isinstance(b, ReportBody):
        raise AttestationError(
            "InvalidParameter", f"/attest/{req.route} takes SGX quotes; send TDX quotes to /attest/TdxVm"
        )
    out: dict[str, Any] = {
        "x-ms-attestation-type": "sgx",
        "x-ms-ver": "1.0",
        "x-ms-sgx-is-debuggable": b.debug,
        "x-ms-sgx-mrenclave": b.mr_enclave.hex(),
        "x-ms-sgx-mrsigner": b.mr_signer.hex(),
        "x-ms-sgx-product-id": b.isv_prod_id,
        "x-ms-sgx-svn": b.isv_svn,
        "x-ms-sgx-ehd": b64url(req.runtime_data.data if req.runtime_data else b""),
        "x-ms-sgx-collateral": collateral_hashes(req.quote, c),
    }
    if b.attributes.flags & FLAG_KSS:
        out |= {
            "x-ms-sgx-config-id": b.config_id.hex(),
            "x-ms-sgx-config-svn": b.config_svn,
            "x-ms-sgx-isv-extended-product-id": b.isv_ext_prod_id.hex(),
            "x-ms-sgx-isv-family-id": b.isv_family_id.hex(),
        }
    return out | _data_claims(req) | _ours(v)


def tdx_claims(req: AttestRequest, v: Verdict, c: Collateral) -> dict[str, Any]:
    """The service's claims for a TD (MAA's TDX EAT profile)."""
    b = v.body
    if not isinstance(b, (TdReport10, TdReport15)):
        raise AttestationError(
            "InvalidParameter", "/attest/TdxVm takes TDX quotes; send SGX quotes to /attest/SgxEnclave"
        )
    attrs = int.from_bytes(b.td_attributes, "little")
    out: dict[str, Any] = {
        "x-ms-attestation-type": "tdxvm",
        "x-ms-ver": "1.0",
        "eat_profile": EAT_PROFILE_TDX,
        "dbgstat": "enabled" if attrs >> TD_DEBUG & 1 else "disabled",
        "intuse": "generic",
        "attester_tcb_status": v.status.value,
        "tdx_mrsignerseam": b.mr_signer_seam.hex(),
        "tdx_mrseam": b.mr_seam.hex(),
        "tdx_mrtd": b.mr_td.hex(),
        "tdx_rtmr0": b.rtmr0.hex(),
        "tdx_rtmr1": b.rtmr1.hex(),
        "tdx_rtmr2": b.rtmr2.hex(),
        "tdx_rtmr3": b.rtmr3.hex(),
        "tdx_mrconfigid": b.mr_config_id.hex(),
        "tdx_mrowner": b.mr_owner.hex(),
        "tdx_mrownerconfig": b.mr_owner_config.hex(),
        "tdx_report_data": b.report_data.hex(),
        "tdx_seam_attributes": b.seam_attributes.hex(),
        "tdx_tee_tcb_svn": b.tee_tcb_svn.hex(),
        "tdx_xfam": b.xfam.hex(),
        "tdx_seamsvn": int.from_bytes(b.tee_tcb_svn[0:2], "little"),
        "tdx_td_attributes": b.td_attributes.hex(),
        "tdx_td_attributes_debug": bool(attrs >> TD_DEBUG & 1),
        "tdx_td_attributes_key_locker": bool(attrs >> TD_KL & 1),
        "tdx_td_attributes_perfmon": bool(attrs >> TD_PERFMON & 1),
        "tdx_td_attributes_protection_keys": bool(attrs >> TD_PKS & 1),
        "tdx_td_attributes_septve_disable": bool(attrs >> TD_SEPT_VE_DISABLE & 1),
        "x-ms-sgx-collateral": collateral_hashes(req.quote, c),
    }
    if isinstance(b, TdReport15):
        out["tdx_mrservicetd"] = b.mr_service_td.hex()
    return out | _data_claims(req) | _ours(v)


#: policy version 1.0's names for SGX claims
_LEGACY = {
    "x-ms-sgx-is-debuggable": "$is-debuggable",
    "x-ms-sgx-mrsigner": "$sgx-mrsigner",
    "x-ms-sgx-mrenclave": "$sgx-mrenclave",
    "x-ms-sgx-product-id": "$product-id",
    "x-ms-sgx-svn": "$svn",
    "x-ms-attestation-type": "$tee",
}


def policy_claims(claims: dict[str, Any], types: Collection[str] | None = None) -> list[Claim]:
    """The incoming claim set a policy evaluates: every scalar claim, one claim per list element,
    and the legacy ``$`` names; objects (collateral hashes, runtime JSON) are not claims.

    ``types`` (:attr:`Policy.claim_types <.policy.Policy.claim_types>`): only claims of these
    types, the only ones the policy can match (same decision, fewer claims to make)."""
    out: list[Claim] = []
    for typ, value in claims.items():
        legacy = _LEGACY.get(typ)
        if types is not None and typ not in types and (legacy is None or legacy not in types):
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, (str, int, bool)):
                out.append(Claim(typ, item))
                if legacy is not None:
                    out.append(Claim(legacy, item))
    return out


__all__ = [
    "EAT_PROFILE_TDX",
    "check_bound_data",
    "collateral_hashes",
    "policy_claims",
    "sgx_claims",
    "tdx_claims",
]
