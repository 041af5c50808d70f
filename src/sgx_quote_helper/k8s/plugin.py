"""The kubelet device plugin (API v1beta1) for SGX: gRPC servers on Unix sockets and registration.

Owns every socket and timer of the device plugin; the decisions (EPC size, device layout, what
to advertise) come from :mod:`.scan`. One :class:`ResourceServer` per extended resource, each on
its own socket in the kubelet's device plugin directory; :class:`DevicePluginManager` starts them,
registers them with ``kubelet.sock``, re-registers when the kubelet restarts (``kubelet.sock``
recreated, or our sockets removed by the kubelet's start-up cleanup) and re-checks device health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..errors import ConfigError
from . import deviceplugin_pb2 as pb
from . import deviceplugin_pb2_grpc as _pb_grpc
from .scan import ResourcePlan, missing_nodes, plan_healthy

log = logging.getLogger(__name__)

pb_grpc: Any = _pb_grpc  # generated without type hints

API_VERSION = "v1beta1"  # k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1 constants.go: Version
KUBELET_SOCKET = "kubelet.sock"  # constants.go: KubeletSocket (in DevicePluginPath)
DEFAULT_KUBELET_DIR = Path("/var/lib/kubelet/device-plugins")
HEALTHY = "Healthy"
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
UNHEALTHY = "Unhealthy"


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, ctime) of a file, or None when it does not exist: a recreated socket differs."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class ResourceServer(pb_grpc.DevicePluginServicer):  # type: ignore[misc]
    """The DevicePlugin service for one :class:`ResourcePlan`, on ``<kubelet_dir>/<plan.socket_name>``."""

    def __init__(self, plan: ResourcePlan, kubelet_dir: Path, dev_root: Path) -> None:
        self.plan = plan
        self.kubelet_dir = kubelet_dir
        self.dev_root = dev_root
        self.socket_path = kubelet_dir / plan.socket_name
        self.healthy = plan_healthy(dev_root, plan)
        self._changed = asyncio.Condition()
        self._generation = 0
        self._server: Any = None
        self._socket_identity: tuple[int, int, int] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the plugin socket (removing a stale file first).

        Raises:
            ConfigError: the socket cannot be bound (directory missing or not writable).
        """
        if len(os.fsencode(self.socket_path)) > _SUN_PATH_MAX:
            raise ConfigError(
                f"socket path {self.socket_path} is longer than {_SUN_PATH_MAX} bytes (the Unix socket limit); "
                "use a shorter --kubelet-dir"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(self, server)
        try:
            port = server.add_insecure_port(f"unix://{self.socket_path}")
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.socket_path}: {exc}") from None
        if port == 0:  # older grpcio reports failure this way
            raise ConfigError(f"cannot listen on {self.socket_path}")
        await server.start()
        self._server = server
        self._socket_identity = _identity(self.socket_path)
        log.info("serving %s on %s (%s)", self.plan.resource_name, self.socket_path, self.plan.description)

    async def stop(self) -> None:
        """Stop serving: open ListAndWatch streams end, the socket file is removed if still ours."""
        server, self._server = self._server, None
        if server is None:
            return
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()
        await server.stop(0.2)
        if self._socket_identity is not None and _identity(self.socket_path) == self._socket_identity:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._socket_identity = None

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def serving(self) -> bool:
        """True while our socket file is the one we bound (the kubelet deletes it on restart)."""
        return self._server is not None and _identity(self.socket_path) == self._socket_identity

    async def register(self, kubelet_socket: Path, timeout: float = 5.0) -> None:
        """Register this resource with the kubelet's Registration service.

        Raises:
            grpc.aio.AioRpcError: the kubelet is unreachable or refused the registration.
        """
        request = pb.RegisterRequest(
            version=API_VERSION,
            endpoint=self.plan.socket_name,
            resource_name=self.plan.resource_name,
            options=self._options(),
        )
        async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
            await pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout)
        log.info("registered %s with %s", self.plan.resource_name, kubelet_socket)

    async def refresh_health(self) -> bool:
        """Re-check the device nodes; notify ListAndWatch streams on change. Returns the new health."""
        healthy = plan_healthy(self.dev_root, self.plan)
        if healthy != self.healthy:
            log.warning("%s devices are now %s", self.plan.resource_name, HEALTHY if healthy else UNHEALTHY)
            async with self._changed:
                self.healthy = healthy
                self._generation += 1
                self._changed.notify_all()
        return healthy

    # -- the DevicePlugin service ------------------------------------------------------------------

    def _options(self) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def device_list(self) -> pb.ListAndWatchResponse:
        """The full device list with the current health."""
        health = HEALTHY if self.healthy else UNHEALTHY
        devices = []
        for device_id, numa in self.plan.device_ids.items():
            device = pb.Device(ID=device_id, health=health)
            if numa is not None:
                device.topology.nodes.add(ID=numa)
            devices.append(device)
        return pb.ListAndWatchResponse(devices=devices)

    async def GetDevicePluginOptions(self, request: pb.Empty, context: Any) -> pb.DevicePluginOptions:
        return self._options()

    async def ListAndWatch(self, request: pb.Empty, context: Any) -> AsyncIterator[pb.ListAndWatchResponse]:
        """Send the whole list now, then again on every health change, until the server stops."""
        server = self._server
        generation = self._generation
        yield self.device_list()
        while True:
            async with self._changed:
                while self._generation == generation:
                    await self._changed.wait()
                generation = self._generation
            if self._server is not server:
                return
            yield self.device_list()

    async def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: Any
    ) -> pb.PreferredAllocationResponse:
        """Prefer the required devices, then devices on one NUMA node, lowest IDs first."""
        response = pb.PreferredAllocationResponse()
        for creq in request.container_requests:
            chosen = list(dict.fromkeys(creq.must_include_deviceIDs))
            rest = [d for d in creq.available_deviceIDs if d not in chosen and d in self.plan.device_ids]
            per_node: dict[int | None, list[str]] = {}
            for device_id in rest:
                per_node.setdefault(self.plan.device_ids[device_id], []).append(device_id)
            # nodes holding the must-include devices first, then the fullest nodes
            wanted = {self.plan.device_ids.get(d) for d in chosen}
            order = sorted(
                per_node, key=lambda n: (n not in wanted, -len(per_node[n]), -1 if n is None else n)
            )
            for node in order:
                chosen.extend(sorted(per_node[node], key=_id_key))
            response.container_responses.add(deviceIDs=chosen[: max(creq.allocation_size, 0)])
        return response

    async def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        """One answer per container, in order: the plan's device nodes, read-write."""
        response = pb.AllocateResponse()
        for creq in request.container_requests:
            unknown = [d for d in creq.devices_ids if d not in self.plan.device_ids]
            if unknown:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{self.plan.resource_name}: unknown device IDs {unknown[:5]}",
                )
            missing = missing_nodes(self.dev_root, self.plan)
            if missing:
                await self.refresh_health()
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{self.plan.resource_name}: SGX device node(s) {missing} missing on this node",
                )
            cresp = response.container_responses.add()
            for node in self.plan.allocate:
                cresp.devices.add(
                    host_path=node.host_path, container_path=node.container_path, permissions=node.permissions
                )
        return response

    async def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: Any
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def _id_key(device_id: str) -> tuple[int, str]:
    """Sort "10" after "9": numeric IDs by value, others after them by text."""
    return (int(device_id), "") if device_id.isdigit() else (1 << 62, device_id)


@dataclass
class _Registration:
    """Which kubelet (socket identity) a resource is registered with, as of which request to register.

    ``epoch`` is the manager's re-registration count when the Register call started: a SIGHUP that
    lands while that call is in flight bumps the count, so the finished call does not count as current
    and the resource is registered once more.
    """

    kubelet: tuple[int, int, int] | None = None
    epoch: int = 0


class DevicePluginManager:
    """Runs the resource servers: start, register, watch the kubelet, re-check health.

    Args:
        plans: the resources to serve (from :func:`.scan.plan_resources`).
        kubelet_dir: the kubelet's device plugin directory (holds ``kubelet.sock``).
        dev_root: where the host's ``/dev`` is visible to this process.
        poll_interval: seconds between checks of ``kubelet.sock``, our sockets and device health.
    """

    def __init__(
        self,
        plans: Sequence[ResourcePlan],
        kubelet_dir: Path,
        dev_root: Path,
        poll_interval: float = 1.0,
        register_timeout: float = 5.0,
    ) -> None:
        if not plans:
            raise ConfigError("nothing to advertise: no EPC and no SGX device resources on this node")
        self.kubelet_dir = kubelet_dir
        self.kubelet_socket = kubelet_dir / KUBELET_SOCKET
        self.servers = [ResourceServer(p, kubelet_dir, dev_root) for p in plans]
        self.poll_interval = poll_interval
        self.register_timeout = register_timeout
        self._registered = [_Registration() for _ in self.servers]
        self._epoch = 0  # bumped by every reregister(); a registration older than this is stale
        self.registrations = 0  # successful Register calls, for diagnostics and tests

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then stop every server and remove our sockets."""
        if not self.kubelet_dir.is_dir():
            raise ConfigError(f"kubelet device plugin directory {self.kubelet_dir} does not exist")
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)
        finally:
            for server in self.servers:
                await server.stop()

    def reregister(self) -> None:
        """Register every resource again at the next step (SIGHUP does this).

        Also when a Register call is in flight: its answer is then older than this request.
        """
        self._epoch += 1

    async def step(self) -> None:
        """One round: refresh health, (re)start servers whose socket vanished, (re)register."""
        kubelet = _identity(self.kubelet_socket)
        for server, reg in zip(self.servers, self._registered, strict=True):
            await server.refresh_health()
            if not server.serving:
                if server.started:
                    log.warning(
                        "%s: our socket %s was removed; restarting",
                        server.plan.resource_name,
                        server.socket_path,
                    )
                await server.stop()
                await server.start()
                reg.kubelet = None
            if kubelet is None or (reg.kubelet == kubelet and reg.epoch == self._epoch):
                continue
            epoch = self._epoch
            try:
                await server.register(self.kubelet_socket, self.register_timeout)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "registering %s with %s failed (%s: %s); will retry",
                    server.plan.resource_name,
                    self.kubelet_socket,
                    exc.code().name,
                    exc.details(),
                )
                continue
            reg.kubelet, reg.epoch = kubelet, epoch
            self.registrations += 1


__all__ = [
    "API_VERSION",
    "DEFAULT_KUBELET_DIR",
    "HEALTHY",
    "KUBELET_SOCKET",
    "UNHEALTHY",
    "DevicePluginManager",
    "ResourceServer",
]
