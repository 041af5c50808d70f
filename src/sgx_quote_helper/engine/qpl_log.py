"""The quote provider library's log, routed into ours (as aesmd does), rate-limited.

Intel's aesmd hands the QPL a logging callback at start (``ecdsa_quote_service_bundle.cpp``:
``dlsym(get_qpl_handle(), "sgx_ql_set_logging_callback")``, then
``ql_set_logging_callback(cb, qpl_log_level)``). The prototypes are DCAP's
(``QuoteGeneration/quote_wrapper/common/inc/sgx_ql_lib_common.h``)::

    typedef enum { SGX_QL_LOG_ERROR, SGX_QL_LOG_INFO, SGX_QL_LOG_DEBUG, SGX_QL_LOG_TRACE }
        sgx_ql_log_level_t;
    typedef void (*sgx_ql_logging_callback_t)(sgx_ql_log_level_t level, const char *message);
    quote3_error_t sgx_ql_set_logging_callback(sgx_ql_logging_callback_t logger,
                                               sgx_ql_log_level_t loglevel);

The QPL passes on messages at or below ``loglevel``. Its lines ("[QPL] No certificate data for
this platform.", "[QCNL] ...") explain failed quotes, so they reach the operator; a node whose PCCS
is down would otherwise write one per request, so at most ``burst`` lines pass per ``window``
seconds and the number held back is reported when the next window opens.

The C callback is created once per process and never freed: the QPL keeps the pointer for the
life of the process, so a collected thunk would be a crash at its next message.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# sgx_ql_log_level_t
SGX_QL_LOG_ERROR = 0
SGX_QL_LOG_INFO = 1
SGX_QL_LOG_DEBUG = 2
SGX_QL_LOG_TRACE = 3

#: the QPL's levels in ours: its errors explain failed quotes, its info lines are per request
LEVELS = {
    SGX_QL_LOG_ERROR: logging.ERROR,
    SGX_QL_LOG_INFO: logging.INFO,
    SGX_QL_LOG_DEBUG: logging.DEBUG,
    SGX_QL_LOG_TRACE: logging.DEBUG,
}
#: longest message kept (the QPL's lines are short; a broken one must not flood the log)
MAX_MESSAGE = 1000

#: void (*)(sgx_ql_log_level_t level, const char *message)
CALLBACK_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)


class RateLimitedLog:
    """At most ``burst`` lines per ``window`` seconds into ``logger``; the rest counted.

    Args:
        logger: where the lines go.
        burst: lines let through per window.
        window: window length in seconds.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        burst: int = 20,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._passed = 0
        self._held = 0

    def emit(self, level: int, message: str) -> None:
        """Log ``message`` at ``level`` unless this window's burst is spent."""
        now = self.clock()
        with self._lock:
            held = 0
            if now - self._start >= self.window:
                held, self._held = self._held, 0
                self._start, self._passed = now, 0
            passing = self._passed < self.burst
            if passing:
                self._passed += 1
            else:
                self._held += 1
        if held:
            self.logger.warning(
                "[QPL] %d more quote provider library messages were held back in %g s", held, self.window
            )
        if passing:
            self.logger.log(level, "%s", message)


#: the process's one router of QPL messages (tests may swap its fields)
ROUTER = RateLimitedLog()


def qpl_message(level: int, raw: bytes | None) -> None:
    """The body of the C callback: decode, bound, map the level, never raise."""
    try:
        if raw is None:
            return
        text = raw.decode("utf-8", "replace").strip()[:MAX_MESSAGE]
        if text:
            ROUTER.emit(LEVELS.get(int(level), logging.INFO), text)
    except Exception:  # an exception must never unwind into C
        pass


_callback_lock = threading.Lock()
_callback: Any = None


def callback() -> Any:
    """The process's C callback (created on first use, kept for the life of the process)."""
    global _callback
    with _callback_lock:
        if _callback is None:
            _callback = CALLBACK_TYPE(qpl_message)
        return _callback


def level_for(logger: logging.Logger = log) -> int:
    """The QPL level to ask for: aesmd's default ERROR, INFO when our log shows DEBUG."""
    return SGX_QL_LOG_INFO if logger.isEnabledFor(logging.DEBUG) else SGX_QL_LOG_ERROR


def attach(handle: int, name: str, describe: Callable[[int], str] = hex) -> Any:
    """Hand the QPL opened at ``handle`` (a ``dlopen`` handle from the quote library) our callback.

    What aesmd's ECDSA bundle does with ``get_qpl_handle()`` and Intel's QGS with
    ``tee_att_get_qpl_handle()``: ``dlsym(handle, "sgx_ql_set_logging_callback")``, then call it.
    The library is reached through the same handle (not a new load) and never ``dlclose``'d, so it
    and the callback it stores stay loaded. Returns the callback (``None`` when the QPL does not
    export the call); a refusal is logged (its status through ``describe``), never raised.
    """
    qpl = ctypes.CDLL(name, handle=handle)
    try:
        set_callback = qpl.sgx_ql_set_logging_callback
    except AttributeError:
        log.info("%s does not export sgx_ql_set_logging_callback: its messages go to its own log", name)
        return None
    set_callback.argtypes = [CALLBACK_TYPE, ctypes.c_int]
    set_callback.restype = ctypes.c_uint32
    cb = callback()
    status = int(set_callback(cb, level_for()))
    if status != 0:
        log.warning("%s refused our logging callback: %s", name, describe(status))
    return cb


__all__ = [
    "CALLBACK_TYPE",
    "LEVELS",
    "ROUTER",
    "SGX_QL_LOG_DEBUG",
    "SGX_QL_LOG_ERROR",
    "SGX_QL_LOG_INFO",
    "SGX_QL_LOG_TRACE",
    "RateLimitedLog",
    "attach",
    "callback",
    "level_for",
    "qpl_message",
]
