"""The doctor's data: a :class:`Check` result, the :class:`DoctorReport`, the :class:`Facts` one check
learns for the next, and :class:`Probes`, the injectable I/O every check goes through."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..client import DEFAULT_SOCKET_PATH, QuoteClient
from ..client.qgs import Address, QgsClient
from ..server.socketpath import Listener, listener_credentials
from .qcnl import DEFAULT_QCNL_CONF

#: Intel's QGS socket (DCAP >= 1.26 default, QEMU's and Kata's usual path)
DEFAULT_QGS_SOCKET = Path("/var/run/tdx-qgs/qgs.socket")

#: where the quote provider libraries are looked for (plus $LD_LIBRARY_PATH)
DEFAULT_LIB_DIRS: tuple[Path, ...] = (
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/usr/lib64"),
    Path("/usr/lib"),
    Path("/usr/local/lib"),
    Path("/lib/x86_64-linux-gnu"),
)


@dataclass(frozen=True)
class DoctorOptions:
    """What to check and where (every path is a parameter so tests use temp trees).

    ``socket_path`` is the ``--socket`` value (None: not given; the default path is then checked
    only when ``SGX_AESM_ADDR`` is set or the default socket exists). The TDX checks read
    ``<sysfs_root>/kernel/config/tsm/report`` (configfs-tsm), ``<dev_root>/tdx_guest``,
    ``<etc_root>/tdx-attest.conf`` and ``<sysfs_root>/module/kvm_intel/parameters/tdx``;
    ``qgs_socket`` is ``--qgs-socket`` (None: ``default_qgs_socket`` when it exists), ``qemu_gid``
    the group QEMU runs in (``--qemu-group``; None: not checked).
    """

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    socket_path: Path | None = None
    default_socket: Path = DEFAULT_SOCKET_PATH
    dev_root: Path = Path("/dev")
    sysfs_root: Path = Path("/sys")
    qcnl_conf: Path = DEFAULT_QCNL_CONF
    pccs_url: str | None = None
    lib_dirs: tuple[Path, ...] = DEFAULT_LIB_DIRS
    timeout: float = 15.0
    http_timeout: float = 5.0
    etc_root: Path = Path("/etc")
    qgs_socket: Path | None = None
    default_qgs_socket: Path = DEFAULT_QGS_SOCKET
    qemu_gid: int | None = None


class Status(StrEnum):
    """Outcome of one check. Only ``fail`` makes the doctor exit non-zero."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check: its stable ``name``, the outcome, what was found, and how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """The JSON form: ``{name, status, detail, fix}``."""
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    """All checks in order; ``ok`` when none failed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def by_name(self, name: str) -> Check:
        """The check called ``name`` (KeyError if there is none)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """``{"checks": [...], "ok": bool}`` (what ``--json`` prints)."""
        return {"checks": [c.to_dict() for c in self.checks], "ok": self.ok}


@dataclass
class Facts:
    """What earlier checks learnt that later ones need."""

    simulated_engine: bool | None = None
    out_of_process_app: bool = False


#: connect(path, timeout): connect and close, raising OSError as socket.connect does
Connector = Callable[[str, float], None]
#: http_get(url, timeout, verify_tls) -> HTTP status; raises OSError / ssl.SSLError / URLError
HttpGet = Callable[[str, float, bool], int]
#: access(path, mode) like os.access
Access = Callable[[str, int], bool]
#: client_factory(socket_path, timeout) -> a QuoteClient that does not retry
ClientFactory = Callable[[Path, float], QuoteClient]
#: qgs_client_factory(address, timeout) -> a QgsClient (Unix path or vsock (cid, port))
QgsClientFactory = Callable[[Address, float], QgsClient]
#: vsock_connect(cid, port, timeout): connect and close, raising OSError
VsockConnector = Callable[[int, int, float], None]


def unix_connect(path: str, timeout: float) -> None:
    """Connect to a Unix stream socket and close it (raises OSError on failure)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    finally:
        sock.close()


def urllib_status(url: str, timeout: float, verify_tls: bool) -> int:
    """HTTP GET ``url``; the status code of any HTTP answer (4xx/5xx included)."""
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def vsock_connect(cid: int, port: int, timeout: float) -> None:
    """Connect to vsock ``cid:port`` and close (raises OSError; AF_VSOCK missing is ENOTSUP)."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "this Python/kernel has no AF_VSOCK")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((cid, port))
    finally:
        sock.close()


def _client(path: Path, timeout: float) -> QuoteClient:
    return QuoteClient(path, timeout=timeout, retry_deadline=0.0)


@dataclass(frozen=True)
class Probes:
    """The doctor's I/O; :meth:`real` is the real thing, tests replace single functions."""

    connect: Connector = unix_connect
    http_get: HttpGet = urllib_status
    access: Access = os.access
    client_factory: ClientFactory = _client
    #: who listens on a socket path (SO_PEERCRED), None when nothing accepts there
    listener: Callable[[Path, float], Listener | None] = listener_credentials
    qgs_client_factory: QgsClientFactory = QgsClient
    vsock_connect: VsockConnector = vsock_connect

    @classmethod
    def real(cls) -> Probes:
        return cls()


__all__ = [
    "DEFAULT_LIB_DIRS",
    "DEFAULT_QGS_SOCKET",
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "Facts",
    "Probes",
    "Status",
    "unix_connect",
    "urllib_status",
    "vsock_connect",
]
