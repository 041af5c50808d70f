"""``sgx-quote-helper doctor``: check and explain an app container's or node's quoting setup."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import fail
from .serve import _group

if TYPE_CHECKING:
    from ..doctor import DoctorReport

_STYLE = {
    "pass": ("PASS", "green"),
    "fail": ("FAIL", "bold red"),
    "warn": ("WARN", "yellow"),
    "skip": ("SKIP", "dim"),
}


@click.command("doctor")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The AESM socket to check [default: /var/run/aesmd/aesm.socket, checked when SGX_AESM_ADDR "
    "is set or the socket exists].",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"checks": [{name, status, detail, fix}], "ok": bool}.'
)
@click.option("--pccs-url", default=None, help="PCCS base URL to test [default: pccs_url from --qcnl-conf].")
@click.option(
    "--dev-root",
    type=click.Path(file_okay=False, path_type=Path),
    default="/dev",
    show_default=True,
    help="Where the SGX device nodes are looked for.",
)
@click.option(
    "--sysfs-root",
    type=click.Path(file_okay=False, path_type=Path),
    default="/sys",
    show_default=True,
    help="sysfs, for the EPC size.",
)
@click.option(
    "--qcnl-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    default="/etc/sgx_default_qcnl.conf",
    show_default=True,
    help="Intel's quote provider configuration (JSON, or KEY=value before DCAP 1.13).",
)
@click.option(
    "--lib-dir",
    "lib_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Also look for the quote provider library here (repeatable; $LD_LIBRARY_PATH is searched too).",
)
@click.option(
    "--etc-root",
    type=click.Path(file_okay=False, path_type=Path),
    default="/etc",
    show_default=True,
    help="Where tdx-attest.conf (libtdx_attest's vsock port) is looked for.",
)
@click.option(
    "--qgs-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The TDX QGS socket to check [default: /var/run/tdx-qgs/qgs.socket, checked when it exists "
    "or KVM runs TD guests].",
)
@click.option(
    "--qemu-group",
    metavar="NAME|GID",
    default=None,
    help="The group QEMU (or Kata's QEMU) runs in: check that it can reach the QGS socket.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Seconds for each daemon call (Intel's client waits 15; a first InitQuoteEx on hardware "
    "loads the quoting enclaves).",
)
@click.option(
    "--http-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds for the PCCS request.",
)
def doctor(
    socket_path: Path | None,
    as_json: bool,
    pccs_url: str | None,
    dev_root: Path,
    sysfs_root: Path,
    qcnl_conf: Path,
    lib_dirs: tuple[Path, ...],
    etc_root: Path,
    qgs_socket: Path | None,
    qemu_group: str | None,
    timeout: float,
    http_timeout: float,
) -> None:
    """Check what out-of-process quoting needs, explain what is wrong and how to fix it.

    Run it inside an app container (kubectl exec POD -- sgx-quote-helper doctor) or on a node.
    Exit status 0 when every applicable check passes (WARN and SKIP do not fail), 1 otherwise.

    \b
    Checks, in order, and when they apply:
      aesm-addr-env   SGX_AESM_ADDR set (any value) = out-of-process; unset is a WARN
      socket-path     the socket exists, is a socket, is not named aesm.sock
      socket-connect  connecting is allowed (EACCES: socket mode/group, hostPath)
      daemon          who answers: sgx-quote-helper, or an aesmd-like daemon
      key-ids         the ECDSA P-256 (QE3) attestation key id is offered
      test-quote      InitQuoteEx, then GetQuoteEx of a dummy zero report: a live
                      quoting path answers INVALID_REPORT (47) = PASS
          (the five socket checks run when SGX_AESM_ADDR is set, --socket is given or
           /var/run/aesmd/aesm.socket exists; each needs the one before it)
      sgx-devices     /dev/sgx_enclave, /dev/sgx_provision, /dev/sgx/*, /dev/isgx and their
                      permissions; SKIP without devices unless this is an out-of-process app
      epc-size        EPC from sysfs (Linux >= 5.17); SKIP when not reported
      quote-provider  libdcap_quoteprov / QCNL / az-dcap-client; SKIP in an app container
                      (the daemon quotes) or without SGX hardware
      pccs            the PCCS URL (--pccs-url or the QCNL file) answers HTTP; SKIP without a URL

    \b
    TDX, in a TD guest (/dev/tdx_guest or /etc/tdx-attest.conf exists, or configfs-tsm says tdx_guest):
      tdx-configfs      /sys/kernel/config/tsm/report and its provider (tdx_guest)
      tdx-guest-device  /dev/tdx_guest (the TDREPORT for a QGS over vsock)
      tdx-attest-conf   `port = N` in /etc/tdx-attest.conf; vsock 2:N accepts a connection
      tdx-quote-path    the path libtdx_attest takes (vsock first, no fallback; then configfs-tsm)
    TDX, on a host (--qgs-socket, /var/run/tdx-qgs/qgs.socket exists, or kvm_intel tdx=Y):
      tdx-host          /sys/module/kvm_intel/parameters/tdx is Y
      qgs-socket        the QGS socket exists and is a socket
      qgs-answers       GET_PLATFORM_INFO (or, on a GET_QUOTE-only socket, a dummy report refused)
      qgs-access        mode and group; with --qemu-group, whether QEMU's group can connect
      qgs-tdqe-devices  /dev/sgx_enclave and /dev/sgx_provision for the TDQE

    \b
    Examples:
      sgx-quote-helper doctor
      sgx-quote-helper doctor --json | jq '.checks[] | select(.status == "fail")'
      sgx-quote-helper doctor --socket /tmp/aesm/aesm.socket --pccs-url https://pccs:8081/sgx/certification/v4/
      kubectl exec my-enclave-app -- sgx-quote-helper doctor
      sgx-quote-helper doctor --qgs-socket /var/run/tdx-qgs/qgs.socket --qemu-group qgsd   # TDX host
    """
    from ..doctor import DEFAULT_LIB_DIRS, DoctorOptions, run_checks

    qemu_gid = None
    if qemu_group is not None:
        try:
            qemu_gid = _gid(qemu_group)
        except click.BadParameter as exc:
            fail(exc.message)
    options = DoctorOptions(
        environ=dict(os.environ),
        socket_path=socket_path,
        dev_root=dev_root,
        sysfs_root=sysfs_root,
        qcnl_conf=qcnl_conf,
        pccs_url=pccs_url,
        lib_dirs=tuple(lib_dirs) + DEFAULT_LIB_DIRS,
        timeout=timeout,
        http_timeout=http_timeout,
        etc_root=etc_root,
        qgs_socket=qgs_socket,
        qemu_gid=qemu_gid,
    )
    report = run_checks(options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_human(report)
    raise SystemExit(0 if report.ok else 1)


def _gid(value: str) -> int:
    gid = _group(value)
    assert gid is not None
    return gid


def _print_human(report: DoctorReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        label, style = _STYLE[check.status.value]
        detail = Text(check.detail)
        if check.fix and check.status.value in ("fail", "warn"):
            detail.append("\nfix: " + check.fix, style="cyan")
        table.add_row(Text(label, style=style), check.name, detail)
    console.print(table)
    failed = [c.name for c in report.checks if c.status.value == "fail"]
    if failed:
        console.print(Text(f"{len(failed)} check(s) failed: {', '.join(failed)}", style="bold red"))
    else:
        console.print(Text("all applicable checks passed", style="bold green"))
