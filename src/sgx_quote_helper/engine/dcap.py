"""The hardware quoting engine: Intel's DCAP quote library (QE3 + PCE) through ctypes.

It does what Intel's aesmd ECDSA quote service bundle does (``psw/ae/aesm_service/source/bundles/
ecdsa_quote_service_bundle``): at start it sets the enclave load policy to PERSISTENT, loads QE3
(``load_qe``) so a broken node fails at start-up rather than at the first quote, and reads the key
id from ``sgx_ql_get_keyid``; requests then call the core functions of libsgx_qe3_logic.so inside
this process (prototypes from ``QuoteGeneration/quote_wrapper/quote/inc/sgx_ql_core_wrapper.h``)::

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

Library statuses are raised as ``EngineError(QuoteLibStatus)``; ``service`` maps them to AESM codes
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

from ..abi.codes import QuoteLibStatus
from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.quote import SGX_SIGNATURE_DATA_LEN_OFFSET, SGX_SIGNATURE_DATA_OFFSET
from ..abi.report import Report, TargetInfo
from ..errors import ConfigError, EngineError
from .base import InitQuoteResult, QuoteResult
from .dcap_library import (
    INSTALL_LIBRARY_HINT,
    QE3_LOGIC_LIBRARY,
    Problems,
    check_devices,
    load_libraries,
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

#: symbol -> (argtypes, required)
_PROTOTYPES: dict[str, tuple[list[Any], bool]] = {
    "sgx_ql_set_enclave_load_policy": ([ctypes.c_int], True),
    "sgx_ql_init_quote": ([_P, _P, ctypes.c_bool, ctypes.POINTER(ctypes.c_size_t), _P], True),
    "sgx_ql_get_quote_size": ([_P, ctypes.POINTER(ctypes.c_uint32)], True),
    "sgx_ql_get_quote": ([_P, _P, _P, _P, ctypes.c_uint32], True),
    "sgx_ql_get_keyid": ([_P], False),
    "sgx_set_qpl_path": ([ctypes.c_char_p], False),
    "load_qe": ([ctypes.POINTER(ctypes.c_uint64), _P, _P], False),
}


def _status_name(status: int) -> str:
    s = QuoteLibStatus(status)
    return f"{s.name} ({int(s):#06x})"


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
            calls, or QE3 cannot be loaded; the message says what is missing and how to install it.
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
        if "load_qe" in self._fn:
            eid = ctypes.c_uint64(0)
            misc = ctypes.create_string_buffer(_MISC_ATTRIBUTE_SIZE)
            token = ctypes.create_string_buffer(_LAUNCH_TOKEN_SIZE)
            self._start_call("load_qe", ctypes.byref(eid), misc, token, what="load the QE3 enclave")
        self._key_id = self._read_key_id()
        log.info("DCAP engine ready: %s, enclave load policy PERSISTENT", library)

    # -- start-up ------------------------------------------------------------------------------

    def _start_call(self, symbol: str, *args: Any, what: str) -> None:
        status = int(self._fn[symbol](*args))
        if status != QuoteLibStatus.SUCCESS:
            raise ConfigError(
                f"the DCAP hardware engine cannot start: {symbol} failed to {what}: "
                f"{_status_name(status)}. Check that libsgx-ae-qe3, libsgx-ae-pce and "
                f"libsgx-ae-id-enclave are installed, the SGX devices are usable, and the quote "
                f"provider library is configured."
            )

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
        self, report: Report, key_id: AttKeyId, qe_report_info: QeReportInfo | None = None
    ) -> QuoteResult:
        """``sgx_ql_get_quote`` into a buffer of ``sgx_ql_get_quote_size`` bytes (one locked step)."""
        key = self._key_buffer(key_id)
        app_report = ctypes.create_string_buffer(report.to_bytes(), Report.SIZE)
        info = None
        if qe_report_info is not None:
            info = ctypes.create_string_buffer(qe_report_info.to_bytes(), QeReportInfo.SIZE)
        with self._lock:
            self._check_open()
            size = self._quote_size_locked(key)
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
            raise EngineError(QuoteLibStatus.SERVICE_UNAVAILABLE, "the DCAP engine is closed")


def _bind(lib: ctypes.CDLL, library: str) -> dict[str, Any]:
    fns: dict[str, Any] = {}
    for symbol, (argtypes, required) in _PROTOTYPES.items():
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
        fn.restype = _STATUS
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
