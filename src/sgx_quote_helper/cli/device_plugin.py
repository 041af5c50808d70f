"""``sgx-quote-helper device-plugin``: the Kubernetes SGX device plugin (EPC + device nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import PlatformStateError, SgxQuoteHelperError
from ._common import fail

if TYPE_CHECKING:
    from ..k8s.scan import ResourcePlan


@click.command("device-plugin")
@click.option(
    "--kubelet-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/kubelet/device-plugins"),
    show_default=True,
    help="The kubelet's device plugin directory (holds kubelet.sock; our sockets go there too).",
)
@click.option(
    "--sysfs-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/sys"),
    show_default=True,
    help="Where the host's /sys is visible (EPC size from devices/system/node/node*/x86/sgx_total_bytes).",
)
@click.option(
    "--dev-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/dev"),
    show_default=True,
    help="Where the host's /dev is visible (sgx_enclave, sgx_provision, sgx/*, isgx; cpu/0/cpuid).",
)
@click.option(
    "--resource-name",
    default="kubernetes.azure.com/sgx_epc_mem_in_MiB",
    show_default=True,
    help="EPC resource: one device per MiB of EPC; Allocate hands out the enclave device.",
)
@click.option(
    "--provision-resource-name",
    default="sgx.intel.com/provision",
    show_default=True,
    help="Resource handing out /dev/sgx_provision (only the quote-helper pod requests it); 'none' to disable.",
)
@click.option(
    "--provision-slots",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="Slots of the provision resource (2 lets a rolling update run two helper pods for a moment).",
)
@click.option(
    "--intel-names/--no-intel-names",
    default=False,
    show_default=True,
    help="Also advertise Intel's sgx.intel.com/enclave slots.",
)
@click.option("--enclave-slots", type=click.IntRange(1, 10000), default=110, show_default=True)
@click.option(
    "--publish-epc-capacity/--no-publish-epc-capacity",
    default=False,
    show_default=True,
    help="Patch this Node's capacity with sgx.intel.com/epc in bytes (needs NODE_NAME and RBAC on nodes/status).",
)
@click.option(
    "--legacy-device-paths/--no-legacy-device-paths",
    default=False,
    show_default=True,
    help="Also show /dev/sgx_enclave as /dev/sgx/enclave (and back) inside containers, for old SDKs.",
)
@click.option(
    "--cpuid/--no-cpuid",
    default=True,
    show_default=True,
    help="When sysfs lacks sgx_total_bytes, read CPUID leaf 0x12 through DEV_ROOT/cpu/0/cpuid.",
)
@click.option(
    "--poll-interval", type=click.FloatRange(0.01, 60), default=1.0, show_default=True, metavar="SECONDS"
)
@click.option("--dry-run", is_flag=True, help="Print what would be advertised (JSON) and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log every registration and health change.")
def device_plugin(
    kubelet_dir: Path,
    sysfs_root: Path,
    dev_root: Path,
    resource_name: str,
    provision_resource_name: str,
    provision_slots: int,
    intel_names: bool,
    enclave_slots: int,
    publish_epc_capacity: bool,
    legacy_device_paths: bool,
    cpuid: bool,
    poll_interval: float,
    dry_run: bool,
    verbose: bool,
) -> None:
    """Advertise SGX EPC and device nodes to the kubelet (device plugin API v1beta1).

    EPC comes from sysfs (per NUMA node), else CPUID leaf 0x12. The plugin registers one resource
    per socket in KUBELET_DIR, re-registers when the kubelet restarts (or on SIGHUP), and reports devices
    unhealthy while their device nodes are missing. Apps request the EPC resource and get
    /dev/sgx_enclave; /dev/sgx_provision goes only to pods requesting the provision resource.

    \b
    Examples:
      sgx-quote-helper device-plugin
      sgx-quote-helper device-plugin --dry-run --sysfs-root /host/sys --dev-root /host/dev
      sgx-quote-helper device-plugin --intel-names --publish-epc-capacity
    """
    from ..k8s import scan

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        config = scan.PluginConfig(
            epc_resource=resource_name,
            provision_resource=None if provision_resource_name.lower() == "none" else provision_resource_name,
            provision_slots=provision_slots,
            enclave_resource=scan.INTEL_ENCLAVE_RESOURCE if intel_names else None,
            enclave_slots=enclave_slots,
            legacy_paths=legacy_device_paths,
        )
        reader = scan.dev_cpuid_reader(dev_root) if cpuid else None
        try:
            epc = scan.discover_epc(sysfs_root, reader)
        except PlatformStateError as exc:
            if reader is None:
                raise
            click.echo(f"warning: CPUID fallback unavailable: {exc}", err=True)
            epc = scan.discover_epc(sysfs_root, None)
        devices = scan.find_devices(dev_root)
        plans = scan.plan_resources(epc, devices, config)
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    summary = {
        "epc_bytes": epc.total_bytes,
        "epc_source": epc.source,
        "epc_per_numa_node": {str(k): v for k, v in epc.per_node.items()},
        "device_layout": devices.layout,
        "enclave": devices.enclave,
        "provision": devices.provision,
        "resources": [
            {
                "name": p.resource_name,
                "devices": len(p.device_ids),
                "socket": str(kubelet_dir / p.socket_name),
                "allocate": [
                    {"host_path": n.host_path, "container_path": n.container_path} for n in p.allocate
                ],
                "healthy": scan.plan_healthy(dev_root, p),
            }
            for p in plans
        ],
    }
    if dry_run:
        click.echo(json.dumps(summary, indent=2))
        return
    if not plans:
        fail("no SGX on this node: no EPC found and no SGX device nodes; nothing to advertise", 1)
    if publish_epc_capacity:
        _publish_capacity(epc.total_bytes)
    click.echo(
        f"device-plugin: EPC {epc.total_mib} MiB ({epc.source}), layout {devices.layout}; serving "
        + ", ".join(f"{p.resource_name} x{len(p.device_ids)}" for p in plans),
        err=True,
    )
    try:
        asyncio.run(_serve(plans, kubelet_dir, dev_root, poll_interval))
    except SgxQuoteHelperError as exc:
        fail(str(exc), 1)


def _publish_capacity(epc_bytes: int) -> None:
    from ..k8s import node, scan

    name = os.environ.get("NODE_NAME")
    if not name:
        fail("--publish-epc-capacity needs NODE_NAME (set it from spec.nodeName with the downward API)")
    try:
        node.patch_node_status(
            node.ApiServer.in_cluster(), name, scan.node_capacity_patch(scan.INTEL_EPC_RESOURCE, epc_bytes)
        )
    except SgxQuoteHelperError as exc:
        fail(f"publishing {scan.INTEL_EPC_RESOURCE} on node {name}: {exc}", 1)


async def _serve(plans: list[ResourcePlan], kubelet_dir: Path, dev_root: Path, poll_interval: float) -> None:
    from ..k8s.plugin import DevicePluginManager

    stop = asyncio.Event()
    manager = DevicePluginManager(plans, kubelet_dir, dev_root, poll_interval=poll_interval)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, manager.reregister)
    await manager.run(stop)


__all__ = ["device_plugin"]
