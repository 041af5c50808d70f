"""Finding and loading Intel's TDX quote library on a TDX host (the ``tdx`` QGS engine's setup).

Facts from Intel's sources (intel/SGXDataCenterAttestationPrimitives, QuoteGeneration):

- the ``tee_att_*`` calls Intel's QGS makes (``quote_wrapper/qgs/qgs_ql_logic.cpp``) are exported
  by **libsgx_tdx_logic.so.1** (``quote_wrapper/tdx_quote/linux/td_ql_logic.lds``: create/free
  context, init_quote, get_quote_size, get_quote, get_keyid, set_path, get_qpl_handle,
  get_platform_info; Debian package ``libsgx-tdx-logic``). It links libsgx_pce_logic and the urts
  itself, so one load is enough;
- the enclaves are SGX enclaves on the host: the TDQE (``libsgx_tdqe.signed.so.1``, package
  ``libsgx-ae-tdqe``), the PCE (``libsgx-ae-pce``) and the ID enclave (``libsgx-ae-id-enclave``);
  they are loaded by ``tee_att_init_quote`` (``tee_att_create_context`` only allocates), so
  start-up calls it, as QGS does when it creates a thread's context;
- the quote provider library is ``libdcap_quoteprov.so.1`` (``TEE_ATT_QUOTE_CONFIG_LIB_FILE_NAME``)
  unless ``tee_att_set_path(TEE_ATT_QPL)`` names another; ``tee_att_get_qpl_handle`` answers
  ``TEE_ATT_PLATFORM_LIB_UNAVAILABLE`` when it cannot be opened;
- the devices are the same as SGX's (``/dev/sgx_enclave``, ``/dev/sgx_provision``): see
  :mod:`.dcap_library`, whose checks this module shares.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ..abi.codes import TeeAttStatus
from ..errors import ConfigError
from .dcap_library import EPC_HINT, INSTALL_DEVICE_HINT, PERMISSION_HINT, RESTART_HINT, Problems

#: the library that exports the tee_att_* calls (versioned, as the Debian package installs it)
TDX_LOGIC_LIBRARY = "libsgx_tdx_logic.so.1"
#: what the message names the engine
ENGINE_TITLE = "the TDX quote engine"

# tee_att_ae_type_t (td_ql_wrapper.h): what tee_att_set_path sets
TEE_ATT_TDQE = 0
TEE_ATT_PCE = 1
TEE_ATT_QPL = 2
TEE_ATT_IDE = 3

INSTALL_TDX_LIBRARY_HINT = (
    "install Intel's TDX quote library from Intel's SGX package repository "
    "(https://download.01.org/intel-sgx/sgx_repo/ubuntu): `apt-get install libsgx-tdx-logic "
    "libsgx-ae-tdqe libsgx-ae-pce libsgx-ae-id-enclave` (tdx-qgs pulls them too), plus a quote "
    "provider library: libsgx-dcap-default-qpl (for a PCCS)"
)
TDQE_ENCLAVE_HINT = (
    "install libsgx-ae-tdqe, libsgx-ae-pce and libsgx-ae-id-enclave at the same DCAP version as "
    "libsgx-tdx-logic (libsgx_tdqe.signed.so.1 in the library's directory, or --tdqe-path) and make "
    "them readable by the service; the SGX devices must be usable (" + INSTALL_DEVICE_HINT + ")"
)
PCE_HINT = (
    "the PCE could not be loaded: install libsgx-ae-pce and libsgx-pce-logic at the same DCAP "
    "version as libsgx-tdx-logic"
)
PROVISION_HINT = (
    "the TDQE and the PCE need the provision key: the service must be able to open sgx_provision "
    "(" + PERMISSION_HINT + ")"
)
QPL_HINT = (
    "the TDQE gets this platform's PCK certificate data from the quote provider library: install "
    "libsgx-dcap-default-qpl and point /etc/sgx_default_qcnl.conf at a PCCS that knows this "
    "platform (or pass --qpl-path)"
)
NETWORK_HINT = (
    "the quote provider library cannot reach its PCCS: check /etc/sgx_default_qcnl.conf and the PCCS"
)
GENERIC_HINT = (
    "check that libsgx-tdx-logic, libsgx-ae-tdqe, libsgx-ae-pce and libsgx-ae-id-enclave are "
    "installed at one DCAP version, the SGX devices are usable, and the quote provider library is "
    "configured"
)

#: what fixes a failure, by the tee_att_error_t that names it
_HINTS: dict[TeeAttStatus, str] = {
    TeeAttStatus.ENCLAVE_LOAD_ERROR: TDQE_ENCLAVE_HINT,
    TeeAttStatus.INTERFACE_UNAVAILABLE: PCE_HINT,
    TeeAttStatus.OUT_OF_EPC: EPC_HINT,
    TeeAttStatus.ERROR_OUT_OF_MEMORY: EPC_HINT,
    TeeAttStatus.ERROR_INVALID_PRIVILEGE: PROVISION_HINT,
    TeeAttStatus.NO_DEVICE: INSTALL_DEVICE_HINT,
    TeeAttStatus.ENCLAVE_LOST: RESTART_HINT,
    TeeAttStatus.PLATFORM_LIB_UNAVAILABLE: QPL_HINT,
    TeeAttStatus.NO_PLATFORM_CERT_DATA: QPL_HINT,
    TeeAttStatus.ATT_KEY_CERT_DATA_INVALID: QPL_HINT,
    TeeAttStatus.KEY_CERTIFCATION_ERROR: QPL_HINT,
    TeeAttStatus.NETWORK_ERROR: NETWORK_HINT,
    TeeAttStatus.NETWORK_FAILURE: NETWORK_HINT,
    TeeAttStatus.SERVICE_UNAVAILABLE: NETWORK_HINT,
    TeeAttStatus.SERVICE_TIMEOUT: NETWORK_HINT,
}


def hint(status: TeeAttStatus) -> str:
    """What fixes a failure named by ``status`` (a generic checklist when unknown)."""
    return _HINTS.get(status, GENERIC_HINT)


def status_text(status: int) -> str:
    """``TEE_ATT_NAME (0x1100f)``."""
    named = TeeAttStatus(int(status))
    name = named.name if named.name.startswith("UNKNOWN_") else "TEE_ATT_" + named.name
    return f"{name} ({int(status):#07x})"


class PlatformInfo(ctypes.Structure):
    """``tee_platform_info_t`` (``#pragma pack(1)``): what GET_PLATFORM_INFO answers."""

    _pack_ = 1
    _fields_ = [
        ("platform_id", ctypes.c_uint8 * 16),  # sgx_key_128bit_t
        ("cpu_svn", ctypes.c_uint8 * 16),  # sgx_cpu_svn_t
        ("tdqe_isv_svn", ctypes.c_uint16),
        ("pce_isv_svn", ctypes.c_uint16),
    ]


class Collateral(ctypes.Structure):
    """``tdx_ql_qv_collateral_t`` = ``sgx_ql_qve_collateral_t`` (``sgx_ql_lib_common.h``, natural
    alignment): version (major u16, minor u16), tee_type, then seven (char *, uint32_t) pairs."""

    _fields_ = [
        ("major_version", ctypes.c_uint16),
        ("minor_version", ctypes.c_uint16),
        ("tee_type", ctypes.c_uint32),
        ("pck_crl_issuer_chain", ctypes.c_void_p),
        ("pck_crl_issuer_chain_size", ctypes.c_uint32),
        ("root_ca_crl", ctypes.c_void_p),
        ("root_ca_crl_size", ctypes.c_uint32),
        ("pck_crl", ctypes.c_void_p),
        ("pck_crl_size", ctypes.c_uint32),
        ("tcb_info_issuer_chain", ctypes.c_void_p),
        ("tcb_info_issuer_chain_size", ctypes.c_uint32),
        ("tcb_info", ctypes.c_void_p),
        ("tcb_info_size", ctypes.c_uint32),
        ("qe_identity_issuer_chain", ctypes.c_void_p),
        ("qe_identity_issuer_chain_size", ctypes.c_uint32),
        ("qe_identity", ctypes.c_void_p),
        ("qe_identity_size", ctypes.c_uint32),
    ]

    #: the seven blobs in GET_COLLATERAL_RESP order
    BLOBS = (
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "qe_identity_issuer_chain",
        "qe_identity",
    )


_S = ctypes.c_uint32  # tee_att_error_t: a C enum of 32-bit values
_P = ctypes.c_void_p

#: symbol -> (argtypes, restype, required), prototypes of td_ql_wrapper.h
PROTOTYPES: dict[str, tuple[list[Any], Any, bool]] = {
    # (const tee_att_att_key_id_t *, const char *p_qe_path, tee_att_config_t **pp_context)
    "tee_att_create_context": ([_P, ctypes.c_char_p, ctypes.POINTER(_P)], _S, True),
    "tee_att_free_context": ([_P], _S, True),
    # (ctx, sgx_target_info_t *, bool refresh_att_key, size_t *p_pub_key_id_size, uint8_t *)
    "tee_att_init_quote": ([_P, _P, ctypes.c_bool, ctypes.POINTER(ctypes.c_size_t), _P], _S, True),
    "tee_att_get_quote_size": ([_P, ctypes.POINTER(ctypes.c_uint32)], _S, True),
    # (ctx, const uint8_t *p_report, uint32_t report_size, sgx_qe_report_info_t *, uint8_t *, uint32_t)
    "tee_att_get_quote": ([_P, _P, ctypes.c_uint32, _P, _P, ctypes.c_uint32], _S, True),
    "tee_att_get_keyid": ([_P, _P], _S, False),
    "tee_att_set_path": ([_P, ctypes.c_int, ctypes.c_char_p], _S, False),
    "tee_att_get_qpl_handle": ([_P, ctypes.POINTER(_P)], _S, False),
    "tee_att_get_platform_info": ([_P, ctypes.POINTER(PlatformInfo)], _S, False),
}


def load_library(library: str, problems: Problems) -> ctypes.CDLL | None:
    """Load the TDX quote library (a name for the dynamic loader, or a path)."""
    try:
        return ctypes.CDLL(library)
    except OSError as exc:
        problems.add(f"cannot load {library} ({exc})", INSTALL_TDX_LIBRARY_HINT)
        return None


def bind(lib: ctypes.CDLL, library: str) -> dict[str, Any]:
    """The library's tee_att_* calls with their prototypes (a required one missing: ConfigError)."""
    fns: dict[str, Any] = {}
    for symbol, (argtypes, restype, required) in PROTOTYPES.items():
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            if required:
                raise ConfigError(
                    f"{ENGINE_TITLE} cannot start: {library} does not export {symbol}; it is not "
                    f"Intel's libsgx_tdx_logic. To fix: {INSTALL_TDX_LIBRARY_HINT}."
                ) from None
            continue
        fn.argtypes = argtypes
        fn.restype = restype
        fns[symbol] = fn
    return fns


__all__ = [
    "ENGINE_TITLE",
    "INSTALL_TDX_LIBRARY_HINT",
    "PROTOTYPES",
    "TDX_LOGIC_LIBRARY",
    "TEE_ATT_IDE",
    "TEE_ATT_PCE",
    "TEE_ATT_QPL",
    "TEE_ATT_TDQE",
    "Collateral",
    "PlatformInfo",
    "bind",
    "hint",
    "load_library",
    "status_text",
]
