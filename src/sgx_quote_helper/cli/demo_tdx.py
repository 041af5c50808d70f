"""``sgx-quote-helper demo --tee tdx``: a TD's quote through the QGS, the way a TDX host makes it.

1. a simulated platform (SIMULATED Intel PKI) with its TDX module, in a temporary state directory;
2. the Quote Generation Service (``qgs serve --engine simulated``) started as a separate process
   on a temporary Unix socket, as ``qgsd`` runs on a host;
3. a TD asks for a quote for its report data: the simulated TDX module makes and MACs its TDREPORT
   (TDG.MR.REPORT, what the guest kernel does when the TD writes ``inblob`` in configfs-tsm);
4. QEMU's part: the raw TDREPORT from the guest's GetQuote wrapped in a GET_QUOTE_REQ v1.1, one
   connection to the QGS, QEMU's checks on the reply (:mod:`sgx_quote_helper.wire.qemu`), the quote
   copied back to the guest (``outblob``);
5. who signed what in the quote;
6. the quote verified with its TDX collateral, fetched from ``pccs serve --simulated`` (a child
   process on loopback) as ``verify --pccs`` fetches it, under the SIMULATED root passed
   explicitly (UpToDate, the TD's report data bound), and rejected under Intel's production root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..errors import SelfCheckError, TransportError, VerificationError
from ._demo_common import child_process, cn, pem_chain, short, stop, yes

if TYPE_CHECKING:
    from ..abi.qgs import GetPlatformInfoResponse
    from ..abi.quote import Quote
    from ..verify.collateral import Collateral

_STARTUP_TIMEOUT = 20.0
#: the TD's runtime data (its public key, say): the TDREPORT's 64-byte report data is its SHA-512
RUNTIME_DATA = b'{"td-key": "demo: the TD\'s public key or nonce goes here"}'
#: the demo TD's measurements (what the VMM and the TD's firmware would extend)
DEMO_MR_TD = hashlib.sha384(b"sgx-quote-helper demo TD: TDVF").digest()
DEMO_RTMR0 = hashlib.sha384(b"sgx-quote-helper demo TD: firmware configuration").digest()


def _qgs_command(socket_path: Path, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "sgx_quote_helper", "qgs", "serve", "--engine", "simulated",
        "--state-dir", str(state_dir), "--socket", str(socket_path),
        "--handover-window", "0",  # no successor is coming: stop at once on SIGTERM
    ]  # fmt: skip


def _wait_for_qgs(socket_path: Path, alive: Callable[[], bool], deadline: float) -> GetPlatformInfoResponse:
    """GET_PLATFORM_INFO until the QGS answers (it is starting), or it died, or the deadline passed."""
    from ..client.qgs import QgsClient

    client = QgsClient(socket_path, timeout=10)
    while True:
        try:
            return client.platform_info()
        except TransportError:
            if time.monotonic() >= deadline or not alive():
                raise
            time.sleep(0.1)


def forward_as_qemu(socket_path: Path, td_report: bytes, timeout: float = 30.0) -> tuple[bytes, bytes]:
    """One GetQuote forwarded the way QEMU does it: (the bytes written, the quote for the guest).

    Raises:
        TransportError: the QGS could not be reached or did not answer in time.
        QemuRefused: QEMU's checks refuse the reply (a :class:`RemoteProtocolError`).
    """
    from ..wire.qemu import QemuGetQuote, QuoteForwarded

    qemu = QemuGetQuote()
    request = qemu.send(td_report)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
            sock.sendall(request)  # one write, as QEMU's qio_channel_write_all
            while True:
                event = qemu.next_event()
                if isinstance(event, QuoteForwarded):
                    return request, event.quote
                qemu.receive_data(sock.recv(65536))
        except OSError as exc:
            raise TransportError(f"QGS at {socket_path}: {exc.strerror or exc}") from None


def _pccs_command(state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "sgx_quote_helper", "pccs", "serve", "--simulated",
        "--state-dir", str(state_dir), "--port", "0",
    ]  # fmt: skip


@contextlib.contextmanager
def _pccs(state_dir: Path, log: Path) -> Iterator[str]:
    """``pccs serve --simulated`` on a loopback port as a child process: its base URL."""
    with log.open("wb") as err:
        proc = subprocess.Popen(_pccs_command(state_dir), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "pccs ready at http://127.0.0.1:PORT (simulated)", or EOF
        if not line.startswith("pccs ready at "):
            raise TransportError(f"pccs serve --simulated did not start: {line.strip()!r}")
        yield line.removeprefix("pccs ready at ").split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _collateral(quote: Quote, fmspc: str, state_dir: Path, workdir: Path) -> tuple[Collateral, str]:
    """The TD quote's collateral from ``pccs serve --simulated``, fetched as ``verify --pccs`` does."""
    from ..verify.fetch import CollateralFetcher, urllib_getter

    with _pccs(state_dir, workdir / "pccs.log") as url:
        collateral = CollateralFetcher(url, urllib_getter(timeout=30)).fetch(quote)
    source = (
        f"`pccs serve --simulated` at {url}, as `verify --pccs` and QCNL fetch it: GET "
        f"/tdx/certification/v4/tcb?fmspc={fmspc.upper()} (TCB Info id TDX), /tdx/certification/v4/qe/identity "
        "(TD_QE), /sgx/certification/v4/pckcrl (the PCK CA's CRL) and rootcacrl"
    )
    return collateral, source


def run_tdx_demo(console: Console, workdir: Path, out_dir: Path | None) -> None:
    """Run the TDX demo in ``workdir``; raise SgxQuoteHelperError (SelfCheckError: a wrong result)."""
    from ..abi.qgs import GetQuoteRequest
    from ..abi.quote import Quote
    from ..sim import collateral as coll
    from ..sim.platform import Platform
    from ..sim.tdqe import TDQE_MRSIGNER
    from ..sim.tdx_module import TdIdentity, TdxModule
    from ..verify.verifier import Verifier
    from .inspect_cmd import summarize

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    state_dir = workdir / "platform"
    socket_path = workdir / "tdx-qgs" / "qgs.socket"
    socket_path.parent.mkdir()

    # 1 -- the platform and its TDX module
    t0 = time.perf_counter()
    platform = Platform.init(state_dir, now=now)
    module = TdxModule.open(platform)
    ident = platform.identity
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("state directory", str(state_dir))
    table.add_row("FMSPC", ident.fmspc.hex())
    table.add_row(
        "TDX module", f"MRSEAM {short(module.mr_seam)} (SIMULATED), TEE_TCB_SVN {module.tee_tcb_svn.hex()}"
    )
    table.add_row("TDQE", f"MRSIGNER {short(TDQE_MRSIGNER)} (Intel's), attestation key certified by the PCK")
    table.add_row("PCK chain", " -> ".join(cn(c) for c in pem_chain(platform.pck_chain_pem())))
    console.print(
        Panel(
            table,
            title=f"1. A simulated TDX platform ({time.perf_counter() - t0:.2f} s)",
            subtitle="real keys and signatures; only the trust anchor is ours, and it says SIMULATED",
        )
    )

    # 2 -- the QGS
    log = workdir / "qgs.log"
    with child_process(_qgs_command(socket_path, state_dir), log) as proc:
        t0 = time.perf_counter()
        info = _wait_for_qgs(socket_path, lambda: proc.poll() is None, time.monotonic() + _STARTUP_TIMEOUT)
        started = time.perf_counter() - t0
        console.print(
            Panel(
                f"[bold]sgx-quote-helper qgs serve[/] (pid {proc.pid}) listens on {socket_path}\n"
                f"answered GET_PLATFORM_INFO after {started:.2f} s: TDQE ISVSVN {info.tdqe_isvsvn}, "
                f"PCE ISVSVN {info.pce_isvsvn}, QE ID {short(info.platform_id)}.\n"
                "On a host this is Intel's qgsd on /var/run/tdx-qgs/qgs.socket (mode 0660, group qgsd); QEMU "
                'joins that group and is started with -object \'{"qom-type":"tdx-guest","id":"tdx",'
                '"quote-generation-socket":{"type":"unix","path":"/var/run/tdx-qgs/qgs.socket"}}\'.',
                title="2. The Quote Generation Service (one per host)",
            )
        )

        # 3 -- the TD's report
        report_data = hashlib.sha512(RUNTIME_DATA).digest()
        td = TdIdentity(mr_td=DEMO_MR_TD, rtmr0=DEMO_RTMR0)
        t0 = time.perf_counter()
        td_report = module.report(report_data, td)
        raw_report = td_report.to_bytes()
        elapsed = time.perf_counter() - t0
        mac_ok = module.verify_mac(td_report)
        console.print(
            Panel(
                "\n".join(
                    [
                        "the TD writes its 64-byte report data to configfs-tsm "
                        "(/sys/kernel/config/tsm/report/com.intel.dcap/inblob): SHA-512(runtime data) "
                        f"{short(report_data)}",
                        "the guest kernel calls TDG.MR.REPORT: the TDX module builds the TDREPORT "
                        f"({len(raw_report)} bytes, type {td_report.mac_struct.report_type_bytes[0]:#x}, "
                        f"in {elapsed * 1000:.1f} ms): TEE_TCB_INFO (MRSEAM, TEE_TCB_SVN), TDINFO "
                        f"(MRTD {short(td.mr_td)}, RTMR0 {short(td.rtmr0)}), both hashed into the MAC'd part",
                        f"MAC under the CPU's key (only this platform's TDQE can check it): {yes(mac_ok)}",
                        "then TDG.VP.VMCALL<GetQuote>: the raw TDREPORT goes to the VMM in an 8 KiB shared buffer",
                    ]
                ),
                title="3. A TD asks for a quote (configfs-tsm, TDG.MR.REPORT)",
            )
        )
        if not mac_ok:
            raise SelfCheckError("the simulated TDX module's report does not carry its own MAC")

        # 4 -- QEMU forwards it
        t0 = time.perf_counter()
        sent, quote_bytes = forward_as_qemu(socket_path, raw_report)
        elapsed = time.perf_counter() - t0
        request = GetQuoteRequest.from_bytes(sent[4:])
        quote = Quote.from_bytes(quote_bytes)
        lines = [
            f"QEMU wraps the report: a big-endian length ({len(sent) - 4}), then GET_QUOTE_REQ "
            f"v1.{request.minor_version} with report_size {len(request.report)}, id_list_size "
            f"{len(request.id_list)} ({len(sent)} bytes in one write, a new connection for this request)",
            "the QGS checks the TDREPORT (type, fields, the two SHA-384 hashes, the MAC) and its TDQE signs "
            "the quote with the attestation key",
            "QEMU's checks on the reply passed: version exactly 1.1, type GET_QUOTE_RESP, error code 0, "
            "selected_id_size 0, quote_size = length - 24 (a refusal ends the demo with QEMU's reason)",
            f"QEMU strips the 28-byte header and copies a v{quote.version} quote of {len(quote_bytes)} bytes "
            f"to the guest's buffer ({elapsed * 1000:.1f} ms round trip); the TD reads it from outblob",
        ]
        console.print(
            Panel("\n".join(lines), title="4. QEMU forwards it to the QGS (quote-generation-socket)")
        )
        code = stop(proc)
        console.print(
            f"   the QGS stopped cleanly on SIGTERM (exit {code}); socket removed: {not socket_path.exists()}"
        )

    s = summarize(quote)
    who = Table(show_header=False, box=None, pad_edge=False)
    who.add_row("TD", f"MRTD {s['mr_td'][:16]}…, RTMR0 {s['rtmr0'][:16]}…, debug {s['debug']}")
    who.add_row("TDX module", f"MRSEAM {s['mr_seam'][:16]}…, TEE_TCB_SVN {s['tee_tcb_svn']}")
    who.add_row("signed by", "the TDQE's attestation key (ECDSA P-256) over header || TD report body")
    who.add_row(
        "attestation key", "certified by the TDQE report, whose report_data = SHA-256(key || auth data)"
    )
    who.add_row(
        "TDQE report",
        f"signed by the PCK key (certification data type {s['certification_data_type']}: the PCK chain)",
    )
    who.add_row(
        "PCK certificate",
        f"FMSPC {s.get('fmspc')}, PCESVN {s.get('pcesvn')}, issued by {s.get('pck_issuer')}",
    )
    console.print(Panel(who, title="5. Who signed what"))

    # 6 -- verification
    collateral, source = _collateral(quote, str(s.get("fmspc")), state_dir, workdir)
    collateral_json = collateral.to_dcap_qvl_json()
    root_der = coll.root_ca_der(platform)
    verdict = Verifier(root_der).verify(quote_bytes, collateral, now)
    bound = quote.body.report_data == report_data
    same_td = getattr(quote.body, "mr_td", None) == td.mr_td
    module_status = verdict.tdx_module_status.value if verdict.tdx_module_status is not None else "-"
    lines = [
        f"collateral from {source}",
        f"with the SIMULATED root passed explicitly: [bold green]{verdict.status.value}[/] "
        f"(platform {verdict.platform_status.value}, TDQE {verdict.qe_status.value}, TDX module "
        f"{module_status}), accepted: {verdict.accepted}",
        f"report data bound: the quote's report_data is the TD's SHA-512(runtime data): {yes(bound)}; "
        f"MRTD is the TD's: {yes(same_td)}",
    ]
    try:
        Verifier().verify(quote_bytes, collateral, now)
        lines.append("[bold red]with Intel's production root: ACCEPTED (this must never happen)[/]")
        raise SelfCheckError("a simulated quote was accepted under Intel's root")
    except VerificationError as exc:
        lines.append(
            f"with Intel's production root (the default): rejected at step {exc.step} ({exc.reason})"
        )
    console.print(Panel("\n".join(lines), title="6. The relying party verifies the TD quote"))
    if not verdict.accepted or verdict.status.value != "UpToDate":
        raise SelfCheckError(f"unexpected verdict {verdict.status.value}")
    if not (bound and same_td):
        raise SelfCheckError("the quote does not carry the TD's report data and MRTD")

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "td-quote.bin").write_bytes(quote_bytes)
        (out_dir / "td-report.bin").write_bytes(raw_report)
        (out_dir / "collateral.json").write_text(collateral_json)
        (out_dir / "root-ca.der").write_bytes(root_der)
        shutil.copytree(state_dir, out_dir / "platform", dirs_exist_ok=True)
        console.print(
            f"Wrote td-quote.bin, td-report.bin, collateral.json, root-ca.der and platform/ to {out_dir}. Try:\n"
            f"  sgx-quote-helper inspect {out_dir}/td-quote.bin\n"
            f"  sgx-quote-helper verify {out_dir}/td-quote.bin --collateral {out_dir}/collateral.json "
            f"--root-ca {out_dir}/root-ca.der"
        )


__all__ = ["RUNTIME_DATA", "forward_as_qemu", "run_tdx_demo"]
