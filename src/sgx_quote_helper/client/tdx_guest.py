"""Getting a TD quote from inside a TD guest: configfs-tsm, else a QGS over vsock, else a clear error.

The paths, in the order ``sgx-quote-helper tdx quote`` tries them (``shared/specs/tdx-qgs.md`` §1.5):

1. **configfs-tsm** (Linux ``/sys/kernel/config/tsm/report``): Intel's protocol from libtdx_attest:
   use the entry ``com.intel.dcap`` (or ``$DCAP_TDX_QUOTE_CONFIGFS_PATH``), creating it when absent
   (the kernel fills it with ``provider``, ``generation``, ``inblob``, ``outblob``); ``provider``
   must read ``tdx_guest``; lock ``inblob`` (flock), read ``generation``, write the 64-byte report
   data (retry on EBUSY), require ``generation`` + 1, read ``outblob`` (a quote of 1020 bytes or
   fewer is an error), and require ``generation`` unchanged after it (nobody else's request slipped in).
2. **QGS over vsock**: when ``/etc/tdx-attest.conf`` has ``port = N``, connect to CID 2 (the host)
   port N and send GET_QUOTE_REQ with the TDREPORT from ``/dev/tdx_guest`` (ioctl
   TDX_CMD_GET_REPORT0). As libtdx_attest, a failure there is reported, not hidden by a fallback.
3. otherwise: :class:`ConfigError` saying what is missing.

``--qgs-socket PATH`` (hosts, tests) talks to a QGS on a Unix socket directly. File access goes
through :class:`TsmFiles` so a fake configfs tree (tests) can stand in for the kernel's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError, TransportError
from .qgs import VMADDR_CID_HOST, QgsClient

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
DCAP_ENTRY = "com.intel.dcap"
CONFIGFS_ENV = "DCAP_TDX_QUOTE_CONFIGFS_PATH"
ATTEST_CONF = Path("/etc/tdx-attest.conf")
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")
#: _IOWR('T', 1, struct tdx_report_req {u8 reportdata[64]; u8 tdreport[1024];})
TDX_CMD_GET_REPORT0 = (3 << 30) | (1088 << 16) | (ord("T") << 8) | 1
#: libtdx_attest: a quote this short is not a quote
QUOTE_MIN_SIZE = 1020
#: libtdx_attest's outblob buffer
QUOTE_BUF_SIZE = 8 * 1024
_EBUSY_RETRIES = 3


class TsmFiles(Protocol):
    """The configfs-tsm operations the protocol needs (the kernel's files, or a fake)."""

    def exists(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def read(self, path: Path, limit: int) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...

    def lock(self, path: Path) -> contextlib.AbstractContextManager[None]: ...


class KernelFiles:
    """:class:`TsmFiles` on the real filesystem (flock on ``inblob``, as libtdx_attest)."""

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o770)

    def read(self, path: Path, limit: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class TdQuote:
    quote: bytes
    source: str  # "configfs-tsm <dir>", "QGS vsock 2:4050", "QGS <path>"


def _generation(fs: TsmFiles, entry: Path) -> int:
    raw = fs.read(entry / "generation", 20)
    try:
        return int(raw.strip() or b"x")
    except ValueError:
        raise ConfigError(f"{entry / 'generation'} does not hold a number: {raw[:20]!r}") from None


def configfs_entry(root: Path, fs: TsmFiles, env: dict[str, str]) -> Path | None:
    """The configfs-tsm entry to use (created if needed), or ``None`` if configfs-tsm is absent.

    Raises:
        ConfigError: ``$DCAP_TDX_QUOTE_CONFIGFS_PATH`` names a missing directory, or the provider
            is not ``tdx_guest``.
    """
    if env.get(CONFIGFS_ENV):
        entry = Path(env[CONFIGFS_ENV])
        if not fs.exists(entry):
            raise ConfigError(f"${CONFIGFS_ENV} is {entry}, which does not exist")
    else:
        if not fs.exists(root):
            return None
        entry = root / DCAP_ENTRY
        if not fs.exists(entry):
            fs.mkdir(entry)
    provider = fs.read(entry / "provider", 15)
    if not provider.startswith(b"tdx_guest"):
        raise ConfigError(
            f"{entry / 'provider'} says {provider.strip()!r}, not tdx_guest: this is not a TDX guest"
        )
    return entry


def configfs_quote(
    report_data: bytes, entry: Path, fs: TsmFiles, sleep: Callable[[float], None] = time.sleep
) -> bytes:
    """Intel's configfs-tsm protocol on ``entry`` (see the module doc).

    Raises:
        TransportError: busy (another request took the entry), a short quote, or an I/O error.
    """
    inblob = entry / "inblob"
    try:
        with fs.lock(inblob):
            before = _generation(fs, entry)
            for attempt in range(_EBUSY_RETRIES):
                try:
                    fs.write(inblob, report_data)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == _EBUSY_RETRIES - 1:
                        raise
                    sleep(10.0)  # libtdx_attest waits 10 s: another quote is being generated
            after = _generation(fs, entry)
            if after != before + 1:
                raise TransportError(
                    f"configfs-tsm generation went {before} -> {after}: another request used {entry}"
                )
            quote = fs.read(entry / "outblob", QUOTE_BUF_SIZE)
            if _generation(fs, entry) != after:
                raise TransportError(f"configfs-tsm {entry} was reused while the quote was read")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise TransportError(f"configfs-tsm {entry} stayed busy (EBUSY)") from None
        raise TransportError(f"configfs-tsm {entry}: {exc.strerror or exc}") from None
    if len(quote) <= QUOTE_MIN_SIZE:
        raise TransportError(
            f"configfs-tsm gave {len(quote)} bytes, not a quote (the host's QGS may be down)"
        )
    return quote


def vsock_port(conf: Path = ATTEST_CONF) -> int | None:
    """The ``port = N`` of ``/etc/tdx-attest.conf`` (libtdx_attest's reading), or ``None``."""
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        m = re.match(r"\s*port\s*=\s*([0-9]{1,10})\s*$", line)
        if m and 0 < int(m.group(1)) <= 0xFFFFFFFF:
            return int(m.group(1))
    return None


def device_td_report(report_data: bytes, device: Path = TDX_GUEST_DEVICE) -> bytes:
    """The TDREPORT from ``/dev/tdx_guest`` (ioctl TDX_CMD_GET_REPORT0).

    Raises:
        ConfigError: no such device (not a TD) or the ioctl failed.
    """
    buf = bytearray(report_data.ljust(64, b"\0") + bytes(1024))
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as exc:
        raise ConfigError(
            f"cannot open {device} ({exc.strerror}): not a TDX guest, or no tdx_guest driver"
        ) from None
    try:
        fcntl.ioctl(fd, TDX_CMD_GET_REPORT0, buf, True)
    except OSError as exc:
        raise ConfigError(f"TDX_CMD_GET_REPORT0 on {device} failed: {exc.strerror}") from None
    finally:
        os.close(fd)
    return bytes(buf[64:])


def get_td_quote(
    report_data: bytes,
    *,
    qgs_socket: Path | None = None,
    td_report: bytes | None = None,
    configfs_root: Path = TSM_REPORT_ROOT,
    attest_conf: Path = ATTEST_CONF,
    device: Path = TDX_GUEST_DEVICE,
    fs: TsmFiles | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> TdQuote:
    """A quote of this TD for ``report_data`` (at most 64 bytes) by the first path that applies.

    ``td_report`` (a TDREPORT made elsewhere, e.g. ``sim td-report``) is what the QGS paths send
    instead of asking ``/dev/tdx_guest``.

    Raises:
        ConfigError: no path applies (with what is missing); TransportError / BadResponseError:
            the chosen path failed.
    """
    if len(report_data) > 64:
        raise ConfigError(f"report data must be at most 64 bytes, got {len(report_data)}")
    data = report_data.ljust(64, b"\0")
    if qgs_socket is not None:
        report = td_report if td_report is not None else device_td_report(data, device)
        return TdQuote(QgsClient(qgs_socket, timeout).get_quote(report), f"QGS {qgs_socket}")
    files = fs or KernelFiles()
    entry = configfs_entry(configfs_root, files, dict(os.environ) if env is None else env)
    if entry is not None:
        if td_report is not None:
            raise ConfigError(
                "a TDREPORT file cannot be used with configfs-tsm (the kernel makes the report)"
            )
        return TdQuote(configfs_quote(data, entry, files), f"configfs-tsm {entry}")
    port = vsock_port(attest_conf)
    if port is not None:
        report = td_report if td_report is not None else device_td_report(data, device)
        return TdQuote(
            QgsClient((VMADDR_CID_HOST, port), timeout).get_quote(report),
            f"QGS vsock {VMADDR_CID_HOST}:{port}",
        )
    raise ConfigError(
        f"no way to get a TD quote: no configfs-tsm ({configfs_root} is missing), no 'port = N' in "
        f"{attest_conf} for a QGS over vsock; give --qgs-socket PATH to use a QGS directly"
    )


__all__ = [
    "ATTEST_CONF",
    "CONFIGFS_ENV",
    "DCAP_ENTRY",
    "TDX_CMD_GET_REPORT0",
    "TSM_REPORT_ROOT",
    "KernelFiles",
    "TdQuote",
    "TsmFiles",
    "configfs_entry",
    "configfs_quote",
    "device_td_report",
    "get_td_quote",
    "vsock_port",
]
