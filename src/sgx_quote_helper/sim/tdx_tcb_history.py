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

Pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tcb_history import TCB_LEVELS, QeLevel, TcbLevel


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

#: TDX TCB levels, highest first (each SGX level with the current TDX components, then the floor)
TDX_TCB_LEVELS: tuple[TdxTcbLevel, ...] = (
    *(TdxTcbLevel(lv, CURRENT_TDX_COMPONENTS, lv.status, lv.advisory_ids) for lv in TCB_LEVELS),
    TdxTcbLevel(
        TCB_LEVELS[-1],
        _c(),
        "OutOfDate",
        tuple(sorted({*TCB_LEVELS[-1].advisory_ids, *_FLOOR_ADVISORIES})),
    ),
)

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
]
