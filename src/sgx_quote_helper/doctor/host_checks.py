"""The host side of the doctor: SGX device nodes, EPC size, the quote provider library and its PCCS.

Device layouts and EPC come from :mod:`sgx_quote_helper.k8s.scan` (the device plugin's logic), so
the doctor and the plugin agree on what a node offers.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, PlatformStateError
from ..k8s.scan import MIB, SgxDevices, discover_epc, find_devices
from .model import Check, DoctorOptions, Facts, Probes, Status
from .qcnl import read_qcnl

_DEVICE_FIX = (
    "request SGX resources so the device plugin mounts the device (e.g. "
    "resources.limits: {kubernetes.azure.com/sgx_epc_mem_in_MiB: 10}), or pass it explicitly "
    "(docker run --device /dev/sgx_enclave)"
)


def _local(dev_root: Path, host_path: str) -> Path:
    return dev_root / PurePosixPath(host_path).relative_to("/dev")


def device_problem(path: Path, shown: str, probes: Probes) -> str | None:
    """Why ``path`` is not a usable device node for this process, or None."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"{shown}: {exc.strerror or exc}"
    if not stat.S_ISCHR(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a device node"
        return (
            f"{shown} is {kind}: a hostPath volume created it because the device did not exist at that "
            "path (the driver moved /dev/sgx to /dev/sgx_enclave?)"
        )
    if not probes.access(str(path), os.R_OK | os.W_OK):
        return (
            f"{shown} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid} gid {st.st_gid}) is not "
            f"readable and writable by uid {os.getuid()}: add the device's group (usually sgx, or "
            "sgx_prv for the provision node) as a supplemental group, or run as root"
        )
    return None


def check_devices(options: DoctorOptions, probes: Probes, facts: Facts) -> Check:
    """Which SGX device layout exists, and whether this process may open its nodes."""
    devices = find_devices(options.dev_root)
    if devices.layout == "none":
        if facts.simulated_engine:
            return Check(
                "sgx-devices",
                Status.SKIP,
                f"no SGX device nodes under {options.dev_root}; the daemon serves the simulated engine, "
                "which needs none",
            )
        if facts.out_of_process_app:
            return Check(
                "sgx-devices",
                Status.FAIL,
                f"no SGX device node under {options.dev_root}: the app cannot create its enclave "
                "(it needs /dev/sgx_enclave; only the quote helper needs /dev/sgx_provision)",
                _DEVICE_FIX,
            )
        return Check(
            "sgx-devices",
            Status.SKIP,
            f"no SGX device nodes under {options.dev_root} (/dev/sgx_enclave, /dev/sgx/enclave, "
            "/dev/isgx): not an SGX machine, fine for the simulated engine and for verification",
        )
    problems = []
    found = [devices.enclave] + ([devices.provision] if devices.provision else [])
    for host_path in found:
        assert host_path is not None
        problem = device_problem(_local(options.dev_root, host_path), host_path, probes)
        if problem and (host_path == devices.enclave or not facts.out_of_process_app):
            problems.append(problem)
    layout = f"{devices.layout} layout: " + ", ".join(h for h in found if h)
    if problems:
        return Check("sgx-devices", Status.FAIL, f"{layout}; " + "; ".join(problems), _DEVICE_FIX)
    return _provision_note(devices, layout, facts)


def _provision_note(devices: SgxDevices, layout: str, facts: Facts) -> Check:
    if devices.provision is None and devices.layout != "out-of-tree" and not facts.out_of_process_app:
        return Check(
            "sgx-devices",
            Status.WARN,
            f"{layout}; no provision node: Intel's quoting enclave cannot load here (0x4004, "
            "'enclave not authorized')",
            "the quote helper (or an in-process app) needs /dev/sgx_provision: the "
            "sgx.intel.com/provision resource or a device mount",
        )
    note = " (an app container needs no provision node)" if facts.out_of_process_app else ""
    return Check("sgx-devices", Status.PASS, f"{layout}, usable by this process{note}")


def check_epc(options: DoctorOptions, facts: Facts) -> Check:
    """EPC size from sysfs (Linux >= 5.17), as the device plugin reads it."""
    try:
        epc = discover_epc(options.sysfs_root)
    except PlatformStateError as exc:
        return Check("epc-size", Status.FAIL, str(exc), "check the kernel's SGX driver (dmesg | grep -i sgx)")
    has_devices = find_devices(options.dev_root).layout != "none"
    if epc.source == "none":
        why = "no SGX device either" if not has_devices else "the kernel does not report it (Linux < 5.17?)"
        return Check("epc-size", Status.SKIP, f"no EPC size in {options.sysfs_root}: {why}")
    if epc.total_bytes == 0:
        return Check(
            "epc-size",
            Status.FAIL,
            "the kernel reports 0 bytes of EPC: SGX is disabled or has no memory reserved",
            "enable SGX in the BIOS (or the VM size: Azure DCsv2/DCsv3/DCdsv3) with a PRMRR/EPC size",
        )
    nodes = ", ".join(f"node {n}: {b // MIB} MiB" for n, b in sorted(epc.per_node.items()))
    return Check("epc-size", Status.PASS, f"{epc.total_mib} MiB of EPC ({nodes})")


#: library file -> what it is
_PROVIDERS = (
    ("libdcap_quoteprov.so.1", "Intel's quote provider library (libsgx-dcap-default-qpl)"),
    ("libsgx_default_qcnl_wrapper.so.1", "Intel's QCNL (reads sgx_default_qcnl.conf)"),
    ("libdcap_quoteprov.so", "a quote provider library (az-dcap-client installs this name)"),
)


def _lib_dirs(options: DoctorOptions) -> list[Path]:
    extra = [Path(p) for p in options.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return extra + list(options.lib_dirs)


def check_quote_provider(options: DoctorOptions, facts: Facts) -> Check:
    """The quote provider library (libdcap_quoteprov / QCNL / az-dcap-client) is installed."""
    found: list[str] = []
    for name, what in _PROVIDERS:
        for directory in _lib_dirs(options):
            if (directory / name).exists():
                found.append(f"{what}: {directory / name}")
                break
    if found:
        return Check("quote-provider", Status.PASS, "; ".join(found))
    if facts.out_of_process_app:
        return Check(
            "quote-provider",
            Status.SKIP,
            "not installed here, and not needed: in out-of-process mode the quote helper's quoting "
            "enclave uses its own copy",
        )
    if find_devices(options.dev_root).layout == "none":
        return Check("quote-provider", Status.SKIP, "no SGX hardware here: nothing loads a quote provider")
    return Check(
        "quote-provider",
        Status.FAIL,
        "no quote provider library (libdcap_quoteprov.so.1 or az-dcap-client's libdcap_quoteprov.so) "
        "in " + ", ".join(str(d) for d in _lib_dirs(options)) + ": quotes made here have no PCK "
        "certificate data",
        "install libsgx-dcap-default-qpl (Intel PCCS) or az-dcap-client (Azure); --lib-dir adds "
        "directories to search",
    )


def check_pccs(options: DoctorOptions, probes: Probes) -> Check:
    """The PCCS URL (``--pccs-url`` or the QCNL file) answers HTTP."""
    try:
        conf = read_qcnl(options.qcnl_conf)
    except ConfigError as exc:
        return Check(
            "pccs",
            Status.FAIL,
            f"{options.qcnl_conf}: {exc}",
            'fix the file: JSON (DCAP >= 1.13, e.g. {"pccs_url": "https://host:8081/sgx/certification/v4/"}) '
            "or PCCS_URL=... lines",
        )
    url = options.pccs_url or (conf.pccs_url if conf else None)
    if not url:
        return Check(
            "pccs",
            Status.SKIP,
            f"no PCCS URL given (--pccs-url) or configured in {options.qcnl_conf}",
        )
    source = "--pccs-url" if options.pccs_url else f"pccs_url in {options.qcnl_conf} ({conf and conf.format})"
    verify = conf.use_secure_cert if conf else True
    try:
        status = probes.http_get(url, options.http_timeout, verify)
    except Exception as exc:  # urllib raises URLError, ssl errors, OSError, ValueError
        reason = getattr(exc, "reason", None) or exc
        tls = "CERTIFICATE_VERIFY_FAILED" in str(reason)
        fix = (
            'a PCCS with a self-signed certificate needs "use_secure_cert": false in the QCNL file, '
            "or install its CA"
            if tls
            else "check the URL, DNS and the egress rules (firewall, proxy) from this node to the PCCS"
        )
        return Check("pccs", Status.FAIL, f"{url} (from {source}) is not reachable: {reason}", fix)
    return Check(
        "pccs",
        Status.PASS,
        f"{url} (from {source}) answers HTTP {status} (any HTTP answer means reachable; "
        f"TLS verification {'on' if verify else 'off'})",
    )


__all__ = ["check_devices", "check_epc", "check_pccs", "check_quote_provider", "device_problem"]
