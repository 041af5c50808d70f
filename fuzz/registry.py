"""Every fuzz target by name (what ``python -m fuzz --target NAME`` runs)."""

from __future__ import annotations

from .t_abi import ABI, PCK, QUOTE
from .t_attest import MAA_POLICY, MAA_REQUEST
from .t_doctor import TDX_ATTEST_CONF
from .t_json import ADMISSION, COLLATERAL, PCCS, PCCS_REGISTRATION, PCCS_TARGET, PCCS_UPSTREAM, QCNL
from .t_pki import PKI
from .t_qemu import QEMU
from .t_qgs import QGS, QGS_PROBE
from .t_tdx import TDREPORT
from .t_wire import CONNECTION, FRAMES, REQUESTS
from .target import Target

_ALL = (
    FRAMES,
    CONNECTION,
    REQUESTS,
    ABI,
    QUOTE,
    PCK,
    PKI,
    COLLATERAL,
    PCCS,
    PCCS_TARGET,
    PCCS_UPSTREAM,
    PCCS_REGISTRATION,
    ADMISSION,
    QCNL,
    TDREPORT,
    QGS,
    QGS_PROBE,
    TDX_ATTEST_CONF,
    QEMU,
)
_ATTEST = (MAA_POLICY, MAA_REQUEST)  # the attestation service
TARGETS: dict[str, Target] = {t.name: t for t in (*_ALL, *_ATTEST)}

__all__ = ["TARGETS", "Target"]
