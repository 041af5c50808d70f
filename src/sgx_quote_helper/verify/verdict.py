"""The result of verifying a quote: TCB statuses, advisories, identity, and the policy decision.

A :class:`Verdict` exists only for an *authentic* quote (every check of steps 1-13 passed); a
failed check raises ``VerificationError`` instead. Whether the relying party accepts it is the
policy's call (:attr:`Verdict.accepted`, :attr:`Verdict.rejection`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..abi.report import ReportBody
from ..abi.tdreport import TdReport10, TdReport15
from ..errors import VerificationError
from .status import TcbStatus
from .steps import Step

Body = ReportBody | TdReport10 | TdReport15


@dataclass(frozen=True)
class Rejection:
    """Why a verdict is not accepted: a step label (``"policy"`` for the policy) and a reason."""

    step: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    """An authentic quote's verification result (Intel QVL's status semantics)."""

    status: TcbStatus
    platform_status: TcbStatus
    qe_status: TcbStatus
    advisory_ids: tuple[str, ...]
    qe_advisory_ids: tuple[str, ...]
    tcb_date: datetime
    qe_tcb_date: datetime
    tcb_evaluation_data_number: int
    earliest_expiration: datetime
    fmspc: bytes
    pce_id: bytes
    ca_type: str
    sgx_type: int
    tee: str
    quote_version: int
    body: Body
    crls_checked: bool = True
    warnings: tuple[str, ...] = ()
    rejection: Rejection | None = None
    tdx_module_status: TcbStatus | None = None

    @property
    def accepted(self) -> bool:
        """True when the policy accepted the verdict."""
        return self.rejection is None

    @property
    def debug(self) -> bool:
        """The enclave / TD runs in debug mode."""
        return self.body.debug

    def with_policy(self, rejection: Rejection | None, warnings: tuple[str, ...]) -> Verdict:
        """A copy carrying a policy decision."""
        return replace(self, rejection=rejection, warnings=warnings)

    def require_accepted(self) -> Verdict:
        """Return self, or raise VerificationError(step=POLICY) when the policy rejected it."""
        if self.rejection is not None:
            raise VerificationError(Step.POLICY, self.rejection.reason, self.rejection.detail)
        return self

    def identity(self) -> dict[str, Any]:
        """The enclave or TD identity fields (hex strings)."""
        return body_identity(self.body)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the keys the CLI's ``--json`` promises, plus the identity fields."""
        return {
            "status": self.status.value,
            "platform_status": self.platform_status.value,
            "qe_status": self.qe_status.value,
            "advisory_ids": list(self.advisory_ids),
            "qe_advisory_ids": list(self.qe_advisory_ids),
            "accepted": self.accepted,
            "error": self.rejection.to_dict() if self.rejection else None,
            "warnings": list(self.warnings),
            "tee": self.tee,
            "quote_version": self.quote_version,
            "fmspc": self.fmspc.hex().upper(),
            "pce_id": self.pce_id.hex(),
            "ca_type": self.ca_type,
            "sgx_type": self.sgx_type,
            "tcb_date": self.tcb_date.isoformat(),
            "qe_tcb_date": self.qe_tcb_date.isoformat(),
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "earliest_expiration": self.earliest_expiration.isoformat(),
            "crls_checked": self.crls_checked,
            "tdx_module_status": self.tdx_module_status.value if self.tdx_module_status else None,
            **self.identity(),
        }


def body_identity(b: Body) -> dict[str, Any]:
    """The enclave (SGX report body) or TD (TD report) identity fields, hex-encoded."""
    if isinstance(b, ReportBody):
        return {
            "mr_enclave": b.mr_enclave.hex(),
            "mr_signer": b.mr_signer.hex(),
            "isv_prod_id": b.isv_prod_id,
            "isv_svn": b.isv_svn,
            "attributes": b.attributes.to_bytes().hex(),
            "debug": b.debug,
            "report_data": b.report_data.hex(),
        }
    out: dict[str, Any] = {
        "mr_td": b.mr_td.hex(),
        "mr_seam": b.mr_seam.hex(),
        "mr_signer_seam": b.mr_signer_seam.hex(),
        "td_attributes": b.td_attributes.hex(),
        "xfam": b.xfam.hex(),
        "mr_config_id": b.mr_config_id.hex(),
        "mr_owner": b.mr_owner.hex(),
        "mr_owner_config": b.mr_owner_config.hex(),
        "rtmr": [b.rtmr0.hex(), b.rtmr1.hex(), b.rtmr2.hex(), b.rtmr3.hex()],
        "tee_tcb_svn": b.tee_tcb_svn.hex(),
        "debug": b.debug,
        "report_data": b.report_data.hex(),
    }
    if isinstance(b, TdReport15):
        out["mr_service_td"] = b.mr_service_td.hex()
        out["tee_tcb_svn2"] = b.tee_tcb_svn2.hex()
    return out


def failure_dict(error: VerificationError, body: Body | None = None) -> dict[str, Any]:
    """The JSON object for a failed authenticity check (same keys as :meth:`Verdict.to_dict`),
    with the (unauthenticated) identity fields of the quote's body when it parsed."""
    try:
        label = Step(error.step).label
    except ValueError:
        label = str(error.step)
    return {
        "status": None,
        "platform_status": None,
        "qe_status": None,
        "advisory_ids": [],
        "qe_advisory_ids": [],
        "accepted": False,
        "error": {"step": label, "reason": error.reason},
        **(body_identity(body) if body is not None else {}),
    }


__all__ = ["Body", "Rejection", "Verdict", "body_identity", "failure_dict"]
