"""The hardware quoting engine: Intel's DCAP quote library (QE3 + PCE) through ctypes.

It does what Intel's aesmd ECDSA quote service bundle does (``psw/ae/aesm_service/source/bundles/
ecdsa_quote_service_bundle``), whose ``start()`` refuses to start unless both the PCE and QE3 load:
at start it sets the enclave load policy to PERSISTENT, loads QE3 (``load_qe``) and the PCE
(``sgx_pce_get_target`` loads it, from the PCE logic library), so a broken node fails at start-up
with what is missing rather than at the first quote; it routes the quote provider library's log
into ours (``sgx_ql_set_logging_callback`` on ``get_qpl_handle()``, see :mod:`.qpl_log`) and reads
the key id from ``sgx_ql_get_keyid``. Requests then call the core functions of
libsgx_qe3_logic.so inside this process (prototypes from
``QuoteGeneration/quote_wrapper/quote/inc/sgx_ql_core_wrapper.h``)::

    quote3_error_t sgx_ql_set_enclave_load_policy(sgx_ql_request_policy_t policy);
    quote3_error_t sgx_ql_init_quote(sgx_ql_att_key_id_t *p_att_key_id,
                                     sgx_target_info_t *p_qe_target_info, bool refresh_att_key,
                                     size_t *p_pub_key_id_size, uint8_t *p_pub_key_id);
    quote3_error_t sgx_ql_get_quote_size(sgx_ql_att_key_id_t *p_att_key_id, uint32_t *p_quote_size);
    quote3_error_t sgx_ql_get_quote(const sgx_report_t *p_app_report,
                                    sgx_ql_att_key_id_t *p_att_key_id,
                                    sgx_ql_qe_report_info_t *p_qe_report_info,
                                    uint8_t *p_quote, uint32_t quote_size);
    quote3_error_t sgx_ql_get_keyid(sgx_att_key_id_ext_t *p_att_key_id_ext);
    quote3_error_t sgx_set_qpl_path(const char *p_path);
    quote3_error_t load_qe(sgx_enclave_id_t *p_qe_eid, sgx_misc_attribute_t *p_qe_attributes,
                           sgx_launch_token_t *p_launch_token);
    void *get_qpl_handle(void);
    sgx_pce_error_t sgx_pce_get_target(sgx_target_info_t *p_pce_target,
                                       sgx_isv_svn_t *p_pce_isv_svn);  // libsgx_pce_logic

Start-up failures name every code (``quote3_error_t``, the urts's ``sgx_status_t`` that
``load_qe`` passes through, ``sgx_pce_error_t``) and the fix. GetQuoteEx passes the client's
buffer size to ``sgx_ql_get_quote`` as aesmd does (no second ``sgx_ql_get_quote_size``, which
may cost a QPL/PCCS lookup). Library statuses are raised as ``EngineError(QuoteLibStatus)``; ``service`` maps them to AESM codes
as Intel's bundle does. Calls are serialised by a lock (one call into the library at a time, like
the bundle's ``ecdsa_quote_mutex``); ctypes releases the GIL while the library works.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
from pathlib import Path
from typing import Any

from ..abi.codes import PceStatus, QuoteLibStatus, load_qe_status
from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.quote import SGX_SIGNATURE_DATA_LEN_OFFSET, SGX_SIGNATURE_DATA_OFFSET
from ..abi.report import Report, TargetInfo
from ..errors import ConfigError, EngineError, EngineUnavailableError
from . import qpl_log
from .base import InitQuoteResult, QuoteResult
from .dcap_library import (
    INSTALL_LIBRARY_HINT,
    QE3_LOGIC_LIBRARY,
    Problems,
    check_devices,
    load_libraries,
    start_hint,
    status_text,
    unset_aesm_addr,
)

log = logging.getLogger(__name__)

# sgx_ql_request_policy_t (QuoteGeneration/pce_wrapper/inc/sgx_pce.h)
SGX_QL_PERSISTENT = 0
SGX_QL_EPHEMERAL = 1

PUB_KEY_ID_SIZE = 32  # sizeof(sgx_sha256_hash_t): the ECDSA_ID
_MISC_ATTRIBUTE_SIZE = 24  # sgx_misc_attribute_t: attributes (16) + misc_select (4), 8-aligned
_LAUNCH_TOKEN_SIZE = 1024  # sgx_launch_token_t
_QUOTE_SIG_LEN_OFFSET = SGX_SIGNATURE_DATA_LEN_OFFSET  # v3/v4 SGX quote: header 48 + body 384, u32
_QUOTE_SIG_DATA_OFFSET = SGX_SIGNATURE_DATA_OFFSET

_STATUS = ctypes.c_uint32  # quote3_error_t is a C enum of 32-bit values
_P = ctypes.c_void_p
#: where QE3 logic finds the PCE calls it leaves undefined (the process's global scope)
PCE_PROBE_SYMBOL = "sgx_pce_get_target"
_TARGET_INFO_SIZE = 512
#: the QPL name get_qpl_handle opens when no path is set (DCAP SGX_QL_QUOTE_CONFIG_LIB_FILE_NAME)
DEFAULT_QPL = "libdcap_quoteprov.so.1"

#: symbol -> (argtypes, restype, required)
_PROTOTYPES: dict[str, tuple[list[Any], Any, bool]] = {
    "sgx_ql_set_enclave_load_policy": ([ctypes.c_int], _STATUS, True),
    "sgx_ql_init_quote": ([_P, _P, ctypes.c_bool, ctypes.POINTER(ctypes.c_size_t), _P], _STATUS, True),
    "sgx_ql_get_quote_size": ([_P, ctypes.POINTER(ctypes.c_uint32)], _STATUS, True),
    "sgx_ql_get_quote": ([_P, _P, _P, _P, ctypes.c_uint32], _STATUS, True),
    "sgx_ql_get_keyid": ([_P], _STATUS, False),
    "sgx_set_qpl_path": ([ctypes.c_char_p], _STATUS, False),
    "load_qe": ([ctypes.POINTER(ctypes.c_uint64), _P, _P], _STATUS, False),
    "get_qpl_handle": ([], _P, False),
}


def _status_name(status: int) -> str:
    return status_text(QuoteLibStatus(int(status)))


class DcapEngine:
    """QE3/PCE on real SGX hardware via libsgx_qe3_logic.so.

    Args:
        library: the QE3 logic library (file name searched by the dynamic loader, or a path).
        pce_library: ``""`` tries ``libsgx_pce_logic.so.1``/``.so`` first (what Intel's QE3 logic
            needs); a name or path loads that one; ``None`` skips it.
        device_root: where ``sgx_enclave``/``sgx_provision`` live (``/dev``; injectable for tests).
        qpl_path: optional quote provider library path, passed to ``sgx_set_qpl_path``.

    Raises:
        ConfigError: a device or library is missing or unusable, the library lacks the core
            calls, or QE3 or the PCE cannot be loaded; the message names every code and says
            what is missing and how to fix it.
    """

    name = "dcap"

    def __init__(
        self,
        *,
        library: str = QE3_LOGIC_LIBRARY,
        pce_library: str | None = "",
        device_root: Path = Path("/dev"),
        qpl_path: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._qpl_callback: Any = None
        problems = Problems()
        check_devices(Path(device_root), problems)
        unset_aesm_addr()  # before the library (and its urts) is loaded
        lib = load_libraries(library, pce_library, problems)
        problems.raise_if_any()
        assert lib is not None
        self.library = library
        self._fn = _bind(lib, library)
        if qpl_path is not None:
            if "sgx_set_qpl_path" not in self._fn:
                raise ConfigError(
                    f"{library} does not export sgx_set_qpl_path (an older DCAP release): install the "
                    f"quote provider library as libdcap_quoteprov.so.1 on the loader path instead"
                )
            self._start_call("sgx_set_qpl_path", qpl_path.encode(), what=f"set the QPL path {qpl_path}")
        self._start_call(
            "sgx_ql_set_enclave_load_policy", SGX_QL_PERSISTENT, what="set the enclave load policy"
        )
        try:
            enclaves = Problems()
            self._load_qe(enclaves)
            self._probe_pce(enclaves)
            enclaves.raise_if_any("aesmd's ECDSA quote service does not start without both enclaves either.")
            self._route_qpl_log(qpl_path)
            self._key_id = self._read_key_id()
        except ConfigError:
            self._fn["sgx_ql_set_enclave_load_policy"](SGX_QL_EPHEMERAL)  # release what did load
            raise
        log.info("DCAP engine ready: %s, QE3 and PCE loaded, enclave load policy PERSISTENT", library)

    # -- start-up ------------------------------------------------------------------------------

    def _start_call(self, symbol: str, *args: Any, what: str) -> None:
        status = QuoteLibStatus(int(self._fn[symbol](*args)))
        if status != QuoteLibStatus.SUCCESS:
            raise ConfigError(
                f"the DCAP hardware engine cannot start: {symbol} failed to {what}: "
                f"{status_text(status)}. To fix: {start_hint(status)}."
            )

    def _load_qe(self, problems: Problems) -> None:
        """``load_qe`` (when exported); its code is a quote3_error_t or the urts's sgx_status_t."""
        if "load_qe" not in self._fn:
            return
        eid = ctypes.c_uint64(0)
        misc = ctypes.create_string_buffer(_MISC_ATTRIBUTE_SIZE)
        token = ctypes.create_string_buffer(_LAUNCH_TOKEN_SIZE)
        status = load_qe_status(int(self._fn["load_qe"](ctypes.byref(eid), misc, token)))
        if status != 0:
            problems.add(f"load_qe failed to load the QE3 enclave: {status_text(status)}", start_hint(status))

    def _probe_pce(self, problems: Problems) -> None:
        """Load the PCE now (``sgx_pce_get_target`` loads it), as aesmd's PCE service start does.

        QE3 logic resolves the PCE calls from the process's global scope, so that is where the
        probe looks; a process where it cannot be found cannot quote, so that refuses too.
        """
        try:
            probe = getattr(ctypes.CDLL(None), PCE_PROBE_SYMBOL)
        except (AttributeError, OSError):
            problems.add(
                f"{PCE_PROBE_SYMBOL} is not loaded in this process (the PCE logic library)",
                INSTALL_LIBRARY_HINT,
            )
            return
        probe.argtypes = [_P, ctypes.POINTER(ctypes.c_uint16)]
        probe.restype = _STATUS
        target = ctypes.create_string_buffer(_TARGET_INFO_SIZE)
        svn = ctypes.c_uint16(0)
        status = PceStatus(int(probe(target, ctypes.byref(svn))))
        if status != PceStatus.SUCCESS:
            problems.add(
                f"{PCE_PROBE_SYMBOL} failed to load the PCE enclave: {status_text(status)} (QE3 "
                f"would answer every InitQuoteEx with {_status_name(QuoteLibStatus.INTERFACE_UNAVAILABLE)})",
                start_hint(status),
            )
        else:
            log.debug("PCE loaded: ISVSVN %d", svn.value)

    def _route_qpl_log(self, qpl_path: str | None) -> None:
        """Hand the QPL our logging callback, as aesmd's ECDSA bundle does after load_qe."""
        if "get_qpl_handle" not in self._fn:
            return
        name = qpl_path or DEFAULT_QPL
        handle = self._fn["get_qpl_handle"]()
        if not handle:
            log.warning(
                "no quote provider library could be opened (%s): QE3 cannot get this platform's PCK "
                "certificate data, so quotes fail or lack the PCK certificate chain. To fix: install "
                "libsgx-dcap-default-qpl (for a PCCS) or az-dcap-client (Azure THIM), or pass its path",
                name,
            )
            return
        # the library QE3 uses (same handle, not a new load), never dlclose'd, as in aesmd
        self._qpl_callback = qpl_log.attach(handle, name, _status_name)  # qpl_log holds it too

    def _read_key_id(self) -> AttKeyId:
        if "sgx_ql_get_keyid" not in self._fn:
            return AttKeyId.ecdsa_p256_qe3()
        buf = ctypes.create_string_buffer(AttKeyId.SIZE)
        self._start_call("sgx_ql_get_keyid", buf, what="read the attestation key id")
        return AttKeyId.from_bytes(buf.raw)

    # -- QuotingEngine --------------------------------------------------------------------------

    def supported_key_ids(self) -> list[AttKeyId]:
        """The one ECDSA-P256 key id of QE3 (as ``sgx_ql_get_keyid`` writes it)."""
        return [self._key_id]

    def init_quote(self, key_id: AttKeyId, want_pub_key_id: bool) -> InitQuoteResult:
        """``sgx_ql_init_quote`` with ``refresh_att_key=false``, as aesmd calls it."""
        key = self._key_buffer(key_id)
        target = ctypes.create_string_buffer(TargetInfo.SIZE)
        size = ctypes.c_size_t(PUB_KEY_ID_SIZE if want_pub_key_id else 0)
        pub = ctypes.create_string_buffer(PUB_KEY_ID_SIZE) if want_pub_key_id else None
        with self._lock:
            self._check_open()
            status = self._fn["sgx_ql_init_quote"](key, target, False, ctypes.byref(size), pub)
        _raise_for(status, "sgx_ql_init_quote")
        if pub is None:
            return InitQuoteResult(pub_key_id_size=size.value)
        if size.value != PUB_KEY_ID_SIZE:
            raise EngineError(QuoteLibStatus.ERROR_UNEXPECTED, f"library wrote a {size.value}-byte ECDSA_ID")
        return InitQuoteResult(
            pub_key_id_size=size.value,
            target_info=TargetInfo.from_bytes(target.raw),
            pub_key_id=pub.raw[:PUB_KEY_ID_SIZE],
        )

    def quote_size(self, key_id: AttKeyId) -> int:
        """``sgx_ql_get_quote_size``."""
        key = self._key_buffer(key_id)
        with self._lock:
            self._check_open()
            return self._quote_size_locked(key)

    def get_quote(
        self,
        report: Report,
        key_id: AttKeyId,
        qe_report_info: QeReportInfo | None = None,
        buf_size: int | None = None,
    ) -> QuoteResult:
        """``sgx_ql_get_quote`` into a zeroed buffer of ``buf_size`` bytes, as aesmd's get_quote_ex.

        ``buf_size`` is the client's (GetQuoteEx ``buf_size``): the library refuses one too small
        with INVALID_PARAMETER. ``None`` (library callers) asks ``sgx_ql_get_quote_size`` first,
        in the same locked step.
        """
        key = self._key_buffer(key_id)
        app_report = ctypes.create_string_buffer(report.to_bytes(), Report.SIZE)
        info = None
        if qe_report_info is not None:
            info = ctypes.create_string_buffer(qe_report_info.to_bytes(), QeReportInfo.SIZE)
        if buf_size is not None and not 0 <= buf_size <= 0xFFFFFFFF:
            raise EngineError(QuoteLibStatus.ERROR_INVALID_PARAMETER, f"quote buffer size {buf_size}")
        with self._lock:
            self._check_open()
            size = self._quote_size_locked(key) if buf_size is None else buf_size
            out = ctypes.create_string_buffer(size)
            status = self._fn["sgx_ql_get_quote"](app_report, key, info, out, size)
        _raise_for(status, "sgx_ql_get_quote")
        quote = _trim(out.raw)
        back = QeReportInfo.from_bytes(info.raw) if info is not None else None
        return QuoteResult(quote=quote, qe_report_info=back)

    def close(self) -> None:
        """Switch the library to the EPHEMERAL policy (unloads QE3/PCE), as aesmd's stop does."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            status = int(self._fn["sgx_ql_set_enclave_load_policy"](SGX_QL_EPHEMERAL))
        if status != QuoteLibStatus.SUCCESS:
            log.warning("unloading the quoting enclaves failed: %s", _status_name(status))

    # -- helpers --------------------------------------------------------------------------------

    def _quote_size_locked(self, key: ctypes.Array[ctypes.c_char]) -> int:
        size = ctypes.c_uint32(0)
        status = self._fn["sgx_ql_get_quote_size"](key, ctypes.byref(size))
        _raise_for(status, "sgx_ql_get_quote_size")
        if size.value < _QUOTE_SIG_DATA_OFFSET:
            raise EngineError(QuoteLibStatus.ERROR_UNEXPECTED, f"library reported quote size {size.value}")
        return int(size.value)

    def _key_buffer(self, key_id: AttKeyId) -> ctypes.Array[ctypes.c_char]:
        if key_id.base != self._key_id.base:
            raise EngineError(QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID, "not QE3's ECDSA-P256 key id")
        # sgx_att_key_id_ext_t starts with the sgx_ql_att_key_id_t the library reads
        return ctypes.create_string_buffer(key_id.to_bytes(), AttKeyId.SIZE)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUnavailableError("the DCAP engine is closed")


def _bind(lib: ctypes.CDLL, library: str) -> dict[str, Any]:
    fns: dict[str, Any] = {}
    for symbol, (argtypes, restype, required) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            if required:
                raise ConfigError(
                    f"the DCAP hardware engine cannot start: {library} does not export {symbol}; "
                    f"it is not Intel's libsgx_qe3_logic.so. To fix: {INSTALL_LIBRARY_HINT}."
                ) from None
            continue
        fn.argtypes = argtypes
        fn.restype = restype
        fns[symbol] = fn
    return fns


def _raise_for(status: int, call: str) -> None:
    if status != QuoteLibStatus.SUCCESS:
        raise EngineError(QuoteLibStatus(int(status)), call)


def _trim(buf: bytes) -> bytes:
    """The quote without the buffer's tail: 436 + signature_data_len for SGX v3/v4 quotes."""
    if len(buf) < _QUOTE_SIG_DATA_OFFSET:
        return buf
    version, _key_type, tee_type = struct.unpack_from("<HHI", buf, 0)
    if version in (3, 4) and tee_type == 0:
        (sig_len,) = struct.unpack_from("<I", buf, _QUOTE_SIG_LEN_OFFSET)
        end = _QUOTE_SIG_DATA_OFFSET + sig_len
        if end <= len(buf):
            return buf[:end]
    return buf


__all__ = ["SGX_QL_EPHEMERAL", "SGX_QL_PERSISTENT", "DcapEngine"]
