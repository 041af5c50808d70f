"""k8s/plugin.py against a fake kubelet over gRPC on Unix sockets in a temp dir.

The fake kubelet serves Registration on ``kubelet.sock`` and, like the real one, dials the
registered endpoint, asks for the options and opens ListAndWatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sgx_quote_helper.k8s import deviceplugin_pb2 as pb
from sgx_quote_helper.k8s import deviceplugin_pb2_grpc as pb_grpc
from sgx_quote_helper.k8s import scan
from sgx_quote_helper.k8s.plugin import DevicePluginManager
from sgx_quote_helper.k8s.scan import MIB, PluginConfig

WAIT = 10.0  # upper bound for awaited events; never a sleep


class FakeKubelet(pb_grpc.RegistrationServicer):  # type: ignore[misc]
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "kubelet.sock"
        self.registrations: asyncio.Queue[pb.RegisterRequest] = asyncio.Queue()
        self.lists: dict[str, asyncio.Queue[pb.ListAndWatchResponse]] = {}
        self.options: dict[str, pb.DevicePluginOptions] = {}
        self.channels: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Any = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        await self._server.start()

    async def stop(self, remove_plugin_sockets: bool = False) -> None:
        """Stop like a kubelet restart: optionally delete every plugin socket (CleanupPluginDirectory)."""
        for task in self._tasks:
            task.cancel()
        for channel in self.channels.values():
            await channel.close()
        await self._server.stop(0)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        if remove_plugin_sockets:
            for path in self.directory.glob("*.sock"):
                path.unlink()

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.Empty:
        if request.version != "v1beta1":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported version")
        self._tasks.append(asyncio.create_task(self._watch(request)))
        await self.registrations.put(request)
        return pb.Empty()

    async def _watch(self, request: pb.RegisterRequest) -> None:
        channel = grpc.aio.insecure_channel(f"unix://{self.directory / request.endpoint}")
        self.channels[request.resource_name] = channel
        stub = pb_grpc.DevicePluginStub(channel)
        self.options[request.resource_name] = await stub.GetDevicePluginOptions(pb.Empty())
        queue = self.lists.setdefault(request.resource_name, asyncio.Queue())
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for message in stub.ListAndWatch(pb.Empty()):
                await queue.put(message)

    def stub(self, resource: str) -> Any:
        return pb_grpc.DevicePluginStub(self.channels[resource])

    async def next_list(self, resource: str) -> pb.ListAndWatchResponse:
        queue = self.lists.setdefault(resource, asyncio.Queue())
        return await asyncio.wait_for(queue.get(), WAIT)

    async def next_registration(self) -> pb.RegisterRequest:
        return await asyncio.wait_for(self.registrations.get(), WAIT)


def node_tree(tmp_path: Path, epc_mib: int = 8) -> tuple[Path, Path, Path]:
    kubelet_dir = tmp_path / "device-plugins"
    kubelet_dir.mkdir()
    sysfs = tmp_path / "sys"
    node = sysfs / "devices/system/node/node0/x86"
    node.mkdir(parents=True)
    (node / "sgx_total_bytes").write_text(str(epc_mib * MIB))
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sgx_enclave").write_bytes(b"")
    (dev / "sgx_provision").write_bytes(b"")
    return kubelet_dir, sysfs, dev


Body = Callable[[FakeKubelet, DevicePluginManager, Path], Awaitable[None]]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir under /tmp: Unix socket paths must stay under 108 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="k8s-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def until_done(body: Awaitable[None], runner: asyncio.Task[None]) -> None:
    """Run the test body; fail at once if the plugin manager dies first."""
    task = asyncio.ensure_future(body)
    done, _ = await asyncio.wait({task, runner}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        runner.result()  # raises the manager's error
        raise AssertionError("plugin manager stopped on its own")
    task.result()


def run_node(tmp_path: Path, body: Body, epc_mib: int = 8, config: PluginConfig | None = None) -> None:
    """Fake kubelet + plugin manager on a fake node; run ``body``; tear everything down."""

    async def main() -> None:
        kubelet_dir, sysfs, dev = node_tree(tmp_path, epc_mib)
        plans = scan.plan_resources(
            scan.discover_epc(sysfs), scan.find_devices(dev), config or PluginConfig()
        )
        kubelet = FakeKubelet(kubelet_dir)
        await kubelet.start()
        manager = DevicePluginManager(plans, kubelet_dir, dev, poll_interval=0.02)
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        try:
            await until_done(body(kubelet, manager, dev), runner)
        finally:
            stop.set()
            await asyncio.wait_for(runner, WAIT)
            await kubelet.stop()
        assert not list(kubelet_dir.glob("*.sock")), "plugin sockets left behind"

    asyncio.run(main())


EPC = scan.AZURE_EPC_RESOURCE
PROV = scan.INTEL_PROVISION_RESOURCE


async def registered(kubelet: FakeKubelet, n: int = 2) -> dict[str, pb.RegisterRequest]:
    out = {}
    for _ in range(n):
        req = await kubelet.next_registration()
        out[req.resource_name] = req
    return out


def test_registers_every_resource_and_lists_one_device_per_mib(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        regs = await registered(kubelet)
        assert set(regs) == {EPC, PROV}
        assert regs[EPC].version == "v1beta1"
        assert regs[EPC].endpoint == "kubernetes.azure.com-sgx_epc_mem_in_MiB.sock"  # file name only
        assert regs[EPC].options.get_preferred_allocation_available
        assert not regs[EPC].options.pre_start_required
        first = await kubelet.next_list(EPC)
        assert sorted(d.ID for d in first.devices) == sorted(str(i) for i in range(24))
        assert {d.health for d in first.devices} == {"Healthy"}
        assert {tuple(n.ID for n in d.topology.nodes) for d in first.devices} == {(0,)}
        prov = await kubelet.next_list(PROV)
        assert len(prov.devices) == 2  # more than one slot: two helper pods during a rolling update

    run_node(short_tmp, body, epc_mib=24)


def test_allocate_hands_out_provision_only_through_its_resource(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        await registered(kubelet)
        request = pb.AllocateRequest(
            container_requests=[
                pb.ContainerAllocateRequest(devices_ids=["0", "1"]),
                pb.ContainerAllocateRequest(devices_ids=["7"]),
            ]
        )
        response = await kubelet.stub(EPC).Allocate(request)
        assert len(response.container_responses) == 2  # one per container, in order
        for cresp in response.container_responses:
            assert [(d.host_path, d.container_path, d.permissions) for d in cresp.devices] == [
                ("/dev/sgx_enclave", "/dev/sgx_enclave", "rw")
            ]
            assert not cresp.mounts
        prov = await kubelet.stub(PROV).Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["provision-0"])])
        )
        assert [d.host_path for d in prov.container_responses[0].devices] == ["/dev/sgx_provision"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kubelet.stub(EPC).Allocate(
                pb.AllocateRequest(
                    container_requests=[pb.ContainerAllocateRequest(devices_ids=["provision-0"])]
                )
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await kubelet.stub(EPC).PreStartContainer(pb.PreStartContainerRequest(devices_ids=["0"])) == (
            pb.PreStartContainerResponse()
        )

    run_node(short_tmp, body)


def test_preferred_allocation_keeps_required_devices_and_size(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        await registered(kubelet)
        creq = pb.ContainerPreferredAllocationRequest(
            available_deviceIDs=["5", "3", "10", "2", "4"], must_include_deviceIDs=["10"], allocation_size=3
        )
        response = await kubelet.stub(EPC).GetPreferredAllocation(
            pb.PreferredAllocationRequest(container_requests=[creq])
        )
        assert list(response.container_responses[0].deviceIDs) == ["10", "2", "3"]

    run_node(short_tmp, body, epc_mib=12)


def test_kubelet_restart_re_registers(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        await registered(kubelet)
        await kubelet.next_list(EPC)
        # kubelet restart: its start-up cleanup deletes our sockets, then a new kubelet.sock appears
        await kubelet.stop(remove_plugin_sockets=True)
        restarted = FakeKubelet(kubelet.directory)
        await restarted.start()
        try:
            again = await registered(restarted)
            assert set(again) == {EPC, PROV}
            listing = await restarted.next_list(EPC)  # the re-created socket really serves
            assert len(listing.devices) == 8
        finally:
            await restarted.stop()

    run_node(short_tmp, body)


def test_kubelet_socket_recreated_alone_re_registers(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        await registered(kubelet)
        await kubelet.stop(remove_plugin_sockets=False)
        restarted = FakeKubelet(kubelet.directory)
        await restarted.start()
        try:
            assert set(await registered(restarted)) == {EPC, PROV}
        finally:
            await restarted.stop()

    run_node(short_tmp, body)


def test_device_loss_marks_devices_unhealthy_and_recovers(short_tmp: Path) -> None:
    async def body(kubelet: FakeKubelet, manager: DevicePluginManager, dev: Path) -> None:
        await registered(kubelet)
        assert {d.health for d in (await kubelet.next_list(EPC)).devices} == {"Healthy"}
        assert {d.health for d in (await kubelet.next_list(PROV)).devices} == {"Healthy"}
        (dev / "sgx_provision").unlink()
        assert {d.health for d in (await kubelet.next_list(PROV)).devices} == {"Unhealthy"}
        (dev / "sgx_enclave").unlink()
        gone = await kubelet.next_list(EPC)
        assert len(gone.devices) == 8
        assert {d.health for d in gone.devices} == {"Unhealthy"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kubelet.stub(EPC).Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["0"])])
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        (dev / "sgx_enclave").write_bytes(b"")
        assert {d.health for d in (await kubelet.next_list(EPC)).devices} == {"Healthy"}

    run_node(short_tmp, body)


def test_no_kubelet_yet_then_registration(short_tmp: Path) -> None:
    async def main() -> None:
        kubelet_dir, sysfs, dev = node_tree(short_tmp)
        plans = scan.plan_resources(scan.discover_epc(sysfs), scan.find_devices(dev), PluginConfig())
        manager = DevicePluginManager(plans, kubelet_dir, dev, poll_interval=0.02)
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        kubelet = FakeKubelet(kubelet_dir)
        await kubelet.start()
        try:
            await until_done(registered(kubelet), runner)
        finally:
            stop.set()
            await asyncio.wait_for(runner, WAIT)
            await kubelet.stop()

    asyncio.run(main())


def test_missing_kubelet_dir_is_a_config_error(tmp_path: Path) -> None:
    from sgx_quote_helper.errors import ConfigError

    plans = scan.plan_resources(scan.EpcInfo({0: MIB}, "sysfs"), scan.SgxDevices("none"), PluginConfig())
    manager = DevicePluginManager(plans, tmp_path / "absent", tmp_path)
    with pytest.raises(ConfigError):
        asyncio.run(manager.run(asyncio.Event()))
    with pytest.raises(ConfigError):
        DevicePluginManager([], tmp_path, tmp_path)


def test_cli_process_registers_and_cleans_up_on_sigterm(short_tmp: Path) -> None:
    """The real `sgx-quote-helper device-plugin` process against the fake kubelet."""
    import signal
    import sys

    async def main() -> None:
        kubelet_dir, sysfs, dev = node_tree(short_tmp, epc_mib=4)
        kubelet = FakeKubelet(kubelet_dir)
        await kubelet.start()
        exe = Path(sys.executable).parent / "sgx-quote-helper"
        proc = await asyncio.create_subprocess_exec(
            str(exe),
            "device-plugin",
            f"--kubelet-dir={kubelet_dir}",
            f"--sysfs-root={sysfs}",
            f"--dev-root={dev}",
            "--no-cpuid",
            "--poll-interval=0.05",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            regs = await registered(kubelet)
            assert set(regs) == {EPC, PROV}
            assert len((await kubelet.next_list(EPC)).devices) == 4
            proc.send_signal(signal.SIGHUP)  # forces a new registration of every resource
            assert set(await registered(kubelet)) == {EPC, PROV}
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), WAIT)
            assert proc.returncode == 0, err.decode()
            assert b"EPC 4 MiB (sysfs), layout in-kernel" in err
            assert not list(kubelet_dir.glob("kubernetes.azure.com-*.sock"))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await kubelet.stop()

    asyncio.run(main())


class FlakyKubelet(FakeKubelet):
    """Refuses the first registration of each resource, like a kubelet still starting up."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.refused: list[str] = []

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.Empty:
        if request.resource_name not in self.refused:
            self.refused.append(request.resource_name)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not ready")
        return await super().Register(request, context)


def test_refused_registration_is_retried(short_tmp: Path) -> None:
    async def main() -> None:
        kubelet_dir, sysfs, dev = node_tree(short_tmp)
        plans = scan.plan_resources(scan.discover_epc(sysfs), scan.find_devices(dev), PluginConfig())
        kubelet = FlakyKubelet(kubelet_dir)
        await kubelet.start()
        manager = DevicePluginManager(plans, kubelet_dir, dev, poll_interval=0.02)
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        try:
            await until_done(registered(kubelet), runner)
            assert sorted(kubelet.refused) == sorted([EPC, PROV])
        finally:
            stop.set()
            await asyncio.wait_for(runner, WAIT)
            await kubelet.stop()

    asyncio.run(main())


class HupDuringRegisterKubelet(FakeKubelet):
    """Asks the plugin to register again (what SIGHUP does) while its first Register call is in flight."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.manager: DevicePluginManager | None = None
        self.seen: list[str] = []

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.Empty:
        if request.resource_name not in self.seen and self.manager is not None:
            self.manager.reregister()  # lands before the plugin has the answer to this call
        self.seen.append(request.resource_name)
        return await super().Register(request, context)


def test_reregister_during_an_inflight_registration_is_not_lost(short_tmp: Path) -> None:
    """A SIGHUP between the kubelet taking a registration and the plugin seeing the reply still counts."""

    async def main() -> None:
        kubelet_dir, sysfs, dev = node_tree(short_tmp)
        plans = scan.plan_resources(scan.discover_epc(sysfs), scan.find_devices(dev), PluginConfig())
        kubelet = HupDuringRegisterKubelet(kubelet_dir)
        await kubelet.start()
        manager = DevicePluginManager(plans, kubelet_dir, dev, poll_interval=0.02)
        kubelet.manager = manager
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        try:
            await until_done(registered(kubelet, n=4), runner)
            assert sorted(kubelet.seen) == sorted([EPC, EPC, PROV, PROV])
        finally:
            stop.set()
            await asyncio.wait_for(runner, WAIT)
            await kubelet.stop()

    asyncio.run(main())
