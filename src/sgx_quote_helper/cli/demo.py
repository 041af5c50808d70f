"""``sgx-quote-helper demo``: the whole out-of-process flow on a simulated platform, explained.

1. a simulated SGX platform (SIMULATED Intel PKI) in a temporary state directory;
2. the quote service (``serve``) started as a separate process on a temporary Unix socket;
3. an "enclave app" with ``SGX_AESM_ADDR=1`` that asks the service for the QE's target info, makes
   its REPORT for it, and gets a quote back (with the QE's own report, checked by the app);
4. the quote verified with the platform's collateral and the SIMULATED root passed explicitly, and
   rejected by the default trust anchor (Intel's production root), as it must be;
5. the quote exchanged for an Azure Attestation-style token (``attest serve`` on loopback), and the
   token checked as a relying party would: the key from the JWKS, the signature, then the claims.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..abi.aesm import AESM_ADDR_ENV
from ..errors import SelfCheckError, SgxQuoteHelperError, VerificationError
from ._common import fail
from ._demo_common import child_process, cn, pem_chain, short, yes

_STARTUP_TIMEOUT = 20.0
#: the app's runtime data (its public key, say): the quote's report_data is its SHA-256
RUNTIME_DATA = b'{"app-key": "demo: the app\'s public key or nonce goes here"}'


def _serve_command(socket_path: Path, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "sgx_quote_helper", "serve", "--quiet",
        "--socket", str(socket_path), "--state-dir", str(state_dir), "--engine", "simulated",
        "--handover-window", "0",  # no successor is coming: stop at once on SIGTERM
    ]  # fmt: skip


def _daemon(
    socket_path: Path, state_dir: Path, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return child_process(_serve_command(socket_path, state_dir), log)


def run_demo(console: Console, workdir: Path, out_dir: Path | None) -> None:
    """Run the demo in ``workdir``; raise SgxQuoteHelperError (SelfCheckError: a wrong result)."""
    from ..abi.keyid import QeReportInfo
    from ..abi.quote import Quote
    from ..abi.report import Report, TargetInfo
    from ..client import QuoteClient, out_of_process_mode
    from ..sim import collateral as coll
    from ..sim.platform import Platform
    from ..verify.collateral import load_dcap_qvl_json
    from ..verify.verifier import Verifier
    from .inspect_cmd import summarize

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    state_dir = workdir / "platform"
    socket_path = workdir / "aesmd" / "aesm.socket"
    socket_path.parent.mkdir()

    # 1 -- the platform
    t0 = time.perf_counter()
    platform = Platform.init(state_dir, now=now)
    ident = platform.identity
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("state directory", str(state_dir))
    table.add_row("FMSPC", ident.fmspc.hex())
    table.add_row("CPUSVN / PCESVN", f"{ident.cpusvn.hex()} / {ident.pcesvn}")
    table.add_row("QE SVN", str(ident.qe_svn))
    table.add_row("PCK chain", " -> ".join(cn(c) for c in pem_chain(platform.pck_chain_pem())))
    table.add_row("TCB signing", cn(pem_chain(platform.tcb_signing_chain_pem())[0]))
    console.print(
        Panel(
            table,
            title=f"1. A simulated SGX platform ({time.perf_counter() - t0:.2f} s)",
            subtitle="real keys and signatures; only the trust anchor is ours, and it says SIMULATED",
        )
    )

    # 2 -- the service
    with _daemon(socket_path, state_dir, workdir / "serve.log") as proc:
        t0 = time.perf_counter()
        with QuoteClient(socket_path, timeout=10, retry_deadline=_STARTUP_TIMEOUT) as probe:
            num = probe.get_supported_att_key_id_num()
        started = time.perf_counter() - t0
        console.print(
            Panel(
                f"[bold]sgx-quote-helper serve[/] (pid {proc.pid}) listens on {socket_path}\n"
                f"answered GetSupportedAttKeyIDNum = {num} after {started:.2f} s.\n"
                "On a node this socket is /var/run/aesmd/aesm.socket, and the directory /var/run/aesmd "
                "is shared with every app pod through a hostPath volume.",
                title="2. The out-of-process quote service (one per node)",
            )
        )

        # 3 -- the app
        os.environ[AESM_ADDR_ENV] = "1"
        try:
            mode = out_of_process_mode()
        finally:
            del os.environ[AESM_ADDR_ENV]
        report_data = hashlib.sha256(RUNTIME_DATA).digest()
        nonce = os.urandom(16)
        app_mrenclave = hashlib.sha256(b"sgx-quote-helper demo enclave").digest()
        with QuoteClient(socket_path, timeout=10) as client:
            t0 = time.perf_counter()
            init = client.init_quote_ex(want_pub_key_id=True)
            assert init.target_info is not None
            report = platform.ereport(init.target_info, report_data, mr_enclave=app_mrenclave, isv_prod_id=1)
            size = client.get_quote_size_ex()
            app_target = TargetInfo(mr_enclave=app_mrenclave, attributes=report.body.attributes)
            info = QeReportInfo(nonce, app_target)
            result = client.get_quote_ex(report, buf_size=size, qe_report_info=info)
            elapsed = time.perf_counter() - t0
        quote_bytes = result.trimmed()
        quote = Quote.from_bytes(quote_bytes)
        lines = [
            f"mode: [bold]{mode.name}[/] ({mode.reason})",
            f"InitQuoteEx -> QE3 target info (MRENCLAVE {short(init.target_info.mr_enclave)}), "
            f"ECDSA_ID {short(init.pub_key_id or b'')}",
            f"EREPORT for that target: report_data = SHA-256(...) {short(report_data)}",
            f"GetQuoteSizeEx -> {size} bytes; GetQuoteEx -> a v{quote.version} quote, "
            f"{len(quote_bytes)} bytes (3 round trips in {elapsed * 1000:.1f} ms)",
        ]
        if result.qe_report_info is None:
            raise SelfCheckError("the service did not echo qe_report_info")
        qe_report = Report.from_bytes(result.qe_report_info.qe_report)
        binds = qe_report.body.report_data[:32] == hashlib.sha256(nonce + quote_bytes).digest()
        mac_ok = platform.verify_report_mac(qe_report, as_target=app_target)
        lines.append(
            f"QE report back to the app: MAC verifies for the app enclave: {yes(mac_ok)}; "
            f"binds SHA-256(nonce || quote): {yes(binds)}"
        )
        if not (binds and mac_ok):
            raise SelfCheckError("the QE report returned to the app does not check out")
        console.print(Panel("\n".join(lines), title="3. An enclave app asks for a quote (SGX_AESM_ADDR=1)"))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        console.print(
            f"   the service stopped cleanly on SIGTERM (exit {code}); socket removed: "
            f"{not socket_path.exists()}"
        )

    s = summarize(quote)
    who = Table(show_header=False, box=None, pad_edge=False)
    who.add_row(
        "ISV enclave", f"MRENCLAVE {s['mrenclave'][:16]}…, ISVPRODID {s['isv_prod_id']}, debug {s['debug']}"
    )
    who.add_row("signed by", "the attestation key (ECDSA P-256) over header || report body")
    who.add_row(
        "attestation key", "certified by the QE report, whose report_data = SHA-256(key || auth data)"
    )
    who.add_row(
        "QE report",
        f"signed by the PCK key (certification data type {s['certification_data_type']}: the PCK chain)",
    )
    who.add_row(
        "PCK certificate",
        f"FMSPC {s.get('fmspc')}, PCESVN {s.get('pcesvn')}, issued by {s.get('pck_issuer')}",
    )
    console.print(Panel(who, title="4. Who signed what"))

    # 5 -- verification
    collateral_json = coll.quote_collateral_json(platform, now)
    root_der = coll.root_ca_der(platform)
    collateral = load_dcap_qvl_json(collateral_json)
    verdict = Verifier(root_der).verify(quote_bytes, collateral, now)
    lines = [
        f"with the SIMULATED root passed explicitly: [bold green]{verdict.status.value}[/] "
        f"(platform {verdict.platform_status.value}, QE {verdict.qe_status.value}), "
        f"accepted: {verdict.accepted}",
    ]
    try:
        Verifier().verify(quote_bytes, collateral, now)
        lines.append("[bold red]with Intel's production root: ACCEPTED (this must never happen)[/]")
        raise SelfCheckError("a simulated quote was accepted under Intel's root")
    except VerificationError as exc:
        lines.append(
            f"with Intel's production root (the default): rejected at step {exc.step} ({exc.reason})"
        )
    console.print(Panel("\n".join(lines), title="5. The relying party verifies the quote"))
    if not verdict.accepted or verdict.status.value != "UpToDate":
        raise SelfCheckError(f"unexpected verdict {verdict.status.value}")
    _attest_step(console, workdir, quote_bytes, collateral_json, root_der, app_mrenclave)

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "quote.bin").write_bytes(quote_bytes)
        (out_dir / "collateral.json").write_text(collateral_json)
        (out_dir / "root-ca.der").write_bytes(root_der)
        shutil.copytree(state_dir, out_dir / "platform", dirs_exist_ok=True)
        console.print(
            f"Wrote quote.bin, collateral.json, root-ca.der and platform/ to {out_dir}. Try:\n"
            f"  sgx-quote-helper inspect {out_dir}/quote.bin\n"
            f"  sgx-quote-helper verify {out_dir}/quote.bin --collateral {out_dir}/collateral.json "
            f"--root-ca {out_dir}/root-ca.der"
        )


def _attest_step(
    console: Console, workdir: Path, quote: bytes, collateral_json: str, root_der: bytes, mrenclave: bytes
) -> None:
    """6: a token from `attest serve` for the quote, checked as a relying party checks it."""
    import json
    import urllib.request

    from ..attest.policy import b64url
    from ..attest.token import decode, verify_token

    (workdir / "collateral.json").write_text(collateral_json)
    (workdir / "root-ca.der").write_bytes(root_der)
    cmd = [sys.executable, "-m", "sgx_quote_helper", "attest", "serve", "--port", "0",
           "--key-dir", str(workdir / "attest-keys"), "--collateral", str(workdir / "collateral.json"),
           "--root-ca", str(workdir / "root-ca.der"), "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("attest ready at "):
            raise SelfCheckError(f"attest serve did not start: {line!r}")
        url = line.split(" at ", 1)[1].strip()
        body = {"quote": b64url(quote), "runtimeData": {"data": b64url(RUNTIME_DATA), "dataType": "JSON"}}
        req = urllib.request.Request(
            f"{url}/attest/SgxEnclave?api-version=2022-08-01", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            token = json.loads(resp.read())["token"]
        with urllib.request.urlopen(f"{url}/certs", timeout=30) as resp:
            jwks = json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(10)
    header = decode(token)[0]
    claims = verify_token(token, jwks, time.time(), issuer=url)  # kid -> x5c key -> RS256 -> nbf/exp
    checks = [
        ("x-ms-sgx-mrenclave is the app's", claims["x-ms-sgx-mrenclave"] == mrenclave.hex()),
        ("not debuggable", claims["x-ms-sgx-is-debuggable"] is False),
        ("x-ms-runtime is the app's runtime data", claims["x-ms-runtime"] == json.loads(RUNTIME_DATA)),
        ("TCB status UpToDate", claims["x-sgxqh-tcb-status"] == "UpToDate"),
    ]
    lines = [
        f"POST {url}/attest/SgxEnclave (MAA's API) -> a {header['alg']} token, kid {header['kid'][:12]}…",
        f"relying party: GET /certs, key {header['kid'][:12]}… from its x5c certificate, signature "
        f"and nbf/exp: {yes(True)}; issuer {claims['iss']}",
        *(f"claim check: {what}: {yes(ok)}" for what, ok in checks),
    ]
    console.print(
        Panel(
            "\n".join(lines),
            title="6. An attestation token, checked by the relying party (JWKS, then claims)",
        )
    )
    if not all(ok for _, ok in checks):
        raise SelfCheckError("the attestation token's claims do not match the quote")


@click.command("demo")
@click.option(
    "--tee",
    type=click.Choice(["sgx", "tdx"]),
    default="sgx",
    show_default=True,
    help="sgx: an enclave app's quote through the AESM-compatible service. tdx: a TD's quote through "
    "the Quote Generation Service, forwarded as QEMU forwards it.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the quote, its collateral, the SIMULATED root and the platform here.",
)
def demo(tee: str, out_dir: Path | None) -> None:
    """Show the whole out-of-process quoting flow on a simulated platform, step by step.

    Creates a simulated SGX platform in a temporary directory, starts the quote service on a
    temporary Unix socket (a separate process, as on a node), plays an enclave app that gets a
    quote through the socket with SGX_AESM_ADDR=1, and verifies the quote. With --tee tdx: starts
    the Quote Generation Service instead (`qgs serve`, as qgsd on a TDX host), plays a TD whose
    TDREPORT QEMU wraps and forwards to it, and verifies the TD quote. Nothing outside the
    temporary directory is touched, and nothing leaves the machine.

    \b
    Examples:
      sgx-quote-helper demo
      sgx-quote-helper demo --out-dir ./demo-out    # keep the quote and collateral to play with
      sgx-quote-helper demo --tee tdx               # a TD's quote: configfs-tsm, QEMU, the QGS
    """
    console = Console()
    logs: tuple[str, ...]
    if tee == "tdx":
        from .demo_tdx import run_tdx_demo

        title = "a TD's quote through the QGS on a simulated TDX platform"
        run, logs = run_tdx_demo, ("qgs.log", "pccs.log")
    else:
        title = "out-of-process SGX DCAP quoting on a simulated platform"
        run, logs = run_demo, ("serve.log",)
    console.print(f"[bold]sgx-quote-helper demo[/]: {title}\n")
    with tempfile.TemporaryDirectory(prefix="sgxqh-demo-") as tmp:
        try:
            run(console, Path(tmp), out_dir)
        except (SgxQuoteHelperError, OSError) as exc:
            for name in logs:
                log = Path(tmp) / name
                if log.exists() and log.read_text().strip():
                    console.print(f"[dim]service log:[/]\n{log.read_text()}")
            fail(f"demo failed: {exc}", 1)
    nxt = (
        "`sgx-quote-helper qgs serve --help` to run the QGS for TDs"
        if tee == "tdx"
        else ("`sgx-quote-helper serve --help` to run the service for real apps")
    )
    console.print(f"\n[bold green]Done.[/] Next: {nxt}.")


__all__ = ["demo", "run_demo"]
