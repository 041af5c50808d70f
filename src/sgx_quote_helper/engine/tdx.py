"""The ``tdx`` QGS engine: Intel's TDX quote library (``libsgx_tdx_logic.so.1``) through ctypes.

It makes the calls Intel's QGS makes (``QuoteGeneration/quote_wrapper/qgs/qgs_ql_logic.cpp``),
with the prototypes of ``quote_wrapper/tdx_quote/inc/td_ql_wrapper.h``::

    tee_att_error_t tee_att_create_context(const tee_att_att_key_id_t *p_att_key_id,
                                           const char *p_qe_path, tee_att_config_t **pp_context);
    tee_att_error_t tee_att_free_context(tee_att_config_t *p_context);
    tee_att_error_t tee_att_init_quote(const tee_att_config_t *p_context,
                                       sgx_target_info_t *p_qe_target_info, bool refresh_att_key,
                                       size_t *p_pub_key_id_size, uint8_t *p_pub_key_id);
    tee_att_error_t tee_att_get_quote_size(const tee_att_config_t *p_context, uint32_t *p_quote_size);
    tee_att_error_t tee_att_get_quote(const tee_att_config_t *p_context, const uint8_t *p_report,
                                      uint32_t report_size, sgx_qe_report_info_t *p_qe_report_info,
                                      uint8_t *p_quote, uint32_t quote_size);
    tee_att_error_t tee_att_set_path(const tee_att_config_t *p_context, tee_att_ae_type_t type,
                                     const char *p_path);
    tee_att_error_t tee_att_get_qpl_handle(const tee_att_config_t *p_context, void **pp_qpl_handle);
    tee_att_error_t tee_att_get_platform_info(const tee_att_config_t *p_context,
                                              tee_platform_info_t *p_platform_info);

As QGS does:

- one context per worker thread (QGS: a ``boost::thread_specific_ptr`` per pool thread), so
  quotes run in parallel, each context used by one thread at a time. Here the ``contexts`` are
  created at start and lent to the server's workers (as many as ``--workers``: a worker never
  waits for one). The context's first use in QGS is ``tee_att_create_context(NULL, NULL, ...)``,
  the QPL logging callback (``tee_att_get_qpl_handle`` + ``sgx_ql_set_logging_callback`` at
  ERROR) and ``tee_att_init_quote(refresh=false)`` with a 32-byte hash buffer; here that happens
  for every context at start, so a broken host fails at start-up naming the code and the fix
  (QGS would close each request's connection without a reply);
- GET_QUOTE: ``tee_att_get_quote_size``, a buffer of that size, ``tee_att_get_quote`` (no QE report
  info); when either answers ``TEE_ATT_ATT_KEY_NOT_INITIALIZED`` the key is refreshed
  (``tee_att_init_quote(refresh=true)``) and the two calls are made once more;
- GET_PLATFORM_INFO: ``tee_att_get_platform_info``; GET_COLLATERAL: the QPL's
  ``tdx_ql_get_quote_verification_collateral`` / ``tdx_ql_free_quote_verification_collateral``
  found with ``dlsym`` on ``tee_att_get_qpl_handle``'s handle;
- every failure raises :class:`EngineError` with the ``tee_att_error_t`` (``TeeAttStatus``); the
  QGS service answers it with ``QGS_MSG_ERROR_UNEXPECTED`` (0x12001), the only code Intel's
  ``get_resp`` puts in an error response.

The quote is the whole buffer of ``tee_att_get_quote_size`` bytes, as QGS sends it
(``qgs_msg_gen_get_quote_resp(NULL, 0, quote_buf.data(), size, ...)``): the library's size may
exceed the quote, and real QGS quotes carry that zero tail (the real vector
``tdx/phala-tdx-v4`` has 70 bytes past its signature data); verifiers ignore it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..abi.codes import TeeAttStatus
from ..abi.report import TargetInfo
from ..errors import ConfigError, EngineError, EngineUnavailableError
from . import qpl_log
from .dcap_library import Problems, check_devices, unset_aesm_addr
from .tdx_base import TdxPlatformInfo
from .tdx_library import (
    ENGINE_TITLE,
    TDX_LOGIC_LIBRARY,
    TEE_ATT_QPL,
    TEE_ATT_TDQE,
    Collateral,
    PlatformInfo,
    bind,
    hint,
    load_library,
    status_text,
)

log = logging.getLogger(__name__)

#: the hash buffer QGS hands tee_att_init_quote (sizeof(sha256))
PUB_KEY_ID_SIZE = 32
#: the largest quote size accepted from the library (QGS messages are at most 1 MiB here)
MAX_QUOTE_SIZE = 1 << 20
#: the QPL's name when no --qpl-path is set (td_ql_logic.cpp TEE_ATT_QUOTE_CONFIG_LIB_FILE_NAME)
DEFAULT_QPL = "libdcap_quoteprov.so.1"

_COLLATERAL_GET = "tdx_ql_get_quote_verification_collateral"
_COLLATERAL_FREE = "tdx_ql_free_quote_verification_collateral"


class TdxLibraryEngine:
    """TD quotes from Intel's TDX quote library, ``contexts`` quoting in parallel.

    Args:
        library: the TDX quote library (file name searched by the dynamic loader, or a path).
        device_root: where ``sgx_enclave``/``sgx_provision`` live (``/dev``; injectable for tests).
        contexts: how many library contexts (the server's worker count).
        qpl_path: optional quote provider library, set with ``tee_att_set_path(TEE_ATT_QPL)``.
        tdqe_path: optional TDQE enclave file, set with ``tee_att_set_path(TEE_ATT_TDQE)``.

    Raises:
        ConfigError: a device or the library is missing or unusable, the library lacks a core
            call, or a context cannot be created or initialised; the message names the
            ``tee_att_error_t`` and how to fix it.
    """

    name = "tdx"

    def __init__(
        self,
        *,
        library: str = TDX_LOGIC_LIBRARY,
        device_root: Path = Path("/dev"),
        contexts: int = 1,
        qpl_path: str | None = None,
        tdqe_path: str | None = None,
    ) -> None:
        if contexts < 1:
            raise ConfigError(f"{ENGINE_TITLE} needs at least one context, got {contexts}")
        self._cond = threading.Condition()
        self._idle: list[int] = []
        self._all: list[int] = []
        self._closed = False
        self._qpl_name = qpl_path or DEFAULT_QPL
        self._qpl_callback: Any = None
        problems = Problems(engine=ENGINE_TITLE)
        check_devices(Path(device_root), problems)
        unset_aesm_addr()  # before the library (and its urts) is loaded
        lib = load_library(library, problems)
        problems.raise_if_any()
        assert lib is not None
        self.library = library
        self._fn = bind(lib, library)
        for option, symbol_type in ((qpl_path, TEE_ATT_QPL), (tdqe_path, TEE_ATT_TDQE)):
            if option is not None and "tee_att_set_path" not in self._fn:
                raise ConfigError(
                    f"{ENGINE_TITLE} cannot start: {library} does not export tee_att_set_path, so "
                    f"{option} cannot be used (type {symbol_type}); install the file where the "
                    f"library looks for it instead"
                )
        try:
            for index in range(contexts):
                ctx = self._create_context(index, qpl_path, tdqe_path)
                if index == 0:
                    self._route_qpl_log(ctx)
                self._start_init(ctx, index)
        except ConfigError:
            self._free_all()
            raise
        self._idle = list(self._all)
        log.info("TDX engine ready: %s, %d context(s), TDQE key initialised", library, contexts)

    # -- start-up ------------------------------------------------------------------------------

    def _start_error(self, call: str, what: str, status: int) -> ConfigError:
        named = TeeAttStatus(int(status))
        return ConfigError(
            f"{ENGINE_TITLE} cannot start: {call} failed to {what}: {status_text(named)}. "
            f"To fix: {hint(named)}."
        )

    def _create_context(self, index: int, qpl_path: str | None, tdqe_path: str | None) -> int:
        ctx = ctypes.c_void_p(None)
        status = int(self._fn["tee_att_create_context"](None, None, ctypes.byref(ctx)))
        if status != TeeAttStatus.SUCCESS:
            raise self._start_error("tee_att_create_context", f"create context {index}", status)
        if not ctx.value:
            raise ConfigError(f"{ENGINE_TITLE} cannot start: tee_att_create_context returned no context")
        self._all.append(ctx.value)
        for path, kind, label in ((qpl_path, TEE_ATT_QPL, "QPL"), (tdqe_path, TEE_ATT_TDQE, "TDQE")):
            if path is not None:
                status = int(self._fn["tee_att_set_path"](ctx.value, kind, path.encode()))
                if status != TeeAttStatus.SUCCESS:
                    raise self._start_error("tee_att_set_path", f"set the {label} path {path}", status)
        return ctx.value

    def _start_init(self, ctx: int, index: int) -> None:
        status = self._init_quote(ctx, refresh=False)
        if status != TeeAttStatus.SUCCESS:
            raise self._start_error(
                "tee_att_init_quote", f"load the TDQE and its attestation key (context {index})", status
            )

    def _route_qpl_log(self, ctx: int) -> None:
        """QGS's first use of a context: the QPL's log into ours (at ERROR as QGS asks; INFO
        too when our log shows DEBUG)."""
        handle = self._qpl_handle(ctx)
        if handle is None:
            log.warning(
                "no quote provider library could be opened (%s): the TDQE cannot get this platform's "
                "PCK certificate data and GET_COLLATERAL fails. To fix: install "
                "libsgx-dcap-default-qpl (for a PCCS), or pass --qpl-path",
                self._qpl_name,
            )
            return
        self._qpl_callback = qpl_log.attach(handle, self._qpl_name, status_text)

    def _qpl_handle(self, ctx: int) -> int | None:
        if "tee_att_get_qpl_handle" not in self._fn:
            return None
        handle = ctypes.c_void_p(None)
        status = int(self._fn["tee_att_get_qpl_handle"](ctx, ctypes.byref(handle)))
        if status != TeeAttStatus.SUCCESS or not handle.value:
            log.debug("tee_att_get_qpl_handle: %s", status_text(status))
            return None
        return int(handle.value)

    def _init_quote(self, ctx: int, *, refresh: bool) -> int:
        target = ctypes.create_string_buffer(TargetInfo.SIZE)
        size = ctypes.c_size_t(PUB_KEY_ID_SIZE)
        pub = ctypes.create_string_buffer(PUB_KEY_ID_SIZE)
        return int(self._fn["tee_att_init_quote"](ctx, target, refresh, ctypes.byref(size), pub))

    # -- contexts ---------------------------------------------------------------------------------

    @property
    def contexts(self) -> int:
        """How many library contexts quote in parallel."""
        return len(self._all)

    @contextmanager
    def _context(self) -> Iterator[int]:
        """Borrow an idle context (waits while all are busy: more callers than contexts)."""
        with self._cond:
            while not self._idle and not self._closed:
                self._cond.wait()
            if self._closed:
                raise EngineUnavailableError("the TDX engine is closed")
            ctx = self._idle.pop()
        try:
            yield ctx
        finally:
            with self._cond:
                self._idle.append(ctx)
                self._cond.notify()

    # -- the QGS engine ---------------------------------------------------------------------------

    def get_quote(self, report: bytes) -> bytes:
        """Quote a TDREPORT as QGS does (size, buffer, quote; one key refresh on NOT_INITIALIZED).

        Raises:
            EngineError: the library's tee_att_error_t (``TeeAttStatus``), or
                ``TEE_ATT_ERROR_UNEXPECTED`` for a quote size outside 1 B..1 MiB.
        """
        report = bytes(report)
        if len(report) > 0xFFFFFFFF:
            raise EngineError(TeeAttStatus.ERROR_INVALID_PARAMETER, "report larger than 4 GiB")
        with self._context() as ctx:
            status = TeeAttStatus.SUCCESS
            for attempt in range(2):
                if attempt:
                    log.info("TDQE attestation key not initialised: refreshing it (tee_att_init_quote)")
                    refreshed = self._init_quote(ctx, refresh=True)
                    if refreshed != TeeAttStatus.SUCCESS:
                        raise EngineError(TeeAttStatus(refreshed), "tee_att_init_quote (refresh)")
                size = ctypes.c_uint32(0)
                status = TeeAttStatus(int(self._fn["tee_att_get_quote_size"](ctx, ctypes.byref(size))))
                if status == TeeAttStatus.ATT_KEY_NOT_INITIALIZED:
                    continue
                _check(status, "tee_att_get_quote_size")
                if not 0 < size.value <= MAX_QUOTE_SIZE:
                    raise EngineError(
                        TeeAttStatus.ERROR_UNEXPECTED, f"library reported quote size {size.value}"
                    )
                out = ctypes.create_string_buffer(size.value)
                status = TeeAttStatus(
                    int(self._fn["tee_att_get_quote"](ctx, report, len(report), None, out, size.value))
                )
                if status == TeeAttStatus.ATT_KEY_NOT_INITIALIZED:
                    continue
                _check(status, "tee_att_get_quote")
                return out.raw
        raise EngineError(status, "the attestation key is still not initialised after a refresh")

    def platform_info(self) -> TdxPlatformInfo:
        """``tee_att_get_platform_info``: TDQE/PCE ISVSVN, QE ID, CPUSVN."""
        fn = self._fn.get("tee_att_get_platform_info")
        if fn is None:
            raise EngineError(
                TeeAttStatus.ERROR_UNEXPECTED, f"{self.library} has no tee_att_get_platform_info"
            )
        info = PlatformInfo()
        with self._context() as ctx:
            status = TeeAttStatus(int(fn(ctx, ctypes.byref(info))))
        _check(status, "tee_att_get_platform_info")
        return TdxPlatformInfo(
            info.tdqe_isv_svn, info.pce_isv_svn, bytes(info.platform_id), bytes(info.cpu_svn)
        )

    def collateral(self, fmspc: bytes, ca: str) -> tuple[tuple[int, int], tuple[bytes, ...]]:
        """The QPL's TDX collateral for ``fmspc`` and CA, as QGS fetches it.

        Raises:
            EngineError: no QPL, the QPL lacks the TDX collateral calls, or it refuses
                (``TEE_ATT_PLATFORM_LIB_UNAVAILABLE``, ``TEE_ATT_ERROR_UNEXPECTED``; the QPL's
                quote3_error_t is in the reason).
        """
        if len(fmspc) >= 0xFFFF:
            raise EngineError(TeeAttStatus.ERROR_INVALID_PARAMETER, "FMSPC of 65535 bytes or more")
        with self._context() as ctx:
            handle = self._qpl_handle(ctx)
        if handle is None:
            raise EngineError(
                TeeAttStatus.PLATFORM_LIB_UNAVAILABLE, f"no quote provider library ({self._qpl_name})"
            )
        qpl = ctypes.CDLL(self._qpl_name, handle=handle)
        try:
            get_fn = getattr(qpl, _COLLATERAL_GET)
            free_fn = getattr(qpl, _COLLATERAL_FREE)
        except AttributeError:
            raise EngineError(
                TeeAttStatus.ERROR_UNEXPECTED, f"{self._qpl_name} has no TDX collateral functions"
            ) from None
        get_fn.argtypes = [ctypes.c_char_p, ctypes.c_uint16, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        get_fn.restype = ctypes.c_uint32
        free_fn.argtypes = [ctypes.c_void_p]
        free_fn.restype = ctypes.c_uint32
        out = ctypes.c_void_p(None)
        ret = int(get_fn(bytes(fmspc), len(fmspc), ca.encode() + b"\0", ctypes.byref(out)))
        if ret != 0 or not out.value:
            raise EngineError(TeeAttStatus.ERROR_UNEXPECTED, f"{_COLLATERAL_GET} returned {ret:#06x}")
        try:
            coll = Collateral.from_address(out.value)
            blobs = tuple(_blob(coll, field) for field in Collateral.BLOBS)
            version = (int(coll.major_version), int(coll.minor_version))
        finally:
            free_fn(out)
        return version, blobs

    def close(self) -> None:
        """Free every context (waits for those lent out). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            while len(self._idle) < len(self._all):
                self._cond.wait()
        self._free_all()

    def _free_all(self) -> None:
        for ctx in self._all:
            status = int(self._fn["tee_att_free_context"](ctx))
            if status != TeeAttStatus.SUCCESS:
                log.warning("tee_att_free_context: %s", status_text(status))
        self._all.clear()
        self._idle.clear()


def _check(status: TeeAttStatus, call: str) -> None:
    if status != TeeAttStatus.SUCCESS:
        raise EngineError(status, call)


def _blob(coll: Collateral, field: str) -> bytes:
    size = int(getattr(coll, field + "_size"))
    ptr = getattr(coll, field)
    if size == 0:
        return b""
    if not ptr or size > MAX_QUOTE_SIZE:
        raise EngineError(TeeAttStatus.ERROR_UNEXPECTED, f"collateral {field}: {size} bytes at {ptr}")
    return ctypes.string_at(ptr, size)


__all__ = ["DEFAULT_QPL", "MAX_QUOTE_SIZE", "TdxLibraryEngine"]
