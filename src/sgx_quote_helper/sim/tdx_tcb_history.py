"""The simulated TDX TCB history: TDX TCB levels, TDX module identities and TDQE levels.

Built on the SGX history of :mod:`~sgx_quote_helper.sim.tcb_history` (a TDX platform's TCB is its
SGX TCB plus the TDX components), so one simulated TCB recovery moves both. What the levels mean
(``shared/specs/dcap-quote.md`` §4; Intel's TCB Info v3 for TDX, as in
``shared/testdata/real/tdx/*/collateral-*.json``):

- TEE_TCB_SVN byte 0 is the TDX module's SVN, byte 1 its major version, byte 2 the TDX late
  microcode SVN. When byte 1 is non-zero, verifiers skip bytes 0-1 when matching a TCB level and
  judge the module by the ``tdxModuleIdentities`` entry ``TDX_<byte 1 as two hex digits>``.
- Every SGX level appears with the current TDX components; below them one floor level with all-zero
  TDX components (OutOfDate), so a platform whose TEE_TCB_SVN is all zero is OutOfDate, never
  "not supported".
- The simulated module is major version 1 (``TDX_01``): module SVN 4 is UpToDate, 2 OutOfDate.
- Each published TCB evaluation of the SGX history (``tcb_history.EVALUATIONS``: 18 early, 17
  standard, 16) has its TDX levels, made by the rule above from that evaluation's SGX levels
  (:func:`tdx_tcb_levels`): the early recovery demotes today's TDX platforms with today's SGX
  platforms. The simulated recoveries touch neither the TDX module nor the TDQE, so their levels are
  the same in every evaluation (as Intel's TD_QE identity often is across TCB recoveries).

Pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tcb_history import EVALUATIONS, QeLevel, TcbEvaluation, TcbLevel


@dataclass(frozen=True, slots=True)
class TdxTcbLevel:
    """One TDX TCB level: an SGX level plus 16 TDX TCB component SVNs."""

    sgx: TcbLevel
    tdx_components: tuple[int, ...]
    status: str
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleLevel:
    """One level of a TDX module identity (keyed by the module SVN, TEE_TCB_SVN byte 0)."""

    isvsvn: int
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...] = ()


def _c(*head: int) -> tuple[int, ...]:
    return head + (0,) * (16 - len(head))


#: the simulated TDX module's major version (TEE_TCB_SVN byte 1) and current SVN (byte 0)
MODULE_MAJOR = 1
CURRENT_MODULE_SVN = 4
#: the current TDX late microcode SVN (TEE_TCB_SVN byte 2)
CURRENT_TDX_MICROCODE_SVN = 2
#: TEE_TCB_SVN of an up-to-date simulated platform
CURRENT_TEE_TCB_SVN = bytes(_c(CURRENT_MODULE_SVN, MODULE_MAJOR, CURRENT_TDX_MICROCODE_SVN))
#: the tdxtcbcomponents an up-to-date platform meets
CURRENT_TDX_COMPONENTS = _c(CURRENT_MODULE_SVN, MODULE_MAJOR, CURRENT_TDX_MICROCODE_SVN)

_FLOOR_ADVISORIES = ("INTEL-SA-00837",)


def tdx_tcb_levels(published: TcbEvaluation) -> tuple[TdxTcbLevel, ...]:
    """The TDX TCB levels of one published evaluation, highest first: each of its SGX levels with the
    current TDX components, then the floor (its lowest SGX level, all-zero TDX components, OutOfDate)."""
    floor = published.tcb_levels[-1]
    return (
        *(TdxTcbLevel(lv, CURRENT_TDX_COMPONENTS, lv.status, lv.advisory_ids) for lv in published.tcb_levels),
        TdxTcbLevel(floor, _c(), "OutOfDate", tuple(sorted({*floor.advisory_ids, *_FLOOR_ADVISORIES}))),
    )


#: TDX TCB levels of the standard evaluation (``EVALUATIONS[1]``), highest first
TDX_TCB_LEVELS: tuple[TdxTcbLevel, ...] = tdx_tcb_levels(EVALUATIONS[1])

#: levels of the module identity ``TDX_01`` (highest first)
MODULE_LEVELS: tuple[ModuleLevel, ...] = (
    ModuleLevel(CURRENT_MODULE_SVN, "2024-03-13T00:00:00Z", "UpToDate"),
    ModuleLevel(2, "2023-08-09T00:00:00Z", "OutOfDate", _FLOOR_ADVISORIES),
)

#: the simulated TDQE's ISVSVN (the TD_QE identity's UpToDate level)
CURRENT_TDQE_SVN = 4

TDQE_LEVELS: tuple[QeLevel, ...] = (
    QeLevel(CURRENT_TDQE_SVN, "2024-03-13T00:00:00Z", "UpToDate"),
    QeLevel(2, "2023-02-15T00:00:00Z", "OutOfDate", ("INTEL-SA-00837",)),
)


__all__ = [
    "CURRENT_MODULE_SVN",
    "CURRENT_TDQE_SVN",
    "CURRENT_TDX_COMPONENTS",
    "CURRENT_TDX_MICROCODE_SVN",
    "CURRENT_TEE_TCB_SVN",
    "MODULE_LEVELS",
    "MODULE_MAJOR",
    "TDQE_LEVELS",
    "TDX_TCB_LEVELS",
    "ModuleLevel",
    "TdxTcbLevel",
    "tdx_tcb_levels",
]
