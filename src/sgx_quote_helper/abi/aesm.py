"""The two fixed names of Intel's out-of-process quoting, defined here once for the whole package.

- :data:`DEFAULT_SOCKET_PATH`: the AESM socket, compiled into Intel's daemon and client libraries
  (``CONFIG_SOCKET_PATH`` in ``psw/ae/aesm_service/source/core/ipc/SocketConfig.h``); no
  environment variable or config file changes it in Intel's client.
- :data:`AESM_ADDR_ENV`: ``SGX_AESM_ADDR``. libsgx_dcap_ql (and Open Enclave) quote out-of-process
  when it is set, to any value, even empty; its value is never used as an address.

See ``shared/specs/aesm-protocol.md`` §1.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SOCKET_PATH = Path("/var/run/aesmd/aesm.socket")
AESM_ADDR_ENV = "SGX_AESM_ADDR"

__all__ = ["AESM_ADDR_ENV", "DEFAULT_SOCKET_PATH"]
