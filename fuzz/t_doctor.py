"""doctor targets: libtdx_attest's ``/etc/tdx-attest.conf`` as the doctor reads it.

Invariant: any file contents give a Check (never an exception): SKIP without a port line, WARN for a
port line libtdx_attest cannot read, and with a readable port (1..0xFFFFFFFF, what
``client.tdx_guest.vsock_port`` returns) a dial of vsock 2:port (refused here: FAIL, nothing dialled
beyond the injected probe).
"""

from __future__ import annotations

import errno
import tempfile
from functools import cache
from pathlib import Path

from sgx_quote_helper.client.tdx_guest import vsock_port
from sgx_quote_helper.doctor.model import DoctorOptions, Probes, Status
from sgx_quote_helper.doctor.tdx_checks import GuestFacts, check_attest_conf

from .target import Target


@cache
def _etc() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-doctor-"))


def _refuse(cid: int, port: int, timeout: float) -> None:
    assert cid == 2 and 0 < port <= 0xFFFFFFFF, (cid, port)
    raise OSError(errno.ECONNREFUSED, "refused")


def check_attest_conf_bytes(data: bytes) -> int:
    etc = _etc()
    (etc / "tdx-attest.conf").write_bytes(data)
    guest = GuestFacts()
    check = check_attest_conf(DoctorOptions(etc_root=etc, timeout=0.1), Probes(vsock_connect=_refuse), guest)
    port = vsock_port(etc / "tdx-attest.conf")
    assert guest.port == port
    if port is None:
        assert check.status in (Status.SKIP, Status.WARN), check
    else:
        assert 0 < port <= 0xFFFFFFFF and check.status is Status.FAIL and str(port) in check.detail
    assert check.status is Status.SKIP or check.fix
    return 1


@cache
def attest_conf_seeds() -> tuple[bytes, ...]:
    """Intel's sample (a commented port line), a live one, and near misses."""
    return (
        b"# If the port is set, use vsock to talk to the QGS\n# port=4050\n",
        b"port = 4050\n",
        b"  port=4294967295\n",
        b"port = 4294967296\n",
        b"port: 4050\n\xff\xfe",
    )


TDX_ATTEST_CONF = Target(
    "tdx-attest-conf",
    "doctor.tdx_checks.check_attest_conf and client.tdx_guest.vsock_port (/etc/tdx-attest.conf)",
    check_attest_conf_bytes,
    attest_conf_seeds,
    max_size=1024,
)

__all__ = ["TDX_ATTEST_CONF", "attest_conf_seeds", "check_attest_conf_bytes"]
