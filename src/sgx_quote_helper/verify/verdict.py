"""The result of verifying a quote: TCB statuses, advisories, identity, and the policy decision.

A :class:`Verdict` exists only for an *authentic* quote (every check of steps 1-13 passed); a
failed check raises ``VerificationError`` instead. Whether the relying party accepts it is the
policy's call: :attr:`Verdict.violations` lists every rule broken (empty means accepted);
:attr:`Verdict.rejection` is the first of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from ..abi.report import ReportBody
from ..abi.tdreport import TdReport10, TdReport15
from ..errors import VerificationError
from .status import TcbStatus
from .step import Step

Body = ReportBody | TdReport10 | TdReport15


@dataclass(frozen=True)
class Rejection:
    """One reason a verdict is not accepted.

    ``step``: the label of the check it belongs to (``"policy"``, ``"tcb_level"``, ``"tcb_info"``,
    ``"qe_identity"``); ``reason``: short machine-friendly reason; ``constraint``: the policy field
    that was not met (``"min_isv_svn"``...); ``detail``: a human explanation.
    """

    step: str
    reason: str
    detail: str = ""
    constraint: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"step": self.step, "reason": self.reason}
        if self.constraint:
            out["constraint"] = self.constraint
        if self.detail:
            out["detail"] = self.detail
        return out


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
    tcb_info_evaluation_data_number: int
    qe_identity_evaluation_data_number: int
    tcb_info_issue_date: datetime
    qe_identity_issue_date: datetime
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
    violations: tuple[Rejection, ...] = ()
    tdx_module_status: TcbStatus | None = None

    @property
    def accepted(self) -> bool:
        """True when the policy found no violation."""
        return not self.violations

    @property
    def rejection(self) -> Rejection | None:
        """The first violation (``None`` when accepted); :attr:`violations` has them all."""
        return self.violations[0] if self.violations else None

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower of the TCB Info's and the QE Identity's numbers (QVL's ``tcb_eval_ref_num``)."""
        return min(self.tcb_info_evaluation_data_number, self.qe_identity_evaluation_data_number)

    @property
    def debug(self) -> bool:
        """The enclave / TD runs in debug mode."""
        return self.body.debug

    def require_accepted(self) -> Verdict:
        """Return self, or raise VerificationError for the first violation (its step, its reason)."""
        r = self.rejection
        if r is not None:
            step = next((s for s in Step if s.label == r.step), Step.POLICY)
            raise VerificationError(step, r.reason, r.detail)
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
            "error": {"step": self.rejection.step, "reason": self.rejection.reason}
            if self.rejection
            else None,
            "violations": [r.to_dict() for r in self.violations],
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
            "tcb_info_evaluation_data_number": self.tcb_info_evaluation_data_number,
            "qe_identity_evaluation_data_number": self.qe_identity_evaluation_data_number,
            "earliest_expiration": self.earliest_expiration.isoformat(),
            "crls_checked": self.crls_checked,
            "tdx_module_status": self.tdx_module_status.value if self.tdx_module_status else None,
            **self.identity(),
        }


_VERDICT_FIELDS = frozenset(f.name for f in fields(Verdict))


def build_verdict(values: dict[str, Any]) -> Verdict:
    """``Verdict(**values)`` for a dict that names every field, without the frozen dataclass's
    per-field ``__init__`` (the verifier builds one per quote); the Verdict takes the dict over.
    Equal to the constructor's result; a missing or unknown field is a TypeError."""
    if values.keys() != _VERDICT_FIELDS:
        raise TypeError(f"Verdict fields missing or unknown: {sorted(_VERDICT_FIELDS ^ values.keys())}")
    verdict = object.__new__(Verdict)
    object.__setattr__(verdict, "__dict__", values)
    return verdict


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
    """The JSON object for a failed authenticity check (the status keys of :meth:`Verdict.to_dict`).

    The quote's body did not authenticate, so its fields are never presented as facts: when it
    parsed they sit under ``"unverified_body"`` (what the quote *claims*, for diagnosis only).
    """
    known = {int(s): s.label for s in Step}
    label = known.get(int(error.step), str(error.step))
    return {
        "status": None,
        "platform_status": None,
        "qe_status": None,
        "advisory_ids": [],
        "qe_advisory_ids": [],
        "accepted": False,
        "error": {"step": label, "reason": error.reason},
        "violations": [
            {"step": label, "reason": error.reason, **({"detail": error.detail} if error.detail else {})}
        ],
        "unverified_body": body_identity(body) if body is not None else None,
    }


__all__ = ["Body", "Rejection", "Verdict", "body_identity", "build_verdict", "failure_dict"]
