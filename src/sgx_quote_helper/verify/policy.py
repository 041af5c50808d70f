"""The relying party's policy: which authentic quotes to accept. Data, not code.

Authenticity (``verify.steps``) and acceptance are separate: a policy only reads a
:class:`~sgx_quote_helper.verify.verdict.Verdict`. The default policy rejects debug enclaves and
debug TDs, TDs with a non-zero MRSERVICETD, and the statuses OutOfDate,
OutOfDateConfigurationNeeded and Revoked (and QVL's TDRelaunchAdvised results, which are an
out-of-date TD that a relaunch would fix); it accepts the rest, with a warning for all but UpToDate.
Policies load from JSON (:meth:`Policy.from_json`), for example::

    {"mr_enclave": "68823bc6...", "mr_signer": "9affcfae...", "isv_prod_id": 1, "min_isv_svn": 2,
     "report_data_prefix": "48656c6c6f", "allowed_statuses": ["UpToDate", "SWHardeningNeeded"],
     "allowed_advisory_ids": ["INTEL-SA-00615"], "allow_debug": false, "max_collateral_age_s": 2592000}
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
from .verdict import Body, Rejection, Verdict

S = TcbStatus


class Facts(Protocol):
    """What a policy reads from a verdict."""

    @property
    def body(self) -> Body: ...
    @property
    def status(self) -> TcbStatus: ...
    @property
    def advisory_ids(self) -> tuple[str, ...]: ...
    @property
    def qe_advisory_ids(self) -> tuple[str, ...]: ...


DEFAULT_ALLOWED = frozenset(
    {S.UP_TO_DATE, S.SW_HARDENING_NEEDED, S.CONFIGURATION_NEEDED, S.CONFIGURATION_AND_SW_HARDENING_NEEDED}
)


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
        try:
            for key, size in (("mr_enclave", 32), ("mr_signer", 32), ("mr_td", 48)):
                if obj.get(key) is not None:
                    kw[key] = _hex(obj[key], key, size)
            if obj.get("report_data_prefix") is not None:
                kw["report_data_prefix"] = _hex(obj["report_data_prefix"], "report_data_prefix", None)
            for key in ("isv_prod_id", "min_isv_svn", "max_collateral_age_s"):
                if obj.get(key) is not None:
                    if not isinstance(obj[key], int) or isinstance(obj[key], bool) or obj[key] < 0:
                        raise ConfigError(f"policy: {key} must be a non-negative integer")
                    kw[key] = obj[key]
            if "allowed_statuses" in obj:
                kw["allowed_statuses"] = frozenset(TcbStatus(s) for s in obj["allowed_statuses"])
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
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"policy: {exc}") from None
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

    def evaluate(self, verdict: Verdict, now: datetime, collateral_issued: datetime) -> Verdict:
        """Return ``verdict`` with the policy's decision (first failing rule) and warnings."""
        return verdict.with_policy(*self.decide(verdict, now, collateral_issued))

    def decide(
        self, v: Facts, now: datetime, collateral_issued: datetime
    ) -> tuple[Rejection | None, tuple[str, ...]]:
        """The decision (first failing rule, or None) and the warnings for these facts."""
        warnings: tuple[str, ...] = ()
        if v.status is not S.UP_TO_DATE:
            warnings = (f"TCB status {v.status.value}: {', '.join(v.advisory_ids) or 'no advisories'}",)
        return self._first_violation(v, now, collateral_issued), warnings

    def _first_violation(self, v: Facts, now: datetime, issued: datetime) -> Rejection | None:
        b = v.body
        if b.debug and not self.allow_debug:
            return Rejection("policy", "debug", "debug enclaves/TDs are rejected by default")
        if isinstance(b, TdReport15) and any(b.mr_service_td) and not self.allow_service_td:
            return Rejection("policy", "service-td", "MRSERVICETD is not zero")
        if v.status not in self.allowed_statuses:
            return Rejection("policy", "tcb-status", f"status {v.status.value} not allowed")
        if self.allowed_advisory_ids is not None:
            extra = set(v.advisory_ids) | set(v.qe_advisory_ids)
            extra -= self.allowed_advisory_ids
            if extra:
                return Rejection("policy", "advisory", ", ".join(sorted(extra)))
        if (
            self.max_collateral_age_s is not None
            and (now - issued).total_seconds() > self.max_collateral_age_s
        ):
            return Rejection("policy", "collateral-too-old")
        if self.report_data_prefix is not None and not b.report_data.startswith(self.report_data_prefix):
            return Rejection("policy", "report-data")
        if isinstance(b, ReportBody):
            checks = (
                ("mr-enclave", self.mr_enclave, b.mr_enclave),
                ("mr-signer", self.mr_signer, b.mr_signer),
                ("isv-prod-id", self.isv_prod_id, b.isv_prod_id),
            )
            for reason, want, have in checks:
                if want is not None and want != have:
                    return Rejection("policy", reason)
            if self.min_isv_svn is not None and b.isv_svn < self.min_isv_svn:
                return Rejection("policy", "isv-svn")
            if self.mr_td is not None:
                return Rejection("policy", "not-td", "policy names a TD but the quote is an SGX enclave")
        elif self.mr_td is not None and b.mr_td != self.mr_td:
            return Rejection("policy", "mr-td")
        if isinstance(b, ReportBody) is False and (self.mr_enclave or self.mr_signer):
            return Rejection("policy", "not-sgx", "policy names an enclave but the quote is a TD")
        return None


def _hex(value: Any, key: str, size: int | None) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"policy: {key} must be a hex string")
    raw = bytes.fromhex(value.removeprefix("0x"))
    if size is not None and len(raw) != size:
        raise ConfigError(f"policy: {key} must be {size} bytes")
    return raw


DEFAULT_POLICY = Policy()

__all__ = ["DEFAULT_ALLOWED", "DEFAULT_POLICY", "Facts", "Policy"]
