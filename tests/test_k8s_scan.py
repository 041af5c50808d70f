"""k8s/scan.py: EPC from sysfs and CPUID, device layouts, the resources to advertise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import ConfigError, PlatformStateError
from sgx_quote_helper.k8s import scan
from sgx_quote_helper.k8s.scan import MIB, EpcInfo, PluginConfig, SgxDevices


def make_sysfs(root: Path, sizes: dict[int, int | str]) -> Path:
    for node, size in sizes.items():
        d = root / "devices" / "system" / "node" / f"node{node}" / "x86"
        d.mkdir(parents=True)
        (d / "sgx_total_bytes").write_text(f"{size}\n")
    return root


def make_dev(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


class FakeCpuid:
    """CPUID with SGX on and the given EPC sections (base, size) in leaf 0x12."""

    def __init__(self, sections: list[tuple[int, int]], sgx: bool = True) -> None:
        self.sections = sections
        self.sgx = sgx
        self.calls: list[tuple[int, int]] = []

    def __call__(self, leaf: int, sub: int) -> tuple[int, int, int, int]:
        self.calls.append((leaf, sub))
        if leaf == 7:
            return (0, 0b100 if self.sgx else 0, 0, 0)
        assert leaf == 0x12
        i = sub - 2
        if i >= len(self.sections):
            return (0, 0, 0, 0)
        base, size = self.sections[i]
        eax = (base & 0xFFFFF000) | 1  # type 1: EPC section
        ebx = base >> 32
        ecx = (size & 0xFFFFF000) | 1  # protected by confidentiality/integrity
        edx = size >> 32
        return (eax, ebx, ecx, edx)


def test_sysfs_epc_per_numa_node(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {0: 64 * MIB, 1: 32 * MIB})
    (tmp_path / "devices/system/node/has_cpu").write_text("0-1\n")  # non-node entries ignored
    epc = scan.discover_epc(sysfs, cpuid=FakeCpuid([(0, 1 << 40)]))
    assert epc.source == "sysfs"
    assert epc.per_node == {0: 64 * MIB, 1: 32 * MIB}
    assert epc.total_mib == 96


@pytest.mark.parametrize("bad", ["lots", "-5", "", "+5", "1_000", "٣"])
def test_sysfs_garbage_is_a_platform_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PlatformStateError):
        scan.read_sysfs_epc(make_sysfs(tmp_path, {0: bad}))


def test_cpuid_fallback_sums_sections(tmp_path: Path) -> None:
    # two sections, one above 4 GiB, one larger than 4 GiB: both high halves matter
    cpuid = FakeCpuid([(0x1_8000_0000, 0x0C00_0000), (0x20_0000_0000, 0x1_0000_0000)])
    epc = scan.discover_epc(tmp_path / "no-sysfs", cpuid=cpuid)
    assert epc.source == "cpuid"
    assert epc.total_bytes == 0x0C00_0000 + 0x1_0000_0000
    sections = scan.epc_sections_from_cpuid(cpuid)
    assert sections == [
        scan.EpcSection(0x1_8000_0000, 0x0C00_0000),
        scan.EpcSection(0x20_0000_0000, 0x1_0000_0000),
    ]
    assert (0x12, 4) in cpuid.calls  # walked until the invalid section


def test_cpuid_without_sgx_and_no_reader(tmp_path: Path) -> None:
    assert scan.discover_epc(tmp_path, cpuid=FakeCpuid([(0, 64 * MIB)], sgx=False)).source == "none"
    none = scan.discover_epc(tmp_path, cpuid=None)
    assert (none.source, none.total_mib) == ("none", 0)


def test_dev_cpuid_reader_uses_the_kernel_offsets(tmp_path: Path) -> None:
    path = tmp_path / "cpu" / "0" / "cpuid"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:  # sparse file laid out like /dev/cpu/0/cpuid
        f.seek(0x12 | (2 << 32))
        f.write((0x1001).to_bytes(4, "little") + (0).to_bytes(4, "little"))
        f.write((0x0400_0001).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    read = scan.dev_cpuid_reader(tmp_path)
    assert read(0x12, 2) == (0x1001, 0, 0x0400_0001, 0)
    with pytest.raises(PlatformStateError):
        scan.dev_cpuid_reader(tmp_path / "nothing")(7, 0)
    os.truncate(path, 0x12 | (3 << 32))
    with pytest.raises(PlatformStateError):
        read(0x12, 3)  # past the end: short read


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            ("sgx_enclave", "sgx_provision", "sgx/enclave"),
            SgxDevices("in-kernel", "/dev/sgx_enclave", "/dev/sgx_provision"),
        ),
        (("sgx_enclave",), SgxDevices("in-kernel", "/dev/sgx_enclave", None)),
        (
            ("sgx/enclave", "sgx/provision"),
            SgxDevices("dcap-legacy", "/dev/sgx/enclave", "/dev/sgx/provision"),
        ),
        (("isgx",), SgxDevices("out-of-tree", "/dev/isgx", None)),
        ((), SgxDevices("none")),
    ],
)
def test_device_layouts(tmp_path: Path, names: tuple[str, ...], expected: SgxDevices) -> None:
    assert scan.find_devices(make_dev(tmp_path, *names)) == expected


def test_symlinked_legacy_nodes_count_only_with_a_target(tmp_path: Path) -> None:
    (tmp_path / "sgx").mkdir()
    (tmp_path / "sgx" / "enclave").symlink_to("../sgx_enclave")
    assert scan.find_devices(tmp_path).layout == "none"  # dangling
    make_dev(tmp_path, "sgx_enclave")
    assert scan.find_devices(tmp_path).layout == "in-kernel"


def test_plan_one_device_per_mib_with_numa(tmp_path: Path) -> None:
    epc = EpcInfo({0: 3 * MIB, 1: 2 * MIB + 512 * 1024}, "sysfs")
    devices = SgxDevices("in-kernel", "/dev/sgx_enclave", "/dev/sgx_provision")
    plans = scan.plan_resources(epc, devices, PluginConfig(provision_slots=3))
    epc_plan, prov = plans
    assert epc_plan.resource_name == scan.AZURE_EPC_RESOURCE
    assert epc_plan.device_ids == {"0": 0, "1": 0, "2": 0, "3": 1, "4": 1}
    assert [n.host_path for n in epc_plan.allocate] == ["/dev/sgx_enclave"]
    assert epc_plan.socket_name == "kubernetes.azure.com-sgx_epc_mem_in_MiB.sock"
    assert prov.resource_name == scan.INTEL_PROVISION_RESOURCE
    assert len(prov.device_ids) == 3
    assert [(n.host_path, n.container_path) for n in prov.allocate] == [("/dev/sgx_provision",) * 2]


def test_provision_never_reaches_epc_or_enclave_resources() -> None:
    devices = SgxDevices("in-kernel", "/dev/sgx_enclave", "/dev/sgx_provision")
    config = PluginConfig(enclave_resource=scan.INTEL_ENCLAVE_RESOURCE, enclave_slots=4, legacy_paths=True)
    plans = scan.plan_resources(EpcInfo({0: 8 * MIB}, "cpuid"), devices, config)
    by_name = {p.resource_name: p for p in plans}
    assert set(by_name) == {
        scan.AZURE_EPC_RESOURCE,
        scan.INTEL_PROVISION_RESOURCE,
        scan.INTEL_ENCLAVE_RESOURCE,
    }
    for name in (scan.AZURE_EPC_RESOURCE, scan.INTEL_ENCLAVE_RESOURCE):
        paths = {n.host_path for n in by_name[name].allocate} | {
            n.container_path for n in by_name[name].allocate
        }
        assert not any("provision" in p for p in paths)
        assert {n.container_path for n in by_name[name].allocate} == {"/dev/sgx_enclave", "/dev/sgx/enclave"}
    assert set(by_name[scan.AZURE_EPC_RESOURCE].device_ids.values()) == {None}  # CPUID: no NUMA split


def test_plan_without_epc_or_provision() -> None:
    plans = scan.plan_resources(EpcInfo({}, "none"), SgxDevices("out-of-tree", "/dev/isgx"), PluginConfig())
    assert plans == []
    old = scan.plan_resources(
        EpcInfo({0: 2 * MIB}, "cpuid"), SgxDevices("out-of-tree", "/dev/isgx"), PluginConfig()
    )
    assert [(p.resource_name, p.allocate[0].host_path) for p in old] == [
        (scan.AZURE_EPC_RESOURCE, "/dev/isgx")
    ]


def test_plan_health_follows_device_nodes(tmp_path: Path) -> None:
    devices = SgxDevices("in-kernel", "/dev/sgx_enclave", "/dev/sgx_provision")
    epc_plan, prov = scan.plan_resources(EpcInfo({0: MIB}, "sysfs"), devices, PluginConfig())
    make_dev(tmp_path, "sgx_enclave")
    assert scan.plan_healthy(tmp_path, epc_plan)
    assert not scan.plan_healthy(tmp_path, prov)


@pytest.mark.parametrize(
    "name",
    [
        "sgx_epc",
        "kubernetes.io/sgx",
        "foo.kubernetes.io/x",
        "Bad_Domain.com/x",
        "example.com/",
        "example.com/-x",
    ],
)
def test_resource_names_the_kubelet_would_refuse(name: str) -> None:
    with pytest.raises(ConfigError):
        scan.check_resource_name(name)


def test_config_refuses_duplicates_and_zero_slots() -> None:
    with pytest.raises(ConfigError):
        PluginConfig(provision_resource=scan.AZURE_EPC_RESOURCE)
    with pytest.raises(ConfigError):
        PluginConfig(provision_slots=0)
    scan.check_resource_name("alibabacloud.com/sgx_epc_MiB")


def test_node_capacity_patch_escapes_the_pointer() -> None:
    assert scan.node_capacity_patch("sgx.intel.com/epc", 98566144) == [
        {"op": "add", "path": "/status/capacity/sgx.intel.com~1epc", "value": "98566144"}
    ]


def test_nothing_on_a_node_without_sgx() -> None:
    config = PluginConfig(enclave_resource=scan.INTEL_ENCLAVE_RESOURCE)
    assert scan.plan_resources(EpcInfo({}, "none"), SgxDevices("none"), config) == []


@pytest.fixture(scope="module")
def sysfs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-sysfs")
    (root / "devices/system/node/node0/x86").mkdir(parents=True)
    return root


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=40))
def test_fuzz_sysfs_bytes_parse_or_raise_our_error(sysfs_file: Path, raw: bytes) -> None:
    (sysfs_file / "devices/system/node/node0/x86/sgx_total_bytes").write_bytes(raw)
    try:
        found = scan.read_sysfs_epc(sysfs_file)
    except PlatformStateError:
        return
    assert found is not None and found[0] == int(raw.decode().strip())
