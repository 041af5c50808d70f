"""The simulated TCB recovery history: the TCB levels and QE levels the simulated Intel publishes.

Real TCB Info lists, per FMSPC, the TCB levels Intel has published over the years (a TCB recovery
adds a new UpToDate level and demotes the previous ones). The simulated history below does not
depend on any one platform: every simulated platform is judged against the same levels, and a
platform initialised with lower SVNs simply matches an older level, as a real unpatched machine
would. Matching rules (``shared/specs/dcap-quote.md`` §4.1): levels sorted descending, the first
level where every CPUSVN component and the PCESVN are >= the level's is selected.

Intel re-publishes TCB Info and QE Identity once per TCB recovery under a new TCB evaluation data
number, and keeps serving the earlier numbers for a while (PCS v4 ``tcbEvaluationDataNumber=N``;
``update=early`` gives the newest number as soon as it is published, ``update=standard`` the one
relying parties are expected to use). :data:`EVALUATIONS` is that history: number 18 is the newest
(early only: a simulated TCB recovery above today's level, which demotes today's UpToDate level),
17 is the standard baseline (the levels below, what ``TCB_LEVELS`` holds), 16 the one before it.

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


@dataclass(frozen=True, slots=True)
class TcbEvaluation:
    """One published TCB evaluation: its number, dates, and the TCB and QE levels it judges by."""

    number: int
    tcb_recovery_event_date: str  # RFC 3339 UTC
    tcb_date: str
    tcb_levels: tuple[TcbLevel, ...]
    qe_levels: tuple[QeLevel, ...]


#: the simulated TCB recovery of evaluation 18 (early): raises components 1-2 and the PCE SVN
EARLY_COMPONENTS = _c(16, 16, 3, 3, 255, 255, 1)
EARLY_PCESVN = 14
EARLY_QE_SVN = 9
#: the (simulated) advisory of that recovery
EARLY_ADVISORY = "INTEL-SA-SIMULATED-18"


def _demoted(level: TcbLevel, advisory: str) -> TcbLevel:
    """``level`` after a TCB recovery: no longer UpToDate, the recovery's advisory added."""
    status = "OutOfDate" if level.status == "UpToDate" else level.status
    if level.status == "ConfigurationNeeded":
        status = "OutOfDateConfigurationNeeded"
    return TcbLevel(level.components, level.pcesvn, level.tcb_date, status, (*level.advisory_ids, advisory))


def _qe_demoted(level: QeLevel, advisory: str) -> QeLevel:
    status = "OutOfDate" if level.status == "UpToDate" else level.status
    return QeLevel(level.isvsvn, level.tcb_date, status, (*level.advisory_ids, advisory))


def _before(levels: tuple[TcbLevel, ...], date: str) -> tuple[TcbLevel, ...]:
    return tuple(lv for lv in levels if lv.tcb_date <= date)


#: published evaluations, newest first: [0] is ``update=early``, [1] ``update=standard``
EVALUATIONS: tuple[TcbEvaluation, ...] = (
    TcbEvaluation(
        TCB_EVALUATION_DATA_NUMBER + 1,
        "2025-08-12T00:00:00Z",
        "2025-08-13T00:00:00Z",
        (
            TcbLevel(EARLY_COMPONENTS, EARLY_PCESVN, "2025-08-13T00:00:00Z", "UpToDate"),
            *(_demoted(lv, EARLY_ADVISORY) for lv in TCB_LEVELS),
        ),
        (
            QeLevel(EARLY_QE_SVN, "2025-08-13T00:00:00Z", "UpToDate"),
            *(_qe_demoted(lv, EARLY_ADVISORY) for lv in QE_LEVELS),
        ),
    ),
    TcbEvaluation(
        TCB_EVALUATION_DATA_NUMBER, "2025-02-11T00:00:00Z", "2025-02-12T00:00:00Z", TCB_LEVELS, QE_LEVELS
    ),
    TcbEvaluation(
        TCB_EVALUATION_DATA_NUMBER - 1,
        "2024-03-12T00:00:00Z",
        "2024-03-13T00:00:00Z",
        (
            TcbLevel(_c(14, 14, 3, 3, 255, 255, 1), 13, "2024-03-13T00:00:00Z", "UpToDate"),
            *_before(TCB_LEVELS, "2023-12-31T00:00:00Z"),
        ),
        QE_LEVELS,
    ),
)


def evaluation(number: int | None = None, update: str = "standard") -> TcbEvaluation | None:
    """The evaluation numbered ``number``, else the one ``update`` (early|standard) names; ``None``
    for a number that is not published."""
    if number is None:
        return EVALUATIONS[0] if update == "early" else EVALUATIONS[1]
    return next((e for e in EVALUATIONS if e.number == number), None)


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
    "EVALUATIONS",
    "QE_LEVELS",
    "TCB_EVALUATION_DATA_NUMBER",
    "TCB_LEVELS",
    "QeLevel",
    "TcbEvaluation",
    "TcbLevel",
    "evaluation",
    "matching_level",
]
