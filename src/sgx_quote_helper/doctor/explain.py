"""AESM ``errorCode`` values in plain words, with what to do about each (for the doctor's output).

Codes from ``aesm_error.h`` (``shared/specs/aesm-protocol.md`` §5); the causes are the ones seen
in the field (``shared/specs/kubernetes.md`` §4).
"""

from __future__ import annotations

from ..abi.codes import AesmStatus

_DAEMON_LOG = "look at the quote helper's log on this node (kubectl -n kube-system logs <quote-helper pod>)"

#: code -> (what it means, how to fix it)
EXPLANATIONS: dict[int, tuple[str, str]] = {
    AesmStatus.UNEXPECTED_ERROR: ("the daemon failed unexpectedly", _DAEMON_LOG),
    AesmStatus.NO_DEVICE_ERROR: (
        "the daemon sees no SGX device",
        "give the quote helper pod /dev/sgx_enclave and /dev/sgx_provision (device plugin resources "
        "or a privileged device mount); check that SGX is enabled in the BIOS",
    ),
    AesmStatus.PARAMETER_ERROR: (
        "the daemon rejected the request's parameters (an AESM that does not speak the quote-ex calls?)",
        "update the daemon (Intel aesmd with the ECDSA plugin, or sgx-quote-helper serve)",
    ),
    AesmStatus.NETWORK_ERROR: (
        "the daemon's quote provider could not reach the PCCS / PCS",
        "check the PCCS URL in the quote helper's sgx_default_qcnl.conf and the node's egress",
    ),
    AesmStatus.SGX_PROVISION_FAILED: (
        "provisioning failed",
        "check /dev/sgx_provision access of the quote helper and the PCCS registration",
    ),
    AesmStatus.SERVICE_STOPPED: ("the daemon is stopping", "retry; if it persists, " + _DAEMON_LOG),
    AesmStatus.BUSY: ("the daemon is overloaded and refused the request (BUSY)", "retry later"),
    AesmStatus.OUT_OF_MEMORY_ERROR: ("the daemon ran out of memory", _DAEMON_LOG),
    AesmStatus.SGX_DEVICE_NOT_AVAILABLE: (
        "the daemon cannot open the SGX device",
        "give the quote helper pod /dev/sgx_enclave (and /dev/sgx_provision); after a node upgrade "
        "the device may have moved from /dev/sgx to /dev/sgx_enclave",
    ),
    AesmStatus.OUT_OF_EPC: ("the platform is out of EPC memory", "stop enclaves or add EPC (BIOS setting)"),
    AesmStatus.SERVICE_UNAVAILABLE: (
        "the daemon's quoting service is unavailable (its quoting enclave or engine did not start)",
        _DAEMON_LOG,
    ),
    AesmStatus.UNSUPPORTED_ATT_KEY_ID: (
        "the daemon does not support the ECDSA P-256 key id",
        "install the ECDSA plugin of aesmd (libsgx-aesm-ecdsa-plugin) or use sgx-quote-helper serve",
    ),
    AesmStatus.PLATFORM_LIB_UNAVAILABLE: (
        "the daemon cannot load the quote provider library",
        "install libsgx-dcap-default-qpl (Intel PCCS) or az-dcap-client (Azure) in the quote helper's image",
    ),
    AesmStatus.ATT_KEY_NOT_INITIALIZED: (
        "the attestation key is not initialised although InitQuoteEx was sent (the daemon "
        "restarted between the two calls, or lost its key)",
        "run the doctor again; if it persists, " + _DAEMON_LOG,
    ),
    AesmStatus.ATT_KEY_CERT_DATA_INVALID: (
        "the PCK certificate data for the attestation key is invalid",
        "check the PCCS: it must serve this platform's PCK certificate (platform registered?)",
    ),
    AesmStatus.NO_PLATFORM_CERT_DATA: (
        "no PCK certificate for this platform: the quote provider could not get it from the PCCS",
        "check the PCCS URL (pccs_url) in the quote helper's sgx_default_qcnl.conf and that the "
        "platform is registered with that PCCS",
    ),
    AesmStatus.ENCLAVE_LOST: ("the quoting enclave was lost (power transition)", "retry"),
    AesmStatus.ENCLAVE_LOAD_ERROR: (
        "the quoting enclave (QE3/PCE) failed to load: usually /dev/sgx_provision is missing or the "
        "daemon is not allowed to use it (0x4004, 'enclave not authorized')",
        "give the quote helper pod the provision device (sgx.intel.com/provision resource or a device "
        "mount) and run it as root or with the host's sgx_prv group as a supplemental group",
    ),
    AesmStatus.UNABLE_TO_GENERATE_QE_REPORT: ("the QE could not make its report", _DAEMON_LOG),
    AesmStatus.KEY_CERTIFICATION_ERROR: (
        "the attestation key could not be certified (PCE failure or no PCK certificate)",
        "check /dev/sgx_provision access and the PCCS configuration of the quote helper",
    ),
    AesmStatus.CONFIG_UNSUPPORTED: ("the daemon does not support this configuration", _DAEMON_LOG),
}


def explain(code: int) -> tuple[str, str]:
    """(meaning, fix) of an AESM errorCode; unknown codes get a generic sentence."""
    name = AesmStatus(code).name
    meaning, fix = EXPLANATIONS.get(code, (f"the daemon answered error {name}", _DAEMON_LOG))
    return f"{meaning} [{name} ({int(code)})]", fix


__all__ = ["EXPLANATIONS", "explain"]
