"""What every TDX quoting engine answers with (the QGS engines: ``simulated``, ``tdx``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TdxPlatformInfo:
    """``tee_platform_info_t`` as QGS sends it: TDQE and PCE ISVSVN, QE ID, CPUSVN."""

    tdqe_isvsvn: int
    pce_isvsvn: int
    platform_id: bytes
    cpusvn: bytes


__all__ = ["TdxPlatformInfo"]
