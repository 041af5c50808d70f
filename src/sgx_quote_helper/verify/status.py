"""TCB statuses (the TCB Info names) and how the QE and platform statuses converge.

Two merge rules exist (``shared/specs/dcap-quote.md`` §4.2):

- Intel QVL's ``convergeTcbStatusWithQeTcbStatus`` (what :func:`converge` implements, our verdict):
  a QE that is out of date turns ConfigurationNeeded into OutOfDateConfigurationNeeded, a revoked
  QE revokes everything, and an up-to-date QE leaves the platform status as it is.
- dcap-qvl's "take the more severe" order (:func:`merge_worst`), kept for comparison and tests.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import CollateralError


class TcbStatus(StrEnum):
    """A ``tcbStatus`` value of TCB Info / QE Identity levels."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    # QVL results for TD report 1.5 quotes (never a tcbStatus in TCB Info): the platform and TDX
    # module were updated in place; relaunching the TD brings it up to date.
    TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
    TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"

    @classmethod
    def named(cls, text: str) -> TcbStatus | None:
        """The status a TCB Info / QE Identity ``tcbStatus`` names, or ``None``."""
        return _BY_NAME.get(text)

    @classmethod
    def parse(cls, text: object, what: str = "tcbStatus") -> TcbStatus:
        """The status named ``text``; CollateralError for anything else."""
        status = _BY_NAME.get(text) if isinstance(text, str) else None
        if status is None:
            raise CollateralError(f"{what}: unknown TCB status {text!r}")
        return status


S = TcbStatus
_RELAUNCH = (TcbStatus.TD_RELAUNCH_ADVISED, TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED)
_BY_NAME: dict[str, TcbStatus] = {s.value: s for s in TcbStatus if s not in _RELAUNCH}

#: dcap-qvl's severity order (least to most severe; relaunch results sit before OutOfDate)
SEVERITY: tuple[TcbStatus, ...] = (
    S.UP_TO_DATE,
    S.SW_HARDENING_NEEDED,
    S.CONFIGURATION_NEEDED,
    S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
    S.TD_RELAUNCH_ADVISED,
    S.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    S.OUT_OF_DATE,
    S.OUT_OF_DATE_CONFIGURATION_NEEDED,
    S.REVOKED,
)


def qe_level_result(level_status: TcbStatus) -> TcbStatus:
    """Reduce a QE Identity level status to what QVL's EnclaveReportVerifier reports.

    UpToDate stays UpToDate, Revoked stays Revoked, anything else is "ISVSVN out of date".
    """
    if level_status in (S.UP_TO_DATE, S.REVOKED):
        return level_status
    return S.OUT_OF_DATE


def converge(qe: TcbStatus, platform: TcbStatus) -> TcbStatus:
    """Intel QVL's convergence of the QE status with the platform TCB level status."""
    qe = qe_level_result(qe)
    if qe is S.REVOKED:
        return S.REVOKED
    if qe is S.OUT_OF_DATE:
        if platform in (S.UP_TO_DATE, S.SW_HARDENING_NEEDED):
            return S.OUT_OF_DATE
        if platform in (S.CONFIGURATION_NEEDED, S.CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return S.OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


def merge_worst(a: TcbStatus, b: TcbStatus) -> TcbStatus:
    """dcap-qvl's merge: the more severe of the two by :data:`SEVERITY`."""
    return a if SEVERITY.index(a) >= SEVERITY.index(b) else b


__all__ = ["SEVERITY", "TcbStatus", "converge", "merge_worst", "qe_level_result"]
