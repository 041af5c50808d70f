"""The AESM quote service: typed requests in, typed responses out, over a QuotingEngine.

Sans-I/O and synchronous: the server calls :meth:`AesmService.handle` (off its event loop for the
requests :meth:`AesmService.needs_engine` names). The semantics are those of Intel's aesmd with the
ECDSA quote service bundle (``shared/specs/aesm-protocol.md`` §6, checklist §8):

- validation before the engine, with AESM codes: sizes (3), key ids matched by their 158-byte
  base (38); engine refusals (``EngineError(QuoteLibStatus)``) mapped as the ECDSA bundle's
  ``quote3_error_to_aesm_error`` does: name for name for the 28 codes it lists (42 no key, 47 bad
  report...), anything else 1 (including BUSY, NO_DEVICE and SERVICE_UNAVAILABLE, which aesmd
  does not list); a closed engine (``EngineUnavailableError``) answers 30, as the bundle does
  before calling the library;
- InitQuoteEx size query ignores ``buf_size`` and answers ``pub_key_id_size=32`` with 512 zero
  bytes of target info; GetQuoteEx hands ``buf_size`` to the engine (aesmd passes it to
  ``sgx_ql_get_quote`` as the buffer size), pads the quote with zeros to ``buf_size`` and echoes
  ``qe_report_info`` (filled on success, as sent on error);
- legacy EPID/launch requests get their own response type with SERVICE_UNAVAILABLE (30);
  empty/unknown envelopes get no answer (``None``: the server closes, as aesmd does);
- engine work is serialised (one quote at a time per engine, like QE3 behind aesmd's single
  quoting thread), guarded by a lock so any caller may use the service from several threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .abi._bytes import decoded_builder
from .abi.codes import AesmStatus, QuoteLibStatus
from .abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from .abi.report import Report, TargetInfo
from .engine.base import QuoteResult, QuotingEngine
from .errors import EngineError, EngineUnavailableError, ParseError
from .wire import messages as m

log = logging.getLogger(__name__)

#: ECDSA_ID size: SHA-256 (``sizeof(sgx_sha256_hash_t)``)
PUB_KEY_ID_SIZE = m.PUB_KEY_ID_SIZE
#: SelectAttKeyID accepts at most this many entries (quote_ex_service_bundle.cpp)
MAX_ATT_KEY_IDS_IN_LIST = 10
#: default cap on GetQuoteEx ``buf_size``: larger buffers answer OUT_OF_MEMORY_ERROR (21)
DEFAULT_MAX_QUOTE_BUFFER = 1 << 20
#: legacy EPID/launch requests: "that service is not available here"
LEGACY_STATUS = AesmStatus.SERVICE_UNAVAILABLE
IMPLEMENTATION = "sgx-quote-helper"

_ZERO_TARGET_INFO = bytes(TargetInfo.SIZE)

# quote3_error_t -> aesm_error_t exactly as aesmd's quote3_error_to_aesm_error(): intel/linux-sgx
# psw/ae/aesm_service/source/bundles/ecdsa_quote_service_bundle/ecdsa_quote_service_bundle.cpp
# lines 99-217 (commit 90873a0c): one case per row below, in its order; "default:" (line 212) ->
# AESM_UNEXPECTED_ERROR for everything else. SGX_QL_ERROR_BUSY, SGX_QL_NO_DEVICE and
# SGX_QL_SERVICE_UNAVAILABLE have no case there, so they answer 1 like any unlisted code.
_ENGINE_TO_AESM: dict[int, AesmStatus] = {
    QuoteLibStatus.SUCCESS: AesmStatus.SUCCESS,
    QuoteLibStatus.ERROR_UNEXPECTED: AesmStatus.UNEXPECTED_ERROR,
    QuoteLibStatus.ERROR_INVALID_PARAMETER: AesmStatus.PARAMETER_ERROR,
    QuoteLibStatus.ERROR_OUT_OF_MEMORY: AesmStatus.OUT_OF_MEMORY_ERROR,
    QuoteLibStatus.ERROR_ECDSA_ID_MISMATCH: AesmStatus.ECDSA_ID_MISMATCH,
    QuoteLibStatus.PATHNAME_BUFFER_OVERFLOW_ERROR: AesmStatus.PATHNAME_BUFFER_OVERFLOW_ERROR,
    QuoteLibStatus.FILE_ACCESS_ERROR: AesmStatus.FILE_ACCESS_ERROR,
    QuoteLibStatus.ERROR_STORED_KEY: AesmStatus.ERROR_STORED_KEY,
    QuoteLibStatus.ERROR_PUB_KEY_ID_MISMATCH: AesmStatus.PUB_KEY_ID_MISMATCH,
    QuoteLibStatus.ERROR_INVALID_PCE_SIG_SCHEME: AesmStatus.INVALID_PCE_SIG_SCHEME,
    QuoteLibStatus.ATT_KEY_BLOB_ERROR: AesmStatus.ATT_KEY_BLOB_ERROR,
    QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID: AesmStatus.UNSUPPORTED_ATT_KEY_ID,
    QuoteLibStatus.UNSUPPORTED_LOADING_POLICY: AesmStatus.UNSUPPORTED_LOADING_POLICY,
    QuoteLibStatus.INTERFACE_UNAVAILABLE: AesmStatus.INTERFACE_UNAVAILABLE,
    QuoteLibStatus.PLATFORM_LIB_UNAVAILABLE: AesmStatus.PLATFORM_LIB_UNAVAILABLE,
    QuoteLibStatus.ATT_KEY_NOT_INITIALIZED: AesmStatus.ATT_KEY_NOT_INITIALIZED,
    QuoteLibStatus.ATT_KEY_CERT_DATA_INVALID: AesmStatus.ATT_KEY_CERT_DATA_INVALID,
    QuoteLibStatus.NO_PLATFORM_CERT_DATA: AesmStatus.NO_PLATFORM_CERT_DATA,
    QuoteLibStatus.OUT_OF_EPC: AesmStatus.OUT_OF_EPC,
    QuoteLibStatus.ERROR_REPORT: AesmStatus.ERROR_REPORT,
    QuoteLibStatus.ENCLAVE_LOST: AesmStatus.ENCLAVE_LOST,
    QuoteLibStatus.INVALID_REPORT: AesmStatus.INVALID_REPORT,
    QuoteLibStatus.ENCLAVE_LOAD_ERROR: AesmStatus.ENCLAVE_LOAD_ERROR,
    QuoteLibStatus.UNABLE_TO_GENERATE_QE_REPORT: AesmStatus.UNABLE_TO_GENERATE_QE_REPORT,
    QuoteLibStatus.KEY_CERTIFCATION_ERROR: AesmStatus.KEY_CERTIFICATION_ERROR,
    QuoteLibStatus.NETWORK_ERROR: AesmStatus.NETWORK_ERROR,
    QuoteLibStatus.MESSAGE_ERROR: AesmStatus.MSG_ERROR,
}


_SUCCESS = AesmStatus.SUCCESS
#: ``GetQuoteExResponse(code, quote, info)`` without its ``__init__``'s per-field
#: ``object.__setattr__`` lookups: one is built per quote, from values of the checked types
_quote_ex_response = decoded_builder(m.GetQuoteExResponse)


def aesm_status_for(status: int) -> AesmStatus:
    """The AESM errorCode for an engine's ``quote3_error_t`` (unknown -> UNEXPECTED_ERROR)."""
    return _ENGINE_TO_AESM.get(int(status), AesmStatus.UNEXPECTED_ERROR)


class _Refused(Exception):
    """Internal: answer the current request with this AESM code."""

    def __init__(self, status: AesmStatus) -> None:
        self.status = status


class AesmService:
    """AESM request semantics over one :class:`QuotingEngine`.

    Args:
        engine: the quoting engine (its supported key ids are read once and cached).
        version: reported by the HelperProbe answer.
        instance_id: random per process, reported by HelperProbe (tells two daemons apart).
        pid: reported by HelperProbe.
        started_ns: reported by HelperProbe: when this instance began (Unix ns; larger = newer).
        max_quote_buffer: GetQuoteEx ``buf_size`` above this answers OUT_OF_MEMORY_ERROR (21).
    """

    def __init__(
        self,
        engine: QuotingEngine,
        *,
        version: str = "",
        instance_id: str = "",
        pid: int = 0,
        started_ns: int = 0,
        max_quote_buffer: int = DEFAULT_MAX_QUOTE_BUFFER,
    ) -> None:
        self.engine = engine
        self.version = version
        self.instance_id = instance_id
        self.pid = pid
        self.started_ns = started_ns
        #: reported by HelperProbe; the server's lifecycle sets it (server/unix.py)
        self.state = "serving"
        self.max_quote_buffer = max_quote_buffer
        self._lock = threading.Lock()
        #: the engine's optional bytes-in GetQuoteEx (engine/base.py), looked up once
        self._get_quote_raw: Callable[[bytes, AttKeyId, int], QuoteResult] | None = getattr(
            engine, "get_quote_raw", None
        )
        self._key_ids: list[AttKeyId] | None = None
        self._bases: list[bytes] = []
        self._parsed: dict[bytes, AttKeyId] = {}
        self._dispatch: dict[type, Callable[..., m.Response]] = {
            m.GetSupportedAttKeyIDNumRequest: self._key_id_num,
            m.GetSupportedAttKeyIDsRequest: self._key_ids_all,
            m.SelectAttKeyIDRequest: self._select,
            m.InitQuoteExRequest: self._init_quote_ex,
            m.GetQuoteSizeExRequest: self._quote_size_ex,
            m.GetQuoteExRequest: self._quote_ex,
        }

    # -------------------------------------------------------------- public

    @staticmethod
    def needs_engine(request: m.Request) -> bool:
        """True for the requests that do engine work (run them off the event loop)."""
        return type(request).ENGINE

    def handle(self, request: m.Request) -> m.Response | None:
        """Answer one request; ``None`` means "close without replying" (empty/unknown envelope)."""
        handler = self._dispatch.get(type(request))
        if handler is not None:
            try:
                return handler(request)
            except _Refused as refused:
                return self.error_response(request, refused.status)
            except EngineUnavailableError as exc:
                log.info("engine unavailable for %s: %s", type(request).__name__, exc)
                return self.error_response(request, AesmStatus.SERVICE_UNAVAILABLE)
            except EngineError as exc:
                log.info("engine refused %s: %s", type(request).__name__, exc)
                return self.error_response(request, aesm_status_for(exc.status))
            except Exception:  # an engine bug must not take the daemon down
                log.exception("engine failed on %s", type(request).__name__)
                return self.error_response(request, AesmStatus.UNEXPECTED_ERROR)
        if isinstance(request, m.LegacyRequest):
            return m.LegacyResponse(request.field, LEGACY_STATUS)
        if isinstance(request, m.HelperProbeRequest):
            return m.HelperProbeResponse(
                AesmStatus.SUCCESS,
                IMPLEMENTATION,
                self.version,
                self.pid,
                self.instance_id,
                self.started_ns or None,
                self.state,
            )
        return None

    @staticmethod
    def error_response(request: m.Request, status: AesmStatus) -> m.Response | None:
        """The response of ``request``'s type carrying only ``status`` (and the always-sent fields;
        see ``TypedRequest.failure``); ``None`` for an envelope no response type fits.

        The server uses it with BUSY (18) past its in-flight bound.
        """
        return request.failure(int(status))

    # -------------------------------------------------------------- key ids

    def _available(self) -> tuple[list[AttKeyId], list[bytes]]:
        if self._key_ids is None:
            ids = list(self.engine.supported_key_ids())
            self._bases = [k.base for k in ids]
            self._parsed = {k.to_bytes(): k for k in ids}
            self._key_ids = ids
        return self._key_ids, self._bases

    def _check_key_id(self, raw: bytes | None) -> AttKeyId:
        """At least 256 bytes (else 3), base equal to an available id's (else 38)."""
        known = self._parsed.get(raw)  # type: ignore[arg-type]  # exactly an offered id (once listed)
        if known is not None:
            return known
        if raw is None or len(raw) < AttKeyId.SIZE:
            raise _Refused(AesmStatus.PARAMETER_ERROR)
        _, bases = self._available()
        if raw[: AttKeyId.BASE_SIZE] not in bases:
            raise _Refused(AesmStatus.UNSUPPORTED_ATT_KEY_ID)
        exact = raw[: AttKeyId.SIZE]
        known = self._parsed.get(exact)  # the common case: exactly an offered id, parsed once
        return known if known is not None else AttKeyId.from_bytes(exact)

    # -------------------------------------------------------------- handlers

    def _key_id_num(self, request: m.GetSupportedAttKeyIDNumRequest) -> m.Response:
        ids, _ = self._available()
        if not ids:
            return m.GetSupportedAttKeyIDNumResponse(AesmStatus.SERVICE_UNAVAILABLE, 0)
        return m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS, len(ids))

    def _key_ids_all(self, request: m.GetSupportedAttKeyIDsRequest) -> m.Response:
        ids, _ = self._available()
        if not ids:
            return m.GetSupportedAttKeyIDsResponse(AesmStatus.SERVICE_UNAVAILABLE)
        if request.buf_size != len(ids) * AttKeyId.SIZE:
            return m.GetSupportedAttKeyIDsResponse(AesmStatus.PARAMETER_ERROR)
        return m.GetSupportedAttKeyIDsResponse(AesmStatus.SUCCESS, b"".join(k.to_bytes() for k in ids))

    def _select(self, request: m.SelectAttKeyIDRequest) -> m.Response:
        ids, bases = self._available()
        if request.att_key_id_list is None:
            if not ids:
                return m.SelectAttKeyIDResponse(AesmStatus.UNSUPPORTED_ATT_KEY_ID)
            return m.SelectAttKeyIDResponse(AesmStatus.SUCCESS, ids[0].to_bytes())
        raw = request.att_key_id_list
        try:
            wanted = AttKeyIdList.from_bytes(raw)
        except ParseError:
            return m.SelectAttKeyIDResponse(AesmStatus.PARAMETER_ERROR)
        if wanted.id != 0 or wanted.version != 0 or len(wanted.key_ids) > MAX_ATT_KEY_IDS_IN_LIST:
            return m.SelectAttKeyIDResponse(AesmStatus.PARAMETER_ERROR)
        for i in range(len(wanted.key_ids)):
            entry = raw[8 + i * AttKeyId.SIZE : 8 + (i + 1) * AttKeyId.SIZE]
            if entry[: AttKeyId.BASE_SIZE] in bases:
                return m.SelectAttKeyIDResponse(AesmStatus.SUCCESS, entry)
        return m.SelectAttKeyIDResponse(AesmStatus.UNSUPPORTED_ATT_KEY_ID)

    def _init_quote_ex(self, request: m.InitQuoteExRequest) -> m.Response:
        key = self._check_key_id(request.att_key_id)
        if not request.b_pub_key_id:
            # size query: libsgx_dcap_ql sends an uninitialised buf_size here; ignore it
            with self._lock:
                result = self.engine.init_quote(key, False)
            return m.InitQuoteExResponse(
                AesmStatus.SUCCESS, target_info=_ZERO_TARGET_INFO, pub_key_id_size=result.pub_key_id_size
            )
        if request.buf_size != PUB_KEY_ID_SIZE:
            raise _Refused(AesmStatus.PARAMETER_ERROR)
        with self._lock:
            result = self.engine.init_quote(key, True)
        if (
            result.target_info is None
            or result.pub_key_id is None
            or len(result.pub_key_id) != PUB_KEY_ID_SIZE
        ):
            log.error("engine %s returned an incomplete init_quote result", self.engine.name)
            raise _Refused(AesmStatus.UNEXPECTED_ERROR)
        return m.InitQuoteExResponse(
            AesmStatus.SUCCESS,
            target_info=result.target_info.to_bytes(),
            pub_key_id_size=PUB_KEY_ID_SIZE,
            pub_key_id=result.pub_key_id,
        )

    def _quote_size_ex(self, request: m.GetQuoteSizeExRequest) -> m.Response:
        key = self._check_key_id(request.att_key_id)
        with self._lock:
            size = self.engine.quote_size(key)
        return m.GetQuoteSizeExResponse(AesmStatus.SUCCESS, size)

    def _quote_ex(self, request: m.GetQuoteExRequest) -> m.Response:
        if len(request.report) != Report.SIZE:
            raise _Refused(AesmStatus.PARAMETER_ERROR)
        info_raw = request.qe_report_info
        if info_raw is not None and len(info_raw) != QeReportInfo.SIZE:
            raise _Refused(AesmStatus.PARAMETER_ERROR)
        key = self._check_key_id(request.att_key_id)
        if request.buf_size > self.max_quote_buffer:
            raise _Refused(AesmStatus.OUT_OF_MEMORY_ERROR)
        raw_quote = self._get_quote_raw
        if info_raw is None and raw_quote is not None:  # the engine takes the REPORT's bytes as sent
            with self._lock:
                result = raw_quote(request.report, key, request.buf_size)
        else:
            report = Report.from_bytes(request.report)
            info = QeReportInfo.from_bytes(info_raw) if info_raw is not None else None
            with self._lock:
                result = self.engine.get_quote(report, key, info, buf_size=request.buf_size)
        quote = result.quote
        if len(quote) > request.buf_size:
            raise _Refused(AesmStatus.PARAMETER_ERROR)
        echoed = info_raw
        if info_raw is not None:
            if result.qe_report_info is None:
                log.error("engine %s returned no qe_report_info although one was sent", self.engine.name)
                raise _Refused(AesmStatus.UNABLE_TO_GENERATE_QE_REPORT)
            echoed = result.qe_report_info.to_bytes()
        padded = quote + bytes(request.buf_size - len(quote)) if len(quote) < request.buf_size else quote
        return _quote_ex_response(_SUCCESS, padded, echoed)


__all__ = ["DEFAULT_MAX_QUOTE_BUFFER", "IMPLEMENTATION", "LEGACY_STATUS", "AesmService", "aesm_status_for"]
