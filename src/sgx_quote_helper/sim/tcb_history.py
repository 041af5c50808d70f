"""The simulated TCB recovery history: the TCB levels and QE levels the simulated Intel publishes.

Real TCB Info lists, per FMSPC, the TCB levels Intel has published over the years (a TCB recovery
adds a new UpToDate level and demotes the previous ones). The simulated history below does not
depend on any one platform: every simulated platform is judged against the same levels, and a
platform initialised with lower SVNs simply matches an older level, as a real unpatched machine
would. Matching rules (``shared/specs/dcap-quote.md`` §4.1): levels sorted descending, the first
level where every CPUSVN component and the PCESVN are >= the level's is selected.

Component 7 plays the role of a configuration component (as on real client platforms): the same
microcode without it gives ConfigurationNeeded.

Pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level of the simulated TCB Info."""

    components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pcesvn: int
    tcb_date: str  # RFC 3339 UTC
    status: str
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QeLevel:
    """One level of the simulated QE Identity."""

    isvsvn: int
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...] = ()


def _c(*head: int) -> tuple[int, ...]:
    return head + (0,) * (16 - len(head))


#: the current level: a default simulated platform sits here
CURRENT_COMPONENTS = _c(15, 15, 3, 3, 255, 255, 1)
CURRENT_PCESVN = 13

#: incremented on each simulated TCB recovery (TCB Info and QE Identity carry it)
TCB_EVALUATION_DATA_NUMBER = 17

#: platform TCB levels, highest first
TCB_LEVELS: tuple[TcbLevel, ...] = (
    TcbLevel(CURRENT_COMPONENTS, CURRENT_PCESVN, "2025-02-12T00:00:00Z", "UpToDate"),
    TcbLevel(
        _c(15, 15, 3, 3, 255, 255, 0),
        13,
        "2025-02-12T00:00:00Z",
        "ConfigurationNeeded",
        ("INTEL-SA-00289",),
    ),
    TcbLevel(
        _c(14, 14, 3, 3, 255, 255, 1),
        13,
        "2024-03-13T00:00:00Z",
        "SWHardeningNeeded",
        ("INTEL-SA-00615",),
    ),
    TcbLevel(
        _c(12, 12, 3, 3, 255, 255, 1),
        11,
        "2022-11-09T00:00:00Z",
        "OutOfDate",
        ("INTEL-SA-00615", "INTEL-SA-00657", "INTEL-SA-00767"),
    ),
    # the floor: matches any platform, so no platform is "not supported"
    TcbLevel(
        _c(),
        0,
        "2018-01-04T00:00:00Z",
        "OutOfDate",
        ("INTEL-SA-00106", "INTEL-SA-00115", "INTEL-SA-00615", "INTEL-SA-00657", "INTEL-SA-00767"),
    ),
)

#: the simulated QE's ISVSVN (the QE Identity's UpToDate level)
CURRENT_QE_SVN = 8

QE_LEVELS: tuple[QeLevel, ...] = (
    QeLevel(CURRENT_QE_SVN, "2024-03-13T00:00:00Z", "UpToDate"),
    QeLevel(6, "2021-11-10T00:00:00Z", "OutOfDate", ("INTEL-SA-00615",)),
    QeLevel(4, "2019-11-13T00:00:00Z", "OutOfDate", ("INTEL-SA-00334", "INTEL-SA-00615")),
    QeLevel(1, "2018-08-15T00:00:00Z", "OutOfDate", ("INTEL-SA-00202", "INTEL-SA-00334", "INTEL-SA-00615")),
)


def matching_level(components: tuple[int, ...], pcesvn: int) -> TcbLevel | None:
    """The level a platform with these PCK TCB values matches (QVL's rule), or ``None``."""
    for level in sorted(TCB_LEVELS, key=lambda lv: (lv.components, lv.pcesvn), reverse=True):
        if (
            all(c >= lc for c, lc in zip(components, level.components, strict=True))
            and pcesvn >= level.pcesvn
        ):
            return level
    return None


__all__ = [
    "CURRENT_COMPONENTS",
    "CURRENT_PCESVN",
    "CURRENT_QE_SVN",
    "QE_LEVELS",
    "TCB_EVALUATION_DATA_NUMBER",
    "TCB_LEVELS",
    "QeLevel",
    "TcbLevel",
    "matching_level",
]
