"""The committed device plugin API modules match the .proto, and the .proto keeps the API's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_quote_helper.k8s import deviceplugin_pb2 as pb

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO = "sgx_quote_helper/k8s/deviceplugin.proto"
GENERATED = ("deviceplugin_pb2.py", "deviceplugin_pb2.pyi", "deviceplugin_pb2_grpc.py")


def test_generated_modules_are_current(tmp_path: Path) -> None:
    grpc_tools = pytest.importorskip("grpc_tools")
    from grpc_tools import protoc

    committed_version = (SRC / "sgx_quote_helper/k8s/deviceplugin_pb2_grpc.py").read_text()
    import importlib.metadata

    tools_version = importlib.metadata.version("grpcio-tools")
    if f"GRPC_GENERATED_VERSION = '{tools_version}'" not in committed_version:
        pytest.skip(f"grpcio-tools {tools_version} differs from the generator of the committed files")
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{SRC}",
            f"-I{include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(SRC / PROTO),
        ]
    )
    assert rc == 0
    for name in GENERATED:
        fresh = (tmp_path / "sgx_quote_helper/k8s" / name).read_text()
        committed = (SRC / "sgx_quote_helper/k8s" / name).read_text()
        assert fresh == committed, f"{name} is stale: regenerate it (command in {PROTO})"


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
