"""What an SGX node offers Kubernetes: EPC size, SGX device nodes and the resources to advertise.

Pure decision logic over a sysfs root and a dev root (both parameters, so tests use temp trees):

* EPC size per NUMA node from ``<sysfs>/devices/system/node/node*/x86/sgx_total_bytes`` (Linux >= 5.17),
  else from CPUID leaf 0x12 through an injected :data:`CpuidReader`.
* The device layout: the in-kernel driver (``/dev/sgx_enclave``, ``/dev/sgx_provision``, Linux >= 5.11),
  the old DCAP driver (``/dev/sgx/enclave``, ``/dev/sgx/provision``) or the out-of-tree driver
  (``/dev/isgx``, no provisioning node).
* :func:`plan_resources`: which extended resources to advertise, with their device IDs and what
  ``Allocate`` hands out. ``/dev/sgx_provision`` is only ever in the provision resource.

No gRPC, no sockets, no clock: ``plugin.py`` owns those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, PlatformStateError

MIB = 1024 * 1024

AZURE_EPC_RESOURCE = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
INTEL_EPC_RESOURCE = "sgx.intel.com/epc"
INTEL_ENCLAVE_RESOURCE = "sgx.intel.com/enclave"
INTEL_PROVISION_RESOURCE = "sgx.intel.com/provision"

#: (leaf, subleaf) -> (eax, ebx, ecx, edx)
CpuidReader = Callable[[int, int], tuple[int, int, int, int]]

SGX_CPUID_LEAF = 0x12  # Intel SDM vol. 3D, "Enumeration of Intel SGX resources"
_MAX_EPC_SECTIONS = 8  # sub-leaves 2..9; the kernel (arch/x86/kernel/cpu/sgx) stops at 8 too

_NODE_DIR = re.compile(r"^node(\d+)$")


@dataclass(frozen=True)
class EpcSection:
    """One EPC section from CPUID.(EAX=0x12, ECX>=2): physical base and size in bytes."""

    base: int
    size: int


@dataclass(frozen=True)
class EpcInfo:
    """Total EPC and how it splits over NUMA nodes; ``source`` is "sysfs", "cpuid" or "none"."""

    per_node: dict[int, int]
    source: str

    @property
    def total_bytes(self) -> int:
        return sum(self.per_node.values())

    @property
    def total_mib(self) -> int:
        """Whole MiB of EPC (what ``kubernetes.azure.com/sgx_epc_mem_in_MiB`` counts)."""
        return self.total_bytes // MIB


def read_sysfs_epc(sysfs_root: Path) -> dict[int, int] | None:
    """EPC bytes per NUMA node from sysfs, or None when no node reports ``sgx_total_bytes``.

    Raises:
        PlatformStateError: a ``sgx_total_bytes`` file exists but does not hold a number.
    """
    base = sysfs_root / "devices" / "system" / "node"
    if not base.is_dir():
        return None
    found: dict[int, int] = {}
    for entry in sorted(base.iterdir()):
        m = _NODE_DIR.match(entry.name)
        if not m:
            continue
        path = entry / "x86" / "sgx_total_bytes"
        if not path.is_file():
            continue
        raw = path.read_bytes()[:64]
        text = raw.decode("ascii", "replace").strip()
        try:
            if not text.isdigit():
                raise ValueError(text)
            value = int(text, 10)
        except ValueError:
            raise PlatformStateError(f"{path}: expected a byte count, found {text[:40]!r}") from None
        found[int(m.group(1))] = value
    return found or None


def epc_sections_from_cpuid(cpuid: CpuidReader) -> list[EpcSection]:
    """Walk CPUID leaf 0x12 sub-leaves 2, 3, ... until an invalid section (EAX[3:0] == 0).

    Returns [] when CPUID.7.0:EBX bit 2 (SGX) is clear.
    """
    _, ebx7, _, _ = cpuid(7, 0)
    if not (ebx7 >> 2) & 1:
        return []
    sections: list[EpcSection] = []
    for sub in range(2, 2 + _MAX_EPC_SECTIONS):
        eax, ebx, ecx, edx = cpuid(SGX_CPUID_LEAF, sub)
        if eax & 0xF == 0:
            break
        base = ((ebx & 0xFFFFF) << 32) | (eax & 0xFFFFF000)
        size = ((edx & 0xFFFFF) << 32) | (ecx & 0xFFFFF000)
        sections.append(EpcSection(base, size))
    return sections


def discover_epc(sysfs_root: Path, cpuid: CpuidReader | None = None) -> EpcInfo:
    """EPC from sysfs, else from CPUID (all of it counted on NUMA node 0), else none."""
    per_node = read_sysfs_epc(sysfs_root)
    if per_node is not None:
        return EpcInfo(per_node, "sysfs")
    if cpuid is not None:
        sections = epc_sections_from_cpuid(cpuid)
        if sections:
            return EpcInfo({0: sum(s.size for s in sections)}, "cpuid")
    return EpcInfo({}, "none")


def dev_cpuid_reader(dev_root: Path, cpu: int = 0) -> CpuidReader:
    """A :data:`CpuidReader` over Linux's ``<dev>/cpu/N/cpuid`` (the ``cpuid`` module; needs root).

    The kernel ABI: ``pread`` 16 bytes at offset ``leaf | subleaf << 32`` gives EAX, EBX, ECX, EDX
    little-endian. Errors surface as :class:`PlatformStateError` when the reader is called.
    """
    path = dev_root / "cpu" / str(cpu) / "cpuid"

    def read(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise PlatformStateError(
                f"cannot open {path}: {exc.strerror} (is the cpuid module loaded?)"
            ) from None
        try:
            raw = os.pread(fd, 16, leaf | (subleaf << 32))
        except OSError as exc:
            raise PlatformStateError(f"cannot read {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(raw) != 16:
            raise PlatformStateError(
                f"{path}: short read ({len(raw)} of 16 bytes) for leaf {leaf:#x}.{subleaf}"
            )
        return (
            int.from_bytes(raw[0:4], "little"),
            int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"),
            int.from_bytes(raw[12:16], "little"),
        )

    return read


# ---------------------------------------------------------------------------------------------
# Device nodes


@dataclass(frozen=True)
class SgxDevices:
    """The SGX device nodes found under a dev root, as host paths (``/dev/...``).

    ``layout`` is "in-kernel", "dcap-legacy", "out-of-tree" or "none".
    """

    layout: str
    enclave: str | None = None
    provision: str | None = None


#: newest first: (layout, enclave node, provision node), paths relative to /dev
_LAYOUTS: tuple[tuple[str, str, str | None], ...] = (
    ("in-kernel", "sgx_enclave", "sgx_provision"),
    ("dcap-legacy", "sgx/enclave", "sgx/provision"),
    ("out-of-tree", "isgx", None),
)
_EXPECTED_PROVISION = {layout: f"/dev/{prov}" for layout, _, prov in _LAYOUTS if prov}


def find_devices(dev_root: Path) -> SgxDevices:
    """Probe ``dev_root`` for the SGX device layouts, newest first.

    The returned paths are host paths under ``/dev`` (what the kubelet mounts), even when the
    plugin sees the host's ``/dev`` at another ``dev_root``. Symlinks count when their target exists
    (PSW udev rules make ``/dev/sgx/*`` links to the in-kernel nodes).
    """
    for layout, enclave, provision in _LAYOUTS:
        if (dev_root / enclave).exists():
            prov = provision if provision is not None and (dev_root / provision).exists() else None
            return SgxDevices(layout, f"/dev/{enclave}", f"/dev/{prov}" if prov else None)
    return SgxDevices("none")


# ---------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True)
class DeviceNode:
    """One ``DeviceSpec`` of an Allocate answer."""

    host_path: str
    container_path: str
    permissions: str = "rw"


@dataclass(frozen=True)
class ResourcePlan:
    """One extended resource: its devices (ID -> NUMA node or None) and what Allocate hands out.

    The devices are healthy while every host node in ``allocate`` exists (see :func:`plan_healthy`).
    """

    resource_name: str
    device_ids: dict[str, int | None]
    allocate: tuple[DeviceNode, ...]
    description: str = ""
    socket_name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.socket_name:
            object.__setattr__(self, "socket_name", socket_name_for(self.resource_name))


@dataclass(frozen=True)
class PluginConfig:
    """Which resources the plugin advertises (see ``sgx-quote-helper device-plugin --help``)."""

    epc_resource: str = AZURE_EPC_RESOURCE
    provision_resource: str | None = INTEL_PROVISION_RESOURCE
    provision_slots: int = 2
    enclave_resource: str | None = None
    enclave_slots: int = 110
    legacy_paths: bool = False

    def __post_init__(self) -> None:
        names = [n for n in (self.epc_resource, self.provision_resource, self.enclave_resource) if n]
        for name in names:
            check_resource_name(name)
        if len(set(names)) != len(names):
            raise ConfigError(f"resource names must differ: {names}")
        if self.provision_slots < 1 or self.enclave_slots < 1:
            raise ConfigError("slot counts must be at least 1")


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def check_resource_name(name: str) -> None:
    """Refuse names the kubelet would refuse: ``domain/name``, outside ``kubernetes.io``.

    Raises:
        ConfigError: with the reason.
    """
    domain, sep, short = name.partition("/")
    if not sep or not _DNS_SUBDOMAIN.match(domain) or len(domain) > 253:
        raise ConfigError(f"resource name {name!r} needs a DNS domain prefix, like example.com/thing")
    if not _NAME.match(short) or len(short) > 63:
        raise ConfigError(f"resource name {name!r}: {short!r} is not a valid qualified name")
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise ConfigError(f"resource name {name!r}: the kubernetes.io domain is reserved")


def socket_name_for(resource_name: str) -> str:
    """The plugin socket file name for a resource: ``<domain>-<name>.sock``."""
    return resource_name.replace("/", "-") + ".sock"


def _nodes(host: str, role: str, legacy_paths: bool) -> tuple[DeviceNode, ...]:
    """DeviceSpecs for one device node: the host path as is, plus the other layout's name.

    Containers see the node at its host path; with ``legacy_paths`` an in-kernel node is also
    shown at ``/dev/sgx/<role>`` for old SDKs, and a legacy node at ``/dev/sgx_<role>``.
    """
    nodes = [DeviceNode(host, host)]
    if legacy_paths:
        alias = f"/dev/sgx/{role}" if host == f"/dev/sgx_{role}" else f"/dev/sgx_{role}"
        if alias != host:
            nodes.append(DeviceNode(host, alias))
    return tuple(nodes)


def plan_resources(epc: EpcInfo, devices: SgxDevices, config: PluginConfig) -> list[ResourcePlan]:
    """The resources to advertise on this node.

    * EPC: one device per MiB (IDs "0".."N-1", NUMA node from the sysfs split), Allocate hands
      out the enclave node only. Nothing when the node has no EPC.
    * provision (optional): ``provision_slots`` shareable slots handing out ``/dev/sgx_provision``;
      only the quote-helper pod should request it. Not with the out-of-tree driver (no such node).
    * enclave (optional, Intel's name): ``enclave_slots`` slots handing out the enclave node.

    Device paths come from ``devices`` as found at start-up; health is re-checked later. A node
    with neither EPC nor SGX device nodes gets nothing.
    """
    plans: list[ResourcePlan] = []
    enclave = devices.enclave or "/dev/sgx_enclave"
    if epc.total_mib > 0:
        ids: dict[str, int | None] = {}
        numa_known = epc.source == "sysfs"
        for node, size in sorted(epc.per_node.items()):
            for _ in range(size // MIB):
                ids[str(len(ids))] = node if numa_known else None
        # whole MiB per node may sum below total_mib: keep the total exact on the last node
        last = max(epc.per_node) if numa_known else None
        while len(ids) < epc.total_mib:
            ids[str(len(ids))] = last
        plans.append(
            ResourcePlan(
                config.epc_resource,
                ids,
                _nodes(enclave, "enclave", config.legacy_paths),
                f"{epc.total_mib} MiB of EPC (from {epc.source})",
            )
        )
    sgx_present = devices.layout != "none" or epc.total_mib > 0
    if config.provision_resource and sgx_present and devices.layout != "out-of-tree":
        provision = devices.provision or _EXPECTED_PROVISION.get(devices.layout, "/dev/sgx_provision")
        plans.append(
            ResourcePlan(
                config.provision_resource,
                {f"provision-{i}": None for i in range(config.provision_slots)},
                _nodes(provision, "provision", config.legacy_paths),
                f"{config.provision_slots} slots of {provision} (for the quote helper only)",
            )
        )
    if config.enclave_resource and sgx_present:
        plans.append(
            ResourcePlan(
                config.enclave_resource,
                {f"enclave-{i}": None for i in range(config.enclave_slots)},
                _nodes(enclave, "enclave", config.legacy_paths),
                f"{config.enclave_slots} slots of {enclave}",
            )
        )
    return plans


def missing_nodes(dev_root: Path, plan: ResourcePlan) -> list[str]:
    """The host device nodes of ``plan`` that do not exist under ``dev_root`` (host paths)."""
    return [
        n.host_path
        for n in plan.allocate
        if not (dev_root / PurePosixPath(n.host_path).relative_to("/dev")).exists()
    ]


def plan_healthy(dev_root: Path, plan: ResourcePlan) -> bool:
    """True while every host device node the plan hands out exists under ``dev_root``."""
    return not missing_nodes(dev_root, plan)


def node_capacity_patch(resource_name: str, value: int) -> list[dict[str, object]]:
    """RFC 6902 patch for the Node status that publishes ``resource_name`` (e.g. ``sgx.intel.com/epc``
    in bytes) as node capacity, the way Intel's ``sgx_epchook -register`` does."""
    pointer = resource_name.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/status/capacity/{pointer}", "value": str(value)}]


__all__ = [
    "AZURE_EPC_RESOURCE",
    "INTEL_ENCLAVE_RESOURCE",
    "INTEL_EPC_RESOURCE",
    "INTEL_PROVISION_RESOURCE",
    "MIB",
    "CpuidReader",
    "DeviceNode",
    "EpcInfo",
    "EpcSection",
    "PluginConfig",
    "ResourcePlan",
    "SgxDevices",
    "check_resource_name",
    "dev_cpuid_reader",
    "discover_epc",
    "epc_sections_from_cpuid",
    "find_devices",
    "missing_nodes",
    "node_capacity_patch",
    "plan_healthy",
    "plan_resources",
    "read_sysfs_epc",
    "socket_name_for",
]
