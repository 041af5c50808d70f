"""The QGS request semantics: QGS messages in, engine calls, QGS messages out (no sockets).

What Intel's ``qgs_ql_logic.cpp`` does with each request, on a TDX engine:

- GET_QUOTE_REQ: quote the report (the id list is ignored and ``selected_id_size`` is 0, as Intel);
- GET_COLLATERAL_REQ: the seven collateral blobs for the FMSPC and CA (``pck_ca`` up to its NUL;
  an FMSPC of 65535 bytes or more is refused, as Intel);
  a reply to a minor-0 request carries Intel's 4 extra bytes;
- GET_PLATFORM_INFO_REQ: TDQE/PCE ISVSVN, QE ID, CPUSVN;
- a request that does not inflate, and any engine failure (for the ``tdx`` engine: every
  ``tee_att_error_t``): the error response with 0x12001 UNEXPECTED, the only code Intel's
  ``get_resp`` puts in one (``qgs_ql_logic.cpp``: ``resp_error_code = QGS_MSG_ERROR_UNEXPECTED``
  on every failed ``tee_att_*`` call);
- raw mode: the bare quote, or ``None`` (close with no data) when the report is refused.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .abi import qgs as q
from .engine.tdx_base import TdxPlatformInfo
from .errors import EngineError

log = logging.getLogger(__name__)


class TdxEngine(Protocol):
    name: str

    def get_quote(self, report: bytes) -> bytes: ...

    def platform_info(self) -> TdxPlatformInfo: ...

    def collateral(self, fmspc: bytes, ca: str) -> tuple[tuple[int, int], tuple[bytes, ...]]: ...

    def close(self) -> None: ...


class QgsService:
    """Answers QGS requests with a :class:`TdxEngine` (see the module doc). Thread-safe if the
    engine is.

    Args:
        engine: the TDX quoting engine.
        version / instance_id / pid / started_ns: who this is, for our probe's answer (as
            ``AesmService``: ``started_ns`` in Unix ns, larger = newer; server/instance.py).
    """

    def __init__(
        self,
        engine: TdxEngine,
        *,
        version: str = "",
        instance_id: str = "",
        pid: int = 0,
        started_ns: int = 0,
    ) -> None:
        self.engine = engine
        self.version = version
        self.instance_id = instance_id
        self.pid = pid
        self.started_ns = started_ns
        #: reported by our probe; the server's lifecycle sets it (server/lifecycle.py)
        self.state = "serving"

    def answer(self, request: q.Request) -> q.Response:
        try:
            if isinstance(request, q.GetQuoteRequest):
                return q.GetQuoteResponse(self.engine.get_quote(request.report))
            if isinstance(request, q.GetCollateralRequest):
                if len(request.fmspc) >= 0xFFFF:
                    raise EngineError(0, "FMSPC of 65535 bytes or more")
                (major, minor), blobs = self.engine.collateral(request.fmspc, request.ca_name)
                return q.GetCollateralResponse(blobs, major, minor, pad=request.minor_version == 0)
            info = self.engine.platform_info()
            return q.GetPlatformInfoResponse(info.tdqe_isvsvn, info.pce_isvsvn, info.platform_id, info.cpusvn)
        except EngineError as exc:
            log.info("%s refused: %s", q.MsgType(request.TYPE).name, exc)
            return q.error_response(request.TYPE, q.MsgError.UNEXPECTED)

    def raw_quote(self, report: bytes) -> bytes | None:
        try:
            return self.engine.get_quote(report)
        except EngineError as exc:
            log.info("raw-mode report refused: %s", exc)
            return None


__all__ = ["QgsService", "TdxEngine"]
