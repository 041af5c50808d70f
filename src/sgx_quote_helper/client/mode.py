"""Which quoting mode an app is in: Intel's rule for ``SGX_AESM_ADDR`` (:func:`out_of_process_mode`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..abi.aesm import AESM_ADDR_ENV, DEFAULT_SOCKET_PATH


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """Which quoting mode an app is in, and the reason in one sentence."""

    out_of_process: bool
    reason: str

    @property
    def name(self) -> str:
        return "out-of-process" if self.out_of_process else "in-process"


def out_of_process_mode(environ: Mapping[str, str] | None = None) -> ModeDecision:
    """Intel's rule (libsgx_dcap_ql, Open Enclave): ``SGX_AESM_ADDR`` set, any value, means out-of-process.

    The value is never used as an address: the socket path is fixed at /var/run/aesmd/aesm.socket.
    """
    env = os.environ if environ is None else environ
    if AESM_ADDR_ENV in env:
        value = env[AESM_ADDR_ENV]
        shown = repr(value) if value else "the empty string"
        return ModeDecision(
            True,
            f"{AESM_ADDR_ENV} is set (to {shown}; only its presence matters): quotes come from the "
            f"AESM service on {DEFAULT_SOCKET_PATH}",
        )
    return ModeDecision(
        False,
        f"{AESM_ADDR_ENV} is not set: libsgx_dcap_ql loads the quoting enclave inside the app "
        "(needs /dev/sgx_enclave and /dev/sgx_provision)",
    )


__all__ = ["AESM_ADDR_ENV", "DEFAULT_SOCKET_PATH", "ModeDecision", "out_of_process_mode"]
