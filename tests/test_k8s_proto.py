"""The committed device plugin API modules match the .proto, and the .proto keeps the API's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_quote_helper.k8s import deviceplugin_pb2 as pb
from tests.protogen import differences, generate

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO = "sgx_quote_helper/k8s/deviceplugin.proto"
GENERATED = ("deviceplugin_pb2.py", "deviceplugin_pb2.pyi", "deviceplugin_pb2_grpc.py")


def test_generated_modules_are_current(tmp_path: Path) -> None:
    # regenerated with the installed grpcio-tools and compared by meaning: never skipped
    generate(SRC, PROTO, tmp_path, pyi=True, grpc=True)
    stale = differences(tmp_path / "sgx_quote_helper/k8s", SRC / "sgx_quote_helper/k8s", GENERATED)
    assert stale == [], f"{stale} are stale: regenerate them (command in {PROTO})"


def test_a_changed_proto_is_caught(tmp_path: Path) -> None:
    # the comparison can fail: one more field in a copy of the .proto makes every module differ
    root = tmp_path / "src"
    (root / "sgx_quote_helper/k8s").mkdir(parents=True)
    text = (SRC / PROTO).read_text()
    marker = "message Empty {"
    assert marker in text
    (root / PROTO).write_text(text.replace(marker, marker + "\n    string added = 1;", 1))
    out = tmp_path / "out"
    out.mkdir()
    generate(root, PROTO, out, pyi=True, grpc=True)
    stale = differences(out / "sgx_quote_helper/k8s", SRC / "sgx_quote_helper/k8s", GENERATED)
    assert stale == ["deviceplugin_pb2.py", "deviceplugin_pb2.pyi"]


# (message, field, number) from k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto
API_FIELDS = [
    ("DevicePluginOptions", "pre_start_required", 1),
    ("DevicePluginOptions", "get_preferred_allocation_available", 2),
    ("RegisterRequest", "version", 1),
    ("RegisterRequest", "endpoint", 2),
    ("RegisterRequest", "resource_name", 3),
    ("RegisterRequest", "options", 4),
    ("ListAndWatchResponse", "devices", 1),
    ("TopologyInfo", "nodes", 1),
    ("NUMANode", "ID", 1),
    ("Device", "ID", 1),
    ("Device", "health", 2),
    ("Device", "topology", 3),
    ("PreStartContainerRequest", "devices_ids", 1),
    ("PreferredAllocationRequest", "container_requests", 1),
    ("ContainerPreferredAllocationRequest", "available_deviceIDs", 1),
    ("ContainerPreferredAllocationRequest", "must_include_deviceIDs", 2),
    ("ContainerPreferredAllocationRequest", "allocation_size", 3),
    ("PreferredAllocationResponse", "container_responses", 1),
    ("ContainerPreferredAllocationResponse", "deviceIDs", 1),
    ("AllocateRequest", "container_requests", 1),
    ("ContainerAllocateRequest", "devices_ids", 1),
    ("CDIDevice", "name", 1),
    ("AllocateResponse", "container_responses", 1),
    ("ContainerAllocateResponse", "envs", 1),
    ("ContainerAllocateResponse", "mounts", 2),
    ("ContainerAllocateResponse", "devices", 3),
    ("ContainerAllocateResponse", "annotations", 4),
    ("ContainerAllocateResponse", "cdi_devices", 5),
    ("Mount", "container_path", 1),
    ("Mount", "host_path", 2),
    ("Mount", "read_only", 3),
    ("DeviceSpec", "container_path", 1),
    ("DeviceSpec", "host_path", 2),
    ("DeviceSpec", "permissions", 3),
]


@pytest.mark.parametrize(("message", "field", "number"), API_FIELDS)
def test_field_numbers_are_the_apis(message: str, field: str, number: int) -> None:
    assert pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_service_paths_are_the_kubelets() -> None:
    assert pb.DESCRIPTOR.package == "v1beta1"
    services = {s.full_name: [m.name for m in s.methods] for s in pb.DESCRIPTOR.services_by_name.values()}
    assert services == {
        "v1beta1.Registration": ["Register"],
        "v1beta1.DevicePlugin": [
            "GetDevicePluginOptions",
            "ListAndWatch",
            "GetPreferredAllocation",
            "Allocate",
            "PreStartContainer",
        ],
    }
    methods = pb.DESCRIPTOR.services_by_name["DevicePlugin"].methods_by_name
    assert [n for n, m in methods.items() if m.server_streaming] == ["ListAndWatch"]


def test_a_known_wire_encoding() -> None:
    # RegisterRequest{version="v1beta1"} is field 1, wire type 2: 0x0a, length 7
    assert pb.RegisterRequest(version="v1beta1").SerializeToString() == b"\x0a\x07v1beta1"
    assert pb.ContainerAllocateRequest(devices_ids=["3"]).SerializeToString() == b"\x0a\x013"
