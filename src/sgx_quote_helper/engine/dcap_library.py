"""Finding and loading Intel's DCAP quote library on a real SGX node (the hardware engine's setup).

Facts from Intel's sources (intel/SGXDataCenterAttestationPrimitives, QuoteGeneration):

- the ``sgx_ql_*`` core calls (``sgx_ql_set_enclave_load_policy``, ``sgx_ql_init_quote``,
  ``sgx_ql_get_quote_size``, ``sgx_ql_get_quote``, ``sgx_ql_get_keyid``, ``sgx_set_qpl_path``,
  ``load_qe``) are exported by **libsgx_qe3_logic.so** (``quote_wrapper/quote/linux/qe3_logic.lds``;
  Debian package ``libsgx-qe3-logic``, installed unversioned). ``libsgx_dcap_ql.so.1`` exports only
  the app-level ``sgx_qe_*`` calls, which cannot carry a key id or a ``qe_report_info``;
- libsgx_qe3_logic.so is linked without the PCE functions it calls (``sgx_pce_get_target``,
  ``sgx_get_pce_info``, ``sgx_pce_sign_report``, ``sgx_set_pce_enclave_load_policy``): the
  process must provide them. Intel's aesmd exports its own; anyone else loads
  **libsgx_pce_logic.so.1** (package ``libsgx-pce-logic``) globally first, as libsgx_dcap_ql does
  by linking both;
- the enclaves (QE3, PCE, ID enclave) come from ``libsgx-ae-qe3``, ``libsgx-ae-pce``,
  ``libsgx-ae-id-enclave`` (``libsgx_qe3.signed.so.1``, ``libsgx_pce.signed.so.1``,
  ``libsgx_id_enclave.signed.so.1``, looked for in the directory of the logic library that loads
  them); ``load_qe`` returns the urts's ``sgx_status_t`` unchanged when ``sgx_create_enclave``
  fails, ``sgx_pce_get_target`` answers ``SGX_PCE_INTERFACE_UNAVAILABLE`` when the PCE cannot be
  loaded (``pce_wrapper.cpp`` load_pce), which QE3 logic later reports as
  ``SGX_QL_INTERFACE_UNAVAILABLE`` (0xe00d); the quote provider library (``libdcap_quoteprov.so.1``) from
  ``libsgx-dcap-default-qpl`` (a PCCS) or Microsoft's ``az-dcap-client`` (Azure THIM);
- the devices are the in-kernel driver's ``/dev/sgx_enclave`` and ``/dev/sgx_provision``
  (Linux >= 5.11; the older out-of-tree DCAP driver used ``/dev/sgx/enclave`` and
  ``/dev/sgx/provision``). Opening ``sgx_provision`` needs root or its group (``sgx_prv``).

Everything here only runs when the hardware engine is selected.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..abi.aesm import AESM_ADDR_ENV
from ..abi.codes import PceStatus, QuoteLibStatus, SgxStatus
from ..errors import ConfigError

#: the library that exports the sgx_ql_* core calls
QE3_LOGIC_LIBRARY = "libsgx_qe3_logic.so"
#: names tried for the PCE logic library (versioned first, as the Debian package installs it)
PCE_LOGIC_LIBRARIES = ("libsgx_pce_logic.so.1", "libsgx_pce_logic.so")
#: the one environment variable that sends Intel's libraries to an out-of-process AESM

#: (in-kernel name, out-of-tree DCAP driver name) under the device root
ENCLAVE_DEVICES = ("sgx_enclave", "sgx/enclave")
PROVISION_DEVICES = ("sgx_provision", "sgx/provision")

INSTALL_LIBRARY_HINT = (
    "install Intel's DCAP quote library from Intel's SGX package repository "
    "(https://download.01.org/intel-sgx/sgx_repo/ubuntu): "
    "`apt-get install libsgx-dcap-ql` (it pulls libsgx-qe3-logic, libsgx-pce-logic, libsgx-ae-qe3, "
    "libsgx-ae-pce, libsgx-ae-id-enclave and libsgx-urts), plus a quote provider library: "
    "libsgx-dcap-default-qpl (for a PCCS) or az-dcap-client (Azure THIM)"
)
INSTALL_DEVICE_HINT = (
    "the SGX devices come from the in-kernel driver (Linux >= 5.11 with SGX and flexible launch "
    "control enabled in the firmware); in a container, mount them (Kubernetes: request "
    "sgx.intel.com/enclave and sgx.intel.com/provision from the SGX device plugin)"
)
PERMISSION_HINT = "run as root or add the service's user to the device's group (usually sgx_prv)"

QE3_ENCLAVE_HINT = (
    "install libsgx-ae-qe3 (libsgx_qe3.signed.so.1, in the same directory as libsgx_qe3_logic.so) "
    "and make it readable by the service"
)
PCE_ENCLAVE_HINT = (
    "install libsgx-ae-pce (libsgx_pce.signed.so.1, in the same directory as libsgx_pce_logic.so.1) "
    "and make it readable by the service"
)
EPC_HINT = (
    "not enough EPC for the quoting enclaves: stop enclaves that hold it or raise the PRM/EPC size "
    "in the firmware (Kubernetes: check the sgx.intel.com/epc requests on this node)"
)
ENCLAVE_FILE_HINT = (
    "the enclave file is damaged or from another release: reinstall libsgx-ae-qe3, libsgx-ae-pce "
    "and libsgx-ae-id-enclave at the same DCAP version as libsgx-qe3-logic and libsgx-urts"
)
MAPPING_HINT = (
    "the enclave memory cannot be mapped: /dev must not be mounted noexec (containers: mount the "
    "SGX devices from the device plugin, not a noexec tmpfs) and vm.mmap_min_addr must allow it"
)
LAUNCH_HINT = (
    "the enclave cannot be launched: the in-kernel driver needs a CPU with flexible launch control "
    "(FLC) enabled in the firmware; legacy launch needs Intel's aesmd, which this service replaces"
)
PROVISION_HINT = (
    "QE3 and the PCE need the provision key: the service must be able to open sgx_provision "
    "(" + PERMISSION_HINT + ")"
)
RESTART_HINT = "the enclave was lost (power transition or fork): restart the service"
MODE_HINT = (
    "simulation and hardware SGX libraries are mixed: install the hardware libsgx-urts and "
    "remove any SDK simulation libraries from the loader path"
)

#: what fixes a start-up failure, by the enum member that names it
_START_HINTS: dict[object, str] = {
    SgxStatus.ENCLAVE_FILE_ACCESS: QE3_ENCLAVE_HINT,
    QuoteLibStatus.ENCLAVE_LOAD_ERROR: QE3_ENCLAVE_HINT,
    SgxStatus.NO_DEVICE: INSTALL_DEVICE_HINT,
    QuoteLibStatus.NO_DEVICE: INSTALL_DEVICE_HINT,
    SgxStatus.OUT_OF_EPC: EPC_HINT,
    QuoteLibStatus.OUT_OF_EPC: EPC_HINT,
    PceStatus.OUT_OF_EPC: EPC_HINT,
    SgxStatus.OUT_OF_MEMORY: EPC_HINT,
    SgxStatus.INVALID_ENCLAVE: ENCLAVE_FILE_HINT,
    SgxStatus.INVALID_SIGNATURE: ENCLAVE_FILE_HINT,
    SgxStatus.INVALID_METADATA: ENCLAVE_FILE_HINT,
    SgxStatus.INVALID_VERSION: ENCLAVE_FILE_HINT,
    SgxStatus.UNDEFINED_SYMBOL: ENCLAVE_FILE_HINT,
    SgxStatus.PCL_ENCRYPTED: ENCLAVE_FILE_HINT,
    SgxStatus.PCL_NOT_ENCRYPTED: ENCLAVE_FILE_HINT,
    SgxStatus.MEMORY_MAP_FAILURE: MAPPING_HINT,
    SgxStatus.MEMORY_MAP_CONFLICT: MAPPING_HINT,
    SgxStatus.DEVICE_BUSY: LAUNCH_HINT,
    SgxStatus.INVALID_LAUNCH_TOKEN: LAUNCH_HINT,
    SgxStatus.SERVICE_UNAVAILABLE: LAUNCH_HINT,
    SgxStatus.INVALID_ATTRIBUTE: PROVISION_HINT,
    SgxStatus.SERVICE_INVALID_PRIVILEGE: PROVISION_HINT,
    SgxStatus.NO_PRIVILEGE: PROVISION_HINT,
    QuoteLibStatus.ERROR_INVALID_PRIVILEGE: PROVISION_HINT,
    PceStatus.INVALID_PRIVILEGE: PROVISION_HINT,
    SgxStatus.ENCLAVE_LOST: RESTART_HINT,
    QuoteLibStatus.ENCLAVE_LOST: RESTART_HINT,
    SgxStatus.MODE_INCOMPATIBLE: MODE_HINT,
    PceStatus.INTERFACE_UNAVAILABLE: PCE_ENCLAVE_HINT,
}
GENERIC_START_HINT = (
    "check that libsgx-ae-qe3, libsgx-ae-pce and libsgx-ae-id-enclave are installed, the SGX "
    "devices are usable, and the quote provider library is configured"
)


def start_hint(status: QuoteLibStatus | SgxStatus | PceStatus) -> str:
    """What fixes a start-up failure named by ``status`` (a generic checklist when unknown)."""
    return _START_HINTS.get(status, GENERIC_START_HINT)


def status_text(status: QuoteLibStatus | SgxStatus | PceStatus) -> str:
    """``NAME (0x....)`` with the Intel prefix of the status's space (SGX_QL_, SGX_ERROR_, SGX_PCE_)."""
    if isinstance(status, SgxStatus):
        prefix = "SGX_" if status.name in ("SUCCESS", "PTHREAD_EXIT") else "SGX_ERROR_"
    elif isinstance(status, PceStatus):
        prefix = "SGX_PCE_"
    else:
        prefix = "SGX_QL_"
    name = status.name if status.name.startswith("UNKNOWN_") else prefix + status.name
    return f"{name} ({int(status):#06x})"


@dataclass(frozen=True, slots=True)
class DevicePaths:
    """The SGX devices found under a device root (``None`` where missing)."""

    enclave: Path | None
    provision: Path | None

    @classmethod
    def find(cls, root: Path) -> DevicePaths:
        """Look for both devices under ``root`` (normally ``/dev``), in-kernel names first."""
        return cls(_first_existing(root, ENCLAVE_DEVICES), _first_existing(root, PROVISION_DEVICES))


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        path = root / name
        if path.exists():
            return path
    return None


@dataclass(slots=True)
class Problems:
    """What stands between this node and a hardware engine (collected, reported at once).

    ``engine`` names it in the message ("the DCAP hardware engine", "the TDX quote engine").
    """

    missing: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    engine: str = "the DCAP hardware engine"

    def add(self, what: str, hint: str) -> None:
        self.missing.append(what)
        if hint not in self.hints:
            self.hints.append(hint)

    def raise_if_any(self, context: str = "") -> None:
        """Raise one :class:`ConfigError` naming everything missing and how to fix it."""
        if not self.missing:
            return
        text = f"{self.engine} cannot start: " + "; ".join(self.missing)
        text += ". To fix: " + "; ".join(self.hints) + "."
        if context:
            text += " " + context
        raise ConfigError(text)


def check_devices(root: Path, problems: Problems) -> DevicePaths:
    """Record missing or unusable SGX devices under ``root`` in ``problems``."""
    found = DevicePaths.find(root)
    for path, names in ((found.enclave, ENCLAVE_DEVICES), (found.provision, PROVISION_DEVICES)):
        if path is None:
            problems.add(f"no SGX device {root / names[0]} (nor {root / names[1]})", INSTALL_DEVICE_HINT)
        elif not os.access(path, os.R_OK | os.W_OK):
            problems.add(f"{path} is not readable and writable by this process", PERMISSION_HINT)
    return found


def unset_aesm_addr() -> None:
    """Remove ``SGX_AESM_ADDR`` from this process (Python's view and the C environment).

    The service *is* the AESM: if the variable were set, Intel's libraries (urts launch support,
    libsgx_dcap_ql) could route requests back to a socket, possibly our own.
    """
    os.environ.pop(AESM_ADDR_ENV, None)  # os.environ.pop also calls unsetenv(3)
    if hasattr(os, "unsetenv"):
        os.unsetenv(AESM_ADDR_ENV)


def load_libraries(qe3_library: str, pce_library: str | None, problems: Problems) -> ctypes.CDLL | None:
    """Load the PCE logic library globally (if asked) and then the QE3 logic library.

    ``pce_library=None`` skips the PCE library (for a QE3 library that resolves it itself). A
    PCE library that fails to load is only reported when the QE3 library then fails too (its
    undefined ``sgx_pce_*`` symbols are the usual reason).
    """
    pce_error = ""
    if pce_library is not None:
        names = (pce_library,) if pce_library else PCE_LOGIC_LIBRARIES
        pce_error = _load_first(names, ctypes.RTLD_GLOBAL)
    try:
        return ctypes.CDLL(qe3_library, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        problems.add(f"cannot load {qe3_library} ({exc})", INSTALL_LIBRARY_HINT)
        if pce_error:
            problems.add(f"cannot load the PCE logic library ({pce_error})", INSTALL_LIBRARY_HINT)
        return None


def _load_first(names: tuple[str, ...], mode: int) -> str:
    errors = []
    for name in names:
        try:
            ctypes.CDLL(name, mode=mode)
            return ""
        except OSError as exc:
            errors.append(str(exc))
    return "; ".join(errors)


__all__ = [
    "AESM_ADDR_ENV",
    "GENERIC_START_HINT",
    "INSTALL_DEVICE_HINT",
    "INSTALL_LIBRARY_HINT",
    "PCE_LOGIC_LIBRARIES",
    "QE3_LOGIC_LIBRARY",
    "DevicePaths",
    "Problems",
    "check_devices",
    "load_libraries",
    "start_hint",
    "status_text",
    "unset_aesm_addr",
]
