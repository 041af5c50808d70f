"""The relying party's policy: which authentic quotes to accept. Data, not code.

Authenticity (``verify.steps``) and acceptance are separate: a policy only reads the facts of an
authentic quote (:class:`Facts`) and returns **every** violation it finds, not the first
(go-tdx-guest's ``validate`` + ``multierr``). Each violation is a
:class:`~sgx_quote_helper.verify.verdict.Rejection` whose ``step`` says which check it belongs to
(``policy`` for identity constraints, ``tcb_level`` for statuses and advisories, ``tcb_info`` /
``qe_identity`` for collateral baselines and age) and whose ``constraint`` names the policy field.

Nothing fails open: a constraint that cannot be evaluated on the quote's TEE (``mr_enclave``,
``mr_signer``, ``isv_prod_id`` or ``min_isv_svn`` on a TDX quote; ``mr_td`` on an SGX quote)
is a violation with reason ``<constraint>-not-applicable``, never silently dropped.

The default policy rejects debug enclaves and debug TDs, TDs with a non-zero MRSERVICETD, and the
statuses OutOfDate, OutOfDateConfigurationNeeded and Revoked (and QVL's TDRelaunchAdvised
results, which are an out-of-date TD that a relaunch would fix); it accepts the rest, with a
warning for all but UpToDate. Policies load from JSON (:meth:`Policy.from_json`), for example::

    {"mr_enclave": "68823bc6...", "mr_signer": "9affcfae...", "isv_prod_id": 1, "min_isv_svn": 2,
     "report_data_prefix": "48656c6c6f", "allowed_statuses": ["UpToDate", "SWHardeningNeeded"],
     "allowed_advisory_ids": ["INTEL-SA-00615"], "allow_debug": false, "max_collateral_age_s": 2592000,
     "min_tcb_evaluation_data_number": 17}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from ..abi.report import ReportBody
from ..abi.tdreport import TdReport15
from ..errors import ConfigError
from .status import TcbStatus
from .step import Step
from .verdict import Body, Rejection

S = TcbStatus


class Facts(Protocol):
    """What a policy reads about an authentic quote (a Verdict provides all of it)."""

    @property
    def body(self) -> Body: ...
    @property
    def status(self) -> TcbStatus: ...
    @property
    def advisory_ids(self) -> tuple[str, ...]: ...
    @property
    def qe_advisory_ids(self) -> tuple[str, ...]: ...
    @property
    def tcb_info_evaluation_data_number(self) -> int: ...
    @property
    def qe_identity_evaluation_data_number(self) -> int: ...
    @property
    def tcb_info_issue_date(self) -> datetime: ...
    @property
    def qe_identity_issue_date(self) -> datetime: ...


DEFAULT_ALLOWED = frozenset(
    {S.UP_TO_DATE, S.SW_HARDENING_NEEDED, S.CONFIGURATION_NEEDED, S.CONFIGURATION_AND_SW_HARDENING_NEEDED}
)

#: constraints that only an SGX enclave's report body can satisfy
SGX_ONLY = ("mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn")
#: constraints that only a TD report can satisfy
TDX_ONLY = ("mr_td",)

_POLICY = Step.POLICY.label
_TCB_LEVEL = Step.TCB_LEVEL.label
_TCB_INFO = Step.TCB_INFO.label
_QE_IDENTITY = Step.QE_IDENTITY.label


def _kebab(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class Policy:
    """What to accept. ``None`` means "no constraint"; the weakening switches default to off."""

    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    mr_td: bytes | None = None
    report_data_prefix: bytes | None = None
    allowed_statuses: frozenset[TcbStatus] = DEFAULT_ALLOWED
    allowed_advisory_ids: frozenset[str] | None = None
    max_collateral_age_s: int | None = None
    min_tcb_evaluation_data_number: int | None = None
    allow_debug: bool = False
    allow_service_td: bool = False

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Policy:
        """Build a policy from its JSON object; ConfigError for unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ConfigError(f"policy: unknown keys {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for key, size in (("mr_enclave", 32), ("mr_signer", 32), ("mr_td", 48)):
            if obj.get(key) is not None:
                kw[key] = _hex(obj[key], key, size)
        if obj.get("report_data_prefix") is not None:
            kw["report_data_prefix"] = _hex(obj["report_data_prefix"], "report_data_prefix", None)
        for key in ("isv_prod_id", "min_isv_svn", "max_collateral_age_s", "min_tcb_evaluation_data_number"):
            if obj.get(key) is not None:
                if not isinstance(obj[key], int) or isinstance(obj[key], bool) or obj[key] < 0:
                    raise ConfigError(f"policy: {key} must be a non-negative integer")
                kw[key] = obj[key]
        if "allowed_statuses" in obj:
            kw["allowed_statuses"] = _statuses(obj["allowed_statuses"])
        if obj.get("allowed_advisory_ids") is not None:
            ids = obj["allowed_advisory_ids"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ConfigError("policy: allowed_advisory_ids must be a list of strings")
            kw["allowed_advisory_ids"] = frozenset(ids)
        for key in ("allow_debug", "allow_service_td"):
            if key in obj:
                if not isinstance(obj[key], bool):
                    raise ConfigError(f"policy: {key} must be true or false")
                kw[key] = obj[key]
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        """Parse a policy file's JSON text."""
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"policy: invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ConfigError("policy: expected a JSON object")
        return cls.from_dict(obj)

    def decide(self, v: Facts, now: datetime) -> tuple[tuple[Rejection, ...], tuple[str, ...]]:
        """Every violation (empty: accepted) and the warnings for these facts."""
        warnings: tuple[str, ...] = ()
        if v.status is not S.UP_TO_DATE:
            warnings = (f"TCB status {v.status.value}: {', '.join(v.advisory_ids) or 'no advisories'}",)
        return tuple(self.violations(v, now)), warnings

    def violations(self, v: Facts, now: datetime) -> list[Rejection]:
        """Every rule these facts break, in a fixed order (every rule is evaluated every time)."""
        out: list[Rejection] = []
        b = v.body
        if b.debug and not self.allow_debug:
            out.append(
                Rejection(_POLICY, "debug", "debug enclaves/TDs are rejected by default", "allow_debug")
            )
        if isinstance(b, TdReport15) and any(b.mr_service_td) and not self.allow_service_td:
            out.append(Rejection(_POLICY, "service-td", "MRSERVICETD is not zero", "allow_service_td"))
        if v.status not in self.allowed_statuses:
            out.append(
                Rejection(
                    _TCB_LEVEL, "tcb-status", f"status {v.status.value} not allowed", "allowed_statuses"
                )
            )
        if self.allowed_advisory_ids is not None:
            extra = (set(v.advisory_ids) | set(v.qe_advisory_ids)) - self.allowed_advisory_ids
            if extra:
                out.append(
                    Rejection(_TCB_LEVEL, "advisory", ", ".join(sorted(extra)), "allowed_advisory_ids")
                )
        if self.min_tcb_evaluation_data_number is not None or self.max_collateral_age_s is not None:
            self._collateral(v, now, out)
        if self.report_data_prefix is not None and not b.report_data.startswith(self.report_data_prefix):
            out.append(
                Rejection(
                    _POLICY, "report-data", "REPORTDATA does not start with the prefix", "report_data_prefix"
                )
            )
        self._identity(b, out)
        return out

    def _collateral(self, v: Facts, now: datetime, out: list[Rejection]) -> None:
        docs = (
            (_TCB_INFO, "tcb-info", v.tcb_info_evaluation_data_number, v.tcb_info_issue_date),
            (_QE_IDENTITY, "qe-identity", v.qe_identity_evaluation_data_number, v.qe_identity_issue_date),
        )
        want, max_age = self.min_tcb_evaluation_data_number, self.max_collateral_age_s
        for step, what, number, issued in docs:
            if want is not None and number < want:
                out.append(
                    Rejection(
                        step,
                        f"{what}-evaluation-data-number-too-low",
                        f"tcbEvaluationDataNumber {number} < required {want}",
                        "min_tcb_evaluation_data_number",
                    )
                )
            if max_age is not None:
                age = (now - issued).total_seconds()
                if age > max_age:
                    out.append(
                        Rejection(
                            step,
                            "collateral-too-old",
                            f"{what} issued {int(age)} s ago (> {max_age} s)",
                            "max_collateral_age_s",
                        )
                    )

    def _identity(self, b: Body, out: list[Rejection]) -> None:
        sgx = isinstance(b, ReportBody)
        for name in TDX_ONLY if sgx else SGX_ONLY:
            if getattr(self, name) is not None:
                tee, other = ("an SGX enclave", "a TD") if sgx else ("a TDX TD", "an SGX enclave")
                out.append(
                    Rejection(
                        _POLICY,
                        f"{_kebab(name)}-not-applicable",
                        f"{name} constrains {other}; the quote is {tee}",
                        name,
                    )
                )
        if isinstance(b, ReportBody):
            for name, have in (("mr_enclave", b.mr_enclave), ("mr_signer", b.mr_signer)):
                want = getattr(self, name)
                if want is not None and want != have:
                    out.append(Rejection(_POLICY, _kebab(name), f"{have.hex()} != {want.hex()}", name))
            if self.isv_prod_id is not None and b.isv_prod_id != self.isv_prod_id:
                out.append(
                    Rejection(_POLICY, "isv-prod-id", f"{b.isv_prod_id} != {self.isv_prod_id}", "isv_prod_id")
                )
            if self.min_isv_svn is not None and b.isv_svn < self.min_isv_svn:
                out.append(Rejection(_POLICY, "isv-svn", f"{b.isv_svn} < {self.min_isv_svn}", "min_isv_svn"))
        elif self.mr_td is not None and b.mr_td != self.mr_td:
            out.append(Rejection(_POLICY, "mr-td", f"{b.mr_td.hex()} != {self.mr_td.hex()}", "mr_td"))


def _statuses(value: Any) -> frozenset[TcbStatus]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ConfigError("policy: allowed_statuses must be a list of status names")
    known = {s.value for s in TcbStatus}
    bad = [s for s in value if s not in known]
    if bad:
        raise ConfigError(f"policy: unknown TCB statuses {bad} (known: {sorted(known)})")
    return frozenset(TcbStatus(s) for s in value)


def _hex(value: Any, key: str, size: int | None) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"policy: {key} must be a hex string")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"policy: {key} is not hex") from None
    if size is not None and len(raw) != size:
        raise ConfigError(f"policy: {key} must be {size} bytes")
    return raw


DEFAULT_POLICY = Policy()

__all__ = ["DEFAULT_ALLOWED", "DEFAULT_POLICY", "SGX_ONLY", "TDX_ONLY", "Facts", "Policy"]
