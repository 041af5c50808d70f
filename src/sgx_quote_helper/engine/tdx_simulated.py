"""``SimulatedTdxEngine``: the TDX quoting engine of a simulated platform (its TDQE).

What Intel's QGS asks of ``libsgx_tdx_logic`` (``tee_att_get_quote``, ``tee_att_get_platform_info``,
the quote provider's ``tdx_ql_get_quote_verification_collateral``), answered by the simulated TDX
module and TDQE of :mod:`sgx_quote_helper.sim`. A refused report raises :class:`EngineError`.

Thread-safe and parallel: the TDQE holds no mutable state after construction (QGS runs one TDQE
context per worker thread; here every worker shares one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ..abi.codes import QuoteLibStatus
from ..errors import EngineError
from ..sim import collateral as sgx_collateral
from ..sim import tdx_collateral
from ..sim.platform import Platform
from ..sim.tdqe import Tdqe
from ..sim.tdx_module import TdxModule
from .tdx_base import TdxPlatformInfo

#: collateral version 3.1: CRLs as raw DER (Intel ``qpl_api.txt``)
COLLATERAL_VERSION = (3, 1)


class SimulatedTdxEngine:
    """TD quotes, platform info and TDX collateral from a :class:`Platform`'s TDX side."""

    name = "simulated"

    def __init__(self, platform: Platform, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.platform = platform
        self.module = TdxModule.open(platform)
        self.tdqe = Tdqe.for_platform(self.module)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def get_quote(self, report: bytes) -> bytes:
        """Quote a 1024-byte TDREPORT (any other length: QE_REPORT_UNSUPPORTED_FORMAT)."""
        return self.tdqe.quote(report)

    def platform_info(self) -> TdxPlatformInfo:
        ident = self.platform.identity
        return TdxPlatformInfo(self.tdqe.qe_svn, ident.pcesvn, ident.qe_id, ident.cpusvn)

    def collateral(self, fmspc: bytes, ca: str) -> tuple[tuple[int, int], tuple[bytes, ...]]:
        """The seven GET_COLLATERAL_RESP blobs for ``fmspc`` and CA ("processor"/"platform").

        Raises:
            EngineError: not this platform's FMSPC or CA (NO_PLATFORM_CERT_DATA).
        """
        ident = self.platform.identity
        if fmspc != ident.fmspc or ca != ident.ca:
            raise EngineError(
                QuoteLibStatus.NO_PLATFORM_CERT_DATA,
                f"no collateral for FMSPC {fmspc.hex().upper()} CA {ca!r} "
                f"(this platform: {ident.fmspc.hex().upper()} {ident.ca})",
            )
        now = self._clock()
        tcb, tcb_chain = tdx_collateral.tdx_tcb_info_response(self.platform, now)
        qe, qe_chain = tdx_collateral.td_qe_identity_response(self.platform, now)
        blobs = (
            self.platform.pck_ca_chain_pem() + b"\0",
            sgx_collateral.root_ca_crl_der(self.platform, now),
            sgx_collateral.pck_crl_der(self.platform, now),
            tcb_chain + b"\0",
            tcb + b"\0",
            qe_chain + b"\0",
            qe + b"\0",
        )
        return COLLATERAL_VERSION, blobs

    def close(self) -> None:
        """Nothing to release (the platform's state is files)."""


__all__ = ["COLLATERAL_VERSION", "SimulatedTdxEngine", "TdxPlatformInfo"]
