"""The TDX side of the doctor: in a TD guest, the ways to a quote; on a TDX host, the QGS.

Guest checks apply when this looks like a TD guest (``/dev/tdx_guest`` or ``/etc/tdx-attest.conf``
exists, or configfs-tsm's provider is ``tdx_guest``); otherwise they are skipped:

- ``tdx-configfs``: ``<sysfs>/kernel/config/tsm/report`` and its provider (``tdx_guest``), read from
  an existing report entry, or from one the doctor makes for it and removes again (as root);
- ``tdx-guest-device``: ``/dev/tdx_guest`` (the TDREPORT for a QGS over vsock);
- ``tdx-attest-conf``: libtdx_attest's ``port = N`` and whether vsock ``2:N`` accepts a connection;
- ``tdx-quote-path``: the path libtdx_attest takes (vsock first when a port is set, with no fallback;
  then configfs-tsm), or none.

Host checks apply on a TDX host (``--qgs-socket`` given, the QGS socket exists, or ``kvm_intel``'s
``tdx`` parameter says ``Y``):

- ``tdx-host``: ``<sysfs>/module/kvm_intel/parameters/tdx``;
- ``qgs-socket``: the socket exists and is a socket;
- ``qgs-answers``: GET_PLATFORM_INFO, else (a socket limited to GET_QUOTE) a framed GET_QUOTE of an
  all-zero TDREPORT that a live TDQE refuses;
- ``qgs-access``: the socket's mode and group, and whether QEMU's group (``--qemu-group``) can
  reach it through every directory on the way;
- ``qgs-tdqe-devices``: ``/dev/sgx_enclave`` and ``/dev/sgx_provision``, which the TDQE needs.

Facts (``shared/specs/tdx-qgs.md`` §1): Intel's QGS socket is mode 0660 and QEMU must be in its
group (DCAP 1.26: ``qgsd``); containerd's default seccomp profile refuses AF_VSOCK.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..client.qgs import VMADDR_CID_HOST
from ..client.tdx_guest import CONFIGFS_ENV, DCAP_ENTRY, vsock_port
from ..errors import BadResponseError, TransportError
from ..k8s.scan import find_devices
from .host_checks import device_problem
from .model import Check, DoctorOptions, Probes, Status

GUEST_NAMES = ("tdx-configfs", "tdx-guest-device", "tdx-attest-conf", "tdx-quote-path")
HOST_NAMES = ("tdx-host", "qgs-socket", "qgs-answers", "qgs-access", "qgs-tdqe-devices")
_TSM = "kernel/config/tsm/report"
_KVM_TDX = "module/kvm_intel/parameters/tdx"
_CONFIGFS_FIX = (
    "use a guest kernel with configfs-tsm (Linux >= 6.7, CONFIG_TSM_REPORTS and the tdx_guest "
    "driver) and mount configfs: mount -t configfs none /sys/kernel/config"
)
_QGS_START = (
    "start a QGS on this host: sgx-quote-helper qgs serve (the chart: qgs.enabled=true), or Intel's "
    "qgsd; note that a stock qgs.conf with `port = 4050` makes qgsd listen on vsock, not the socket"
)


def _group_name(gid: int) -> str:
    try:
        return f"{gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return str(gid)


def _describe(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, group {_group_name(st.st_gid)}"


# ------------------------------------------------------------------ the guest


@dataclass
class GuestFacts:
    """What the guest checks learn for the ones after them."""

    provider: str | None = None  # configfs-tsm's provider, when read
    configfs_ok: bool = False
    device_ok: bool = False
    port: int | None = None
    vsock_ok: bool = False


def _read_provider(entry: Path) -> str:
    return (entry / "provider").read_text(errors="replace").strip()


def _provider(root: Path, env: dict[str, str]) -> tuple[str | None, str]:
    """(provider, where it was read) from an existing entry, else from a new entry made for it."""
    if env.get(CONFIGFS_ENV):
        entry = Path(env[CONFIGFS_ENV])
        if not entry.is_dir():
            raise OSError(errno.ENOENT, f"${CONFIGFS_ENV} is {entry}, which does not exist")
        return _read_provider(entry), str(entry)
    entries = (
        [root / DCAP_ENTRY]
        if (root / DCAP_ENTRY).is_dir()
        else sorted(p for p in root.iterdir() if p.is_dir())
    )
    if entries:
        return _read_provider(entries[0]), str(entries[0])
    # The kernel fills a new entry with its files; the entry goes away with rmdir.
    entry = root / f"sgx-quote-helper-doctor-{os.getpid()}"
    os.mkdir(entry, 0o700)
    try:
        if not (entry / "provider").exists():
            return None, str(entry)
        return _read_provider(entry), f"{entry} (made and removed)"
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(entry)


def check_configfs(options: DoctorOptions, guest: GuestFacts, in_guest: bool) -> Check:
    root = options.sysfs_root / _TSM
    if not root.is_dir():
        if in_guest:
            return Check(
                "tdx-configfs",
                Status.WARN,
                f"{root} does not exist: no configfs-tsm in this guest, so only a QGS over vsock "
                "(/etc/tdx-attest.conf) can quote",
                _CONFIGFS_FIX,
            )
        return Check("tdx-configfs", Status.SKIP, f"{root} does not exist: not a TD guest with configfs-tsm")
    try:
        provider, where = _provider(root, dict(options.environ))
    except OSError as exc:
        return Check(
            "tdx-configfs",
            Status.FAIL if in_guest else Status.SKIP,
            f"configfs-tsm is there ({root}) but its provider cannot be read: {exc.strerror or exc}",
            "run as root (creating a report entry needs it), or set $DCAP_TDX_QUOTE_CONFIGFS_PATH to an "
            "entry this user may use",
        )
    guest.provider = provider
    if provider is None:
        return Check(
            "tdx-configfs",
            Status.FAIL if in_guest else Status.SKIP,
            f"{where} has no provider file: no TSM provider driver is loaded (or this is not the "
            "kernel's configfs)",
            "load the tdx_guest driver (modprobe tdx_guest) in the TD guest",
        )
    if provider != "tdx_guest":
        return Check(
            "tdx-configfs",
            Status.FAIL if in_guest else Status.SKIP,
            f"configfs-tsm provider is {provider!r} ({where}), not tdx_guest: this is not a TDX guest "
            "(sev_guest: AMD SEV-SNP)",
            "run the TDX quoting path in a TD guest",
        )
    guest.configfs_ok = True
    return Check("tdx-configfs", Status.PASS, f"configfs-tsm at {root}, provider tdx_guest ({where})")


def check_guest_device(options: DoctorOptions, probes: Probes, guest: GuestFacts, in_guest: bool) -> Check:
    path = options.dev_root / "tdx_guest"
    if not os.path.lexists(path):
        if guest.port is not None:
            return Check(
                "tdx-guest-device",
                Status.FAIL,
                f"{path} does not exist, but the QGS over vsock needs the TDREPORT it makes "
                "(ioctl TDX_CMD_GET_REPORT0)",
                "load the tdx_guest driver (modprobe tdx_guest); in a container, give it the device",
            )
        if guest.configfs_ok:
            return Check(
                "tdx-guest-device",
                Status.SKIP,
                f"{path} does not exist; not needed: configfs-tsm makes the report in the kernel",
            )
        return Check(
            "tdx-guest-device",
            Status.FAIL if in_guest else Status.SKIP,
            f"{path} does not exist" + (": no TDX guest driver" if in_guest else ": not a TD guest"),
            "load the tdx_guest driver (modprobe tdx_guest)",
        )
    problem = device_problem(path, str(path), probes)
    if problem:
        return Check(
            "tdx-guest-device",
            Status.FAIL,
            problem,
            "run as root or in the device's group; in a container, give it /dev/tdx_guest",
        )
    guest.device_ok = True
    return Check("tdx-guest-device", Status.PASS, f"{path} is a device node usable by this process")


_PORT_LINE = re.compile(r"^\s*port\b", re.IGNORECASE)


def check_attest_conf(options: DoctorOptions, probes: Probes, guest: GuestFacts) -> Check:
    conf = options.etc_root / "tdx-attest.conf"
    try:
        text = conf.read_text(errors="replace")
    except FileNotFoundError:
        return Check(
            "tdx-attest-conf",
            Status.SKIP,
            f"{conf} does not exist: libtdx_attest uses configfs-tsm (no QGS over vsock)",
        )
    except OSError as exc:
        return Check(
            "tdx-attest-conf", Status.FAIL, f"cannot read {conf}: {exc.strerror}", f"make {conf} readable"
        )
    port = vsock_port(conf)
    guest.port = port
    if port is None:
        odd = [line.strip() for line in text.splitlines() if _PORT_LINE.match(line)]
        if odd:
            return Check(
                "tdx-attest-conf",
                Status.WARN,
                f"{conf} has a port line libtdx_attest does not read: {odd[0][:60]!r}; it falls back to "
                "configfs-tsm",
                "write it as `port = 4050` (decimal, 1..4294967295), or remove it to use configfs-tsm",
            )
        return Check("tdx-attest-conf", Status.SKIP, f"{conf} sets no port: libtdx_attest uses configfs-tsm")
    try:
        probes.vsock_connect(VMADDR_CID_HOST, port, options.timeout)
    except OSError as exc:
        return Check(
            "tdx-attest-conf",
            Status.FAIL,
            f"{conf}: port {port}, but vsock {VMADDR_CID_HOST}:{port} does not accept a connection "
            f"({exc.strerror or exc}); libtdx_attest tries it first and does not fall back to configfs-tsm",
            f"on the host, serve it (sgx-quote-helper qgs serve --vsock-port {port}; the chart: "
            f"qgs.vsock.port={port}) and give the VM a vsock device (QEMU -device vhost-vsock-pci,"
            "guest-cid=N); or remove the port line to use configfs-tsm through QEMU's socket",
        )
    guest.vsock_ok = True
    return Check(
        "tdx-attest-conf",
        Status.PASS,
        f"{conf}: port {port}; vsock {VMADDR_CID_HOST}:{port} accepts connections (libtdx_attest asks "
        "the QGS there first, with no fallback)",
    )


def check_quote_path(guest: GuestFacts, in_guest: bool) -> Check:
    if guest.port is not None:
        if guest.vsock_ok and guest.device_ok:
            return Check(
                "tdx-quote-path",
                Status.PASS,
                f"libtdx_attest: the QGS over vsock {VMADDR_CID_HOST}:{guest.port} with a TDREPORT from "
                "/dev/tdx_guest (sgx-quote-helper tdx quote tries configfs-tsm first)",
            )
        return Check(
            "tdx-quote-path",
            Status.FAIL,
            f"libtdx_attest takes the vsock path (port {guest.port}), which is not usable (see "
            "tdx-attest-conf and tdx-guest-device): it does not fall back to configfs-tsm",
            "fix the vsock path, or remove the port line from /etc/tdx-attest.conf to use configfs-tsm",
        )
    if guest.configfs_ok:
        return Check(
            "tdx-quote-path",
            Status.PASS,
            "configfs-tsm: the kernel makes the TDREPORT and asks the VMM, which passes it to the "
            "host's QGS (a quote that fails here usually means the host's QGS is down or QEMU cannot "
            "reach its socket)",
        )
    if guest.device_ok:
        return Check(
            "tdx-quote-path",
            Status.WARN,
            "only /dev/tdx_guest: its TDX_CMD_GET_QUOTE ioctl is gone from upstream Linux (6.7 moved "
            "quoting to configfs-tsm)",
            "use a kernel with configfs-tsm, or set `port = N` in /etc/tdx-attest.conf for a QGS over vsock",
        )
    if not in_guest:
        return Check("tdx-quote-path", Status.SKIP, "not a TD guest")
    return Check(
        "tdx-quote-path",
        Status.FAIL,
        "no way to a TD quote here: no configfs-tsm with provider tdx_guest, no vsock port",
        _CONFIGFS_FIX + "; or `port = 4050` in /etc/tdx-attest.conf for a QGS over vsock",
    )


def guest_checks(options: DoctorOptions, probes: Probes) -> list[Check]:
    """The four guest checks (see the module doc)."""
    in_guest = (
        os.path.lexists(options.dev_root / "tdx_guest") or (options.etc_root / "tdx-attest.conf").exists()
    )
    guest = GuestFacts()
    configfs = check_configfs(options, guest, in_guest)
    if guest.provider == "tdx_guest" and not in_guest:
        in_guest = True
    conf = check_attest_conf(options, probes, guest)
    device = check_guest_device(options, probes, guest, in_guest)
    return [configfs, device, conf, check_quote_path(guest, in_guest)]


# ------------------------------------------------------------------ the host


def _kvm_tdx(options: DoctorOptions) -> str | None:
    try:
        return (options.sysfs_root / _KVM_TDX).read_text().strip()
    except OSError:
        return None


def check_tdx_host(options: DoctorOptions) -> Check:
    value = _kvm_tdx(options)
    path = options.sysfs_root / _KVM_TDX
    if value is None:
        return Check(
            "tdx-host",
            Status.WARN,
            f"{path} does not exist: kvm_intel without TDX here (or this is a container that does not "
            "see the host's sysfs)",
            "on the TDX host: a kernel with TDX host support (Linux >= 6.16, CONFIG_INTEL_TDX_HOST) and "
            "kvm_intel.tdx=1",
        )
    if value in ("Y", "1"):
        return Check("tdx-host", Status.PASS, f"{path} = {value}: KVM runs TD guests")
    return Check(
        "tdx-host",
        Status.FAIL,
        f"{path} = {value}: KVM does not run TD guests",
        "enable TDX in the BIOS and boot with kvm_intel.tdx=1 (dmesg | grep -i tdx says why it is off)",
    )


def check_qgs_socket(path: Path, explicit: bool) -> Check:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Check(
            "qgs-socket",
            Status.FAIL if explicit else Status.WARN,
            f"{path} does not exist: no QGS serves it",
            _QGS_START,
        )
    except OSError as exc:
        return Check(
            "qgs-socket",
            Status.FAIL,
            f"cannot look at {path}: {exc.strerror or exc}",
            f"make {path.parent} searchable for this user (or run as root)",
        )
    if stat.S_ISLNK(st.st_mode) and path.is_socket():
        return Check("qgs-socket", Status.PASS, f"{path} links to a socket")
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
        return Check(
            "qgs-socket",
            Status.FAIL,
            f"{path} is {kind} ({_describe(st)})",
            f"remove it and let the QGS create its socket there; {_QGS_START}",
        )
    return Check("qgs-socket", Status.PASS, f"{path} is a socket, {_describe(st)}")


def _identity() -> str:
    groups = sorted(set(os.getgroups()) | {os.getgid()})
    return f"this process runs as uid {os.getuid()} with groups {groups}"


_ERROR = re.compile(r"answered error (0x[0-9a-f]+)")


def check_qgs_answers(path: Path, probes: Probes, timeout: float) -> Check:
    try:
        probes.connect(str(path), timeout)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return Check(
                "qgs-answers",
                Status.FAIL,
                f"permission denied connecting to {path} ({_identity()}): connecting needs write "
                "permission on the socket (its group, mode 0660) and search permission on its directories",
                "run the doctor as root or in the socket's group (see qgs-access); QEMU needs the same",
            )
        if exc.errno == errno.ECONNREFUSED:
            return Check(
                "qgs-answers",
                Status.FAIL,
                f"nothing listens on {path} (connection refused): a stale socket of a QGS that stopped",
                "restart the QGS (kubectl -n kube-system rollout restart ds/<release>-qgs, or systemctl "
                "restart qgsd); sgx-quote-helper qgs serve replaces a stale socket",
            )
        return Check(
            "qgs-answers", Status.FAIL, f"cannot connect to {path}: {exc.strerror or exc}", _QGS_START
        )
    client = probes.qgs_client_factory(path, timeout)
    try:
        info = client.platform_info()
    except BadResponseError as exc:
        code = _ERROR.search(str(exc))
        if code is None:  # e.g. Intel's error-form reply, which Intel's own inflater rejects
            return _quote_probe(path, probes, timeout, f"GET_PLATFORM_INFO: {exc}")
        return Check(
            "qgs-answers",
            Status.WARN,
            f"a QGS answers on {path}, but GET_PLATFORM_INFO got error {code.group(1)}: it speaks the "
            "protocol, yet could not read its TDQE's and PCE's identity (they did not load?)",
            "read the QGS's log; check its SGX devices (qgs-tdqe-devices) and the platform's provisioning",
        )
    except TransportError as exc:
        if "closed" not in str(exc):
            return Check(
                "qgs-answers",
                Status.FAIL,
                f"the QGS accepted the connection but did not answer: {exc}",
                "the QGS hangs or is overloaded (all workers busy with a slow TDQE?); restart it",
            )
        return _quote_probe(
            path,
            probes,
            timeout,
            "it closed GET_PLATFORM_INFO unanswered (a socket limited to GET_QUOTE, qgs serve --allow get-quote)",
        )
    return Check(
        "qgs-answers",
        Status.PASS,
        f"a QGS answers GET_PLATFORM_INFO on {path}: TDQE ISVSVN {info.tdqe_isvsvn}, PCE ISVSVN "
        f"{info.pce_isvsvn}, platform id {info.platform_id.hex() or '-'}",
    )


def _quote_probe(path: Path, probes: Probes, timeout: float, first: str) -> Check:
    """GET_PLATFORM_INFO did not give an answer (``first`` says how): a framed GET_QUOTE of an
    all-zero TDREPORT, which a live TDQE refuses."""
    try:
        probes.qgs_client_factory(path, timeout).get_quote(bytes(1024))
    except BadResponseError as exc:
        code = _ERROR.search(str(exc))
        if code is None:
            return Check(
                "qgs-answers",
                Status.FAIL,
                f"something answers on {path} but not in the QGS protocol: {exc} ({first})",
                "make sure the path belongs to a QGS (sgx-quote-helper qgs serve or Intel's qgsd)",
            )
        return Check(
            "qgs-answers",
            Status.PASS,
            f"a QGS serves {path}: {first}; it refused a dummy all-zero TDREPORT with error "
            f"{code.group(1)}, as a live TDQE does",
        )
    except TransportError as exc:
        if "closed" not in str(exc):
            return Check(
                "qgs-answers",
                Status.FAIL,
                f"the QGS did not answer a GET_QUOTE: {exc}",
                "the QGS hangs or is overloaded; restart it",
            )
        return Check(
            "qgs-answers",
            Status.WARN,
            f"the server on {path} closed GET_PLATFORM_INFO and a dummy GET_QUOTE without answering: "
            "Intel's qgsd does that with a report its TDQE refuses, so it may well be live, but nothing "
            "here proves it",
            "get a quote from a TD guest (sgx-quote-helper tdx quote) and read the QGS's log",
        )
    return Check(
        "qgs-answers",
        Status.WARN,
        f"the QGS on {path} quoted an all-zero TDREPORT that no TDX module made: it does not check "
        "report MACs (a test double?)",
        "use a real quoting engine (a TDQE refuses reports the TDX module did not make)",
    )


def _reaches(st: os.stat_result, gid: int, bits_group: int, bits_other: int) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    return bool(mode & bits_other) or (st.st_gid == gid and bool(mode & bits_group))


def check_qgs_access(path: Path, qemu_gid: int | None) -> Check:
    try:
        st = path.stat()
    except OSError as exc:
        return Check("qgs-access", Status.SKIP, f"cannot stat {path}: {exc.strerror or exc}")
    mode = stat.S_IMODE(st.st_mode)
    who = f"{path}: {_describe(st)}"
    if mode & 0o002:
        return Check(
            "qgs-access",
            Status.WARN,
            f"{who}: any local user (and any pod that mounts the directory) can ask this QGS for quotes",
            "serve it 0660 with QEMU's group, as Intel's QGS does: sgx-quote-helper qgs serve "
            "--socket-mode 0660 --socket-group <QEMU's gid> (the chart: qgs.socketGid)",
        )
    if qemu_gid is None:
        reach = "members of group " + _group_name(st.st_gid) if mode & 0o020 else f"uid {st.st_uid} only"
        return Check(
            "qgs-access",
            Status.PASS,
            f"{who}: root and {reach} can connect; QEMU must run as one of them (--qemu-group checks a group)",
        )
    blocked = []
    if not _reaches(st, qemu_gid, 0o020, 0o002):
        blocked.append(f"the socket (needs group {qemu_gid} with g+w, or o+w)")
    for parent in path.parents:
        try:
            pst = parent.stat()
        except OSError:
            continue
        if not _reaches(pst, qemu_gid, 0o010, 0o001):
            blocked.append(f"directory {parent} ({_describe(pst)}: no search permission)")
    if blocked:
        return Check(
            "qgs-access",
            Status.FAIL,
            f"{who}: QEMU in group {_group_name(qemu_gid)} cannot connect through "
            + "; ".join(blocked)
            + " (unless QEMU runs as root, as Kata's does by default)",
            f"sgx-quote-helper qgs serve --socket-group {qemu_gid} (the chart: qgs.socketGid={qemu_gid}), "
            "or put QEMU's user in the socket's group (Intel: usermod -aG qgsd <qemu user>; Kata "
            "rootless QEMU cannot open a 0660 socket of another group)",
        )
    return Check("qgs-access", Status.PASS, f"{who}: QEMU in group {_group_name(qemu_gid)} can connect")


def check_tdqe_devices(options: DoctorOptions) -> Check:
    devices = find_devices(options.dev_root)
    if devices.layout == "none":
        return Check(
            "qgs-tdqe-devices",
            Status.WARN,
            f"no SGX device nodes under {options.dev_root}: a QGS on hardware cannot load the TDQE (an "
            "SGX enclave); fine for qgs serve --engine simulated",
            "enable SGX in the BIOS (TDX needs it for the TDQE); in a pod, request the device plugin's "
            "EPC and provision resources (the chart's QGS DaemonSet does)",
        )
    if devices.provision is None:
        return Check(
            "qgs-tdqe-devices",
            Status.FAIL,
            f"{devices.enclave} is there but no /dev/sgx_provision: the TDQE and PCE cannot load (0x4004)",
            "give the QGS /dev/sgx_provision (the sgx.intel.com/provision resource, or a device mount)",
        )
    shown = []
    for node in (devices.enclave, devices.provision):
        assert node is not None
        local = options.dev_root / Path(node).relative_to("/dev")
        try:
            shown.append(f"{node} ({_describe(local.stat())})")
        except OSError as exc:
            shown.append(f"{node} ({exc.strerror})")
    return Check(
        "qgs-tdqe-devices",
        Status.PASS,
        "the TDQE's devices: " + ", ".join(shown) + "; the QGS's user needs read/write on both (root, "
        "or the groups sgx and sgx_prv)",
    )


def host_checks(options: DoctorOptions, probes: Probes) -> list[Check]:
    """The five host checks (see the module doc); the QGS ones each need the one before."""
    explicit = options.qgs_socket is not None
    path = options.qgs_socket or options.default_qgs_socket
    tdx_on = _kvm_tdx(options) in ("Y", "1")
    if not (explicit or os.path.lexists(path) or tdx_on):
        reason = f"no --qgs-socket, {path} does not exist and KVM runs no TD guests here: not a TDX host"
        return [Check(name, Status.SKIP, reason) for name in HOST_NAMES]
    checks = [check_tdx_host(options)]
    sock = check_qgs_socket(path, explicit)
    checks.append(sock)
    if sock.status is not Status.PASS:
        checks += [
            Check(n, Status.SKIP, "not run: qgs-socket did not pass") for n in ("qgs-answers", "qgs-access")
        ]
    else:
        checks.append(check_qgs_answers(path, probes, options.timeout))
        checks.append(check_qgs_access(path, options.qemu_gid))
    checks.append(check_tdqe_devices(options))
    return checks


__all__ = ["GUEST_NAMES", "HOST_NAMES", "GuestFacts", "check_attest_conf", "guest_checks", "host_checks"]
