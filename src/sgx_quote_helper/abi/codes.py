"""Status code tables: AESM ``aesm_error_t`` and DCAP ``quote3_error_t``.

Both enums tolerate unknown values: ``AesmStatus(99)`` gives a pseudo-member named ``UNKNOWN_99``
instead of raising, so a daemon or library that grows new codes never crashes a parser.

Sources: intel/linux-sgx ``psw/ae/inc/internal/aesm_error.h`` (AESM codes; see
``shared/specs/aesm-protocol.md`` §5) and DCAP ``QuoteGeneration/quote_wrapper/common/inc/
sgx_ql_lib_common.h`` (quote3_error_t = 0xE000 | n).
"""

from __future__ import annotations

import enum


class _Tolerant(enum.IntEnum):
    @classmethod
    def _missing_(cls, value: object) -> enum.IntEnum | None:
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value:#x}" if value > 0xFF else f"UNKNOWN_{value}"
        member._value_ = value
        return member


class AesmStatus(_Tolerant):
    """``aesm_error_t``: the ``errorCode`` of every AESM response."""

    SUCCESS = 0
    UNEXPECTED_ERROR = 1
    NO_DEVICE_ERROR = 2
    PARAMETER_ERROR = 3
    EPIDBLOB_ERROR = 4
    EPID_REVOKED_ERROR = 5
    GET_LICENSETOKEN_ERROR = 6
    SESSION_INVALID = 7
    MAX_NUM_SESSION_REACHED = 8
    PSDA_UNAVAILABLE = 9
    EPH_SESSION_FAILED = 10
    LONG_TERM_PAIRING_FAILED = 11
    NETWORK_ERROR = 12
    NETWORK_BUSY_ERROR = 13
    PROXY_SETTING_ASSIST = 14
    FILE_ACCESS_ERROR = 15
    SGX_PROVISION_FAILED = 16
    SERVICE_STOPPED = 17
    BUSY = 18
    BACKEND_SERVER_BUSY = 19
    UPDATE_AVAILABLE = 20
    OUT_OF_MEMORY_ERROR = 21
    MSG_ERROR = 22
    THREAD_ERROR = 23
    SGX_DEVICE_NOT_AVAILABLE = 24
    ENABLE_SGX_DEVICE_FAILED = 25
    PLATFORM_INFO_BLOB_INVALID_SIG = 26
    KDF_MISMATCH = 28
    OUT_OF_EPC = 29
    SERVICE_UNAVAILABLE = 30
    UNRECOGNIZED_PLATFORM = 31
    ECDSA_ID_MISMATCH = 32
    PATHNAME_BUFFER_OVERFLOW_ERROR = 33
    ERROR_STORED_KEY = 34
    PUB_KEY_ID_MISMATCH = 35
    INVALID_PCE_SIG_SCHEME = 36
    ATT_KEY_BLOB_ERROR = 37
    UNSUPPORTED_ATT_KEY_ID = 38
    UNSUPPORTED_LOADING_POLICY = 39
    INTERFACE_UNAVAILABLE = 40
    PLATFORM_LIB_UNAVAILABLE = 41
    ATT_KEY_NOT_INITIALIZED = 42
    ATT_KEY_CERT_DATA_INVALID = 43
    NO_PLATFORM_CERT_DATA = 44
    ERROR_REPORT = 45
    ENCLAVE_LOST = 46
    INVALID_REPORT = 47
    ENCLAVE_LOAD_ERROR = 48
    UNABLE_TO_GENERATE_QE_REPORT = 49
    KEY_CERTIFICATION_ERROR = 50
    CONFIG_UNSUPPORTED = 51


class QuoteLibStatus(_Tolerant):
    """``quote3_error_t`` of DCAP's quote library (generation side)."""

    SUCCESS = 0x0000
    ERROR_UNEXPECTED = 0xE001
    ERROR_INVALID_PARAMETER = 0xE002
    ERROR_OUT_OF_MEMORY = 0xE003
    ERROR_ECDSA_ID_MISMATCH = 0xE004
    PATHNAME_BUFFER_OVERFLOW_ERROR = 0xE005
    FILE_ACCESS_ERROR = 0xE006
    ERROR_STORED_KEY = 0xE007
    ERROR_PUB_KEY_ID_MISMATCH = 0xE008
    ERROR_INVALID_PCE_SIG_SCHEME = 0xE009
    ATT_KEY_BLOB_ERROR = 0xE00A
    UNSUPPORTED_ATT_KEY_ID = 0xE00B
    UNSUPPORTED_LOADING_POLICY = 0xE00C
    INTERFACE_UNAVAILABLE = 0xE00D
    PLATFORM_LIB_UNAVAILABLE = 0xE00E
    ATT_KEY_NOT_INITIALIZED = 0xE00F
    ATT_KEY_CERT_DATA_INVALID = 0xE010
    NO_PLATFORM_CERT_DATA = 0xE011
    OUT_OF_EPC = 0xE012
    ERROR_REPORT = 0xE013
    ENCLAVE_LOST = 0xE014
    INVALID_REPORT = 0xE015
    ENCLAVE_LOAD_ERROR = 0xE016
    UNABLE_TO_GENERATE_QE_REPORT = 0xE017
    KEY_CERTIFCATION_ERROR = 0xE018  # sic: Intel's spelling
    NETWORK_ERROR = 0xE019
    MESSAGE_ERROR = 0xE01A
    NO_QUOTE_COLLATERAL_DATA = 0xE01B
    NO_DEVICE = 0xE03F
    SERVICE_UNAVAILABLE = 0xE040
    NETWORK_FAILURE = 0xE041
    SERVICE_TIMEOUT = 0xE042
    ERROR_BUSY = 0xE043


__all__ = ["AesmStatus", "QuoteLibStatus"]
