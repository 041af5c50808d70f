"""``sgx-quote-helper sim``: the simulated SGX platform from the command line.

Subcommands: ``init`` (create a platform), ``report`` (stand-in for EREPORT), ``td-report``
(stand-in for TDG.MR.REPORT), ``quote`` (report + quote in-process, SGX or TDX), ``collateral`` (signed collateral, dcap-qvl JSON) and ``root-ca`` (the trust anchor).
Every subcommand takes ``--state-dir DIR``. Bad input exits 2 with one ``error:`` line.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..abi.keyid import AttKeyId
from ..abi.quote import Quote
from ..abi.report import TargetInfo
from ..errors import ConfigError, EngineError, ParseError, PlatformStateError
from ._common import fail, parse_hex, resolve_state_dir, state_dir_option

if TYPE_CHECKING:
    from ..sim.platform import Platform

_ERRORS = (PlatformStateError, ConfigError, ParseError, EngineError)


class _OneLineErrors(click.Group):
    """Turn usage errors of the subcommands (bad or missing options) into one ``error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            fail(exc.format_message())


def _write(out: str, data: bytes) -> None:
    """Write ``data`` to the file ``out`` (``-`` = standard output)."""
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(out).write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")


def _say(out: str, message: str) -> None:
    """Report what was done; on stderr when the data itself went to stdout."""
    click.echo(message, err=out == "-")


def _hex(value: str | None, name: str, **kw: int) -> bytes | None:
    try:
        return parse_hex(value, name, **kw)
    except click.BadParameter as exc:
        fail(exc.message)


def _open_platform(state_dir: Path | None) -> Platform:
    from ..sim.platform import Platform

    try:
        return Platform.open(resolve_state_dir(state_dir), create=True)
    except _ERRORS as exc:
        fail(str(exc))


def _identity_options(f: Any) -> Any:
    """The enclave identity flags shared by ``report`` and ``quote``."""
    options = [
        click.option(
            "--report-data", metavar="HEX", help="Up to 64 bytes of report data, hex (zero-padded)."
        ),
        click.option(
            "--mrenclave", metavar="HEX", help="MRENCLAVE of the simulated enclave (32 bytes hex) [zero]."
        ),
        click.option(
            "--mrsigner", metavar="HEX", help="MRSIGNER of the simulated enclave (32 bytes hex) [zero]."
        ),
        click.option(
            "--isv-prod-id", type=click.IntRange(0, 0xFFFF), default=0, show_default=True, help="ISVPRODID."
        ),
        click.option(
            "--isv-svn",
            type=click.IntRange(0, 0xFFFF),
            default=0,
            show_default=True,
            help="ISVSVN (enclave SVN).",
        ),
        click.option(
            "--debug", is_flag=True, help="Set the DEBUG attribute (verifiers reject debug enclaves)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _identity(report_data: str | None, mrenclave: str | None, mrsigner: str | None) -> dict[str, bytes]:
    return {
        "report_data": _hex(report_data, "--report-data", max_len=64) or b"",
        "mr_enclave": _hex(mrenclave, "--mrenclave", exact=32) or bytes(32),
        "mr_signer": _hex(mrsigner, "--mrsigner", exact=32) or bytes(32),
    }


_TD_OPTIONS = (
    ("--mr-td", 48, "MRTD, the TD's build-time measurement (48 bytes hex) [zero]."),
    ("--rtmr0", 48, "RTMR0 (48 bytes hex) [zero]."),
    ("--rtmr1", 48, "RTMR1 (48 bytes hex) [zero]."),
    ("--rtmr2", 48, "RTMR2 (48 bytes hex) [zero]."),
    ("--rtmr3", 48, "RTMR3 (48 bytes hex) [zero]."),
    ("--mr-config-id", 48, "MRCONFIGID (48 bytes hex) [zero]."),
    ("--mr-owner", 48, "MROWNER (48 bytes hex) [zero]."),
    ("--mr-owner-config", 48, "MROWNERCONFIG (48 bytes hex) [zero]."),
    ("--mr-servicetd", 48, "MRSERVICETD (48 bytes hex; TDX 1.5 reports only) [zero]."),
    (
        "--td-attributes",
        8,
        "TDATTRIBUTES, 8 bytes hex as in the report [0000001000000000: SEPT_VE_DISABLE only; "
        "bit 0 is DEBUG].",
    ),
    ("--xfam", 8, "XFAM, 8 bytes hex as in the report [e702060000000000]."),
)


def _td_options(f: Any) -> Any:
    """The TD identity flags shared by ``td-report`` and ``quote --tee tdx``."""
    for flag, _, text in reversed(_TD_OPTIONS):
        f = click.option(flag, metavar="HEX", default=None, help=text)(f)
    return f


@click.group(cls=_OneLineErrors, no_args_is_help=True)
def sim() -> None:
    """The simulated SGX/TDX platform: real DCAP quotes without SGX or TDX hardware.

    A platform lives in a state directory: its report-key secret, PPID, FMSPC, SVNs and a
    SIMULATED Intel PKI (root CA, PCK CA, PCK certificate, TCB signing certificate). It is created
    on first use, or explicitly with `sim init`. Verifiers accept its quotes only when told to
    trust its root (`sim root-ca`), never with Intel's.

    \b
    Examples:
      sgx-quote-helper sim init --state-dir /tmp/plat
      sgx-quote-helper sim quote --state-dir /tmp/plat --report-data 48656c6c6f --out quote.bin
      sgx-quote-helper sim quote --state-dir /tmp/plat --tee tdx --out td-quote.bin
      sgx-quote-helper sim collateral --state-dir /tmp/plat --out collateral.json
      sgx-quote-helper sim root-ca --state-dir /tmp/plat --der --out root.der
    """


@sim.command("init")
@state_dir_option
@click.option("--fmspc", metavar="HEX", help="FMSPC, 6 bytes hex [00A0A5510000].")
@click.option("--cpusvn", metavar="HEX", help="CPUSVN, 16 bytes hex [the current simulated TCB level].")
@click.option("--pcesvn", type=click.IntRange(0, 0xFFFF), default=None, help="PCE SVN [13].")
@click.option("--qe-svn", type=click.IntRange(0, 0xFFFF), default=None, help="QE SVN [8].")
@click.option(
    "--ca",
    type=click.Choice(["processor", "platform"]),
    default="processor",
    show_default=True,
    help="Which PCK CA issues the PCK certificate.",
)
@click.option(
    "--cert-data",
    type=click.Choice(["pck-chain", "encrypted-ppid"]),
    default="pck-chain",
    show_default=True,
    help="Quote certification data: type 5 (PEM chain) or type 3 (encrypted PPID).",
)
@click.option(
    "--tee-tcb-svn",
    metavar="HEX",
    help="The TDX module's TEE_TCB_SVN, 16 bytes hex [04010200000000000000000000000000, up to date]: "
    "byte 0 module SVN, byte 1 module major version, byte 2 TDX microcode SVN. All zero = out of date.",
)
@click.option("--force", is_flag=True, help="Replace an existing platform (new keys, new PPID).")
@click.option(
    "--pki-from",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Join another platform's SIMULATED PKI (same root CA and TCB signing certificate), so one "
    "root and one collateral service cover several simulated machines.",
)
@click.option(
    "--keep-existing",
    is_flag=True,
    help="If the directory already holds a platform, keep it and exit 0 (with --pki-from only if it "
    "already belongs to that PKI, else fail): for init containers that run on every pod start.",
)
def init_cmd(
    state_dir: Path | None,
    fmspc: str | None,
    cpusvn: str | None,
    pcesvn: int | None,
    qe_svn: int | None,
    ca: str,
    cert_data: str,
    tee_tcb_svn: str | None,
    force: bool,
    pki_from: Path | None,
    keep_existing: bool,
) -> None:
    """Create a simulated platform (refuses to replace one unless --force).

    The platform has an SGX side (QE3, PCE) and a TDX side (TDX module, TDQE) sharing one
    SIMULATED PKI and PCK certificate; --tee-tcb-svn sets the TDX module's TCB.

    Lower SVNs than the defaults make an older, out-of-date platform: verifiers then report
    OutOfDate (or the status of the TCB level it matches) with the advisory ids of that level.

    \b
    Examples:
      sgx-quote-helper sim init --state-dir /tmp/plat
      sgx-quote-helper sim init --state-dir /tmp/old --cpusvn 0d0d0303ffff01000000000000000000
      sgx-quote-helper sim init --state-dir /tmp/old-tdx --tee-tcb-svn 00000000000000000000000000000000
      sgx-quote-helper sim init --state-dir /tmp/mp --ca platform --cert-data encrypted-ppid --force
      sgx-quote-helper sim init --state-dir /tmp/node2 --pki-from /tmp/plat
      sgx-quote-helper sim init --state-dir /var/lib/sgx-quote-helper --pki-from /pki --keep-existing
    """
    from ..sim import identity
    from ..sim.platform import Platform
    from ..sim.tdx_module import TdxModule
    from ..sim.tdx_tcb_history import CURRENT_TEE_TCB_SVN

    svn = _hex(tee_tcb_svn, "--tee-tcb-svn", exact=16)
    if keep_existing and not force and _kept(resolve_state_dir(state_dir), pki_from):
        return

    kwargs: dict[str, Any] = {"ca": ca, "cert_data": cert_data, "force": force, "pki_from": pki_from}
    kwargs["fmspc"] = _hex(fmspc, "--fmspc", exact=6) or identity.DEFAULT_FMSPC
    kwargs["cpusvn"] = _hex(cpusvn, "--cpusvn", exact=16) or identity.DEFAULT_CPUSVN
    kwargs["pcesvn"] = identity.DEFAULT_PCESVN if pcesvn is None else pcesvn
    kwargs["qe_svn"] = identity.DEFAULT_QE_SVN if qe_svn is None else qe_svn
    path = resolve_state_dir(state_dir)
    try:
        platform = Platform.init(path, **kwargs)
        module = TdxModule.init(platform, svn) if svn is not None else TdxModule.open(platform)
    except _ERRORS as exc:
        fail(str(exc))
    ident = platform.identity
    click.echo(f"created a simulated SGX platform (with its TDX side) in {path}")
    click.echo(f"  FMSPC {ident.fmspc.hex().upper()}  CPUSVN {ident.cpusvn.hex()}  PCESVN {ident.pcesvn}")
    click.echo(f"  QE SVN {ident.qe_svn}  PCK CA {ident.ca}  certification data {ident.cert_data}")
    state = "up to date" if module.tee_tcb_svn == CURRENT_TEE_TCB_SVN else "not the current level"
    click.echo(f"  TDX TEE_TCB_SVN {module.tee_tcb_svn.hex()} ({state})")


def _kept(path: Path, pki_from: Path | None) -> bool:
    """For --keep-existing: ``True`` when ``path`` holds a platform that may be kept (it belongs to
    ``pki_from``'s SIMULATED PKI, if given); ``False`` when there is none yet; fails otherwise."""
    from ..sim.platform import MANIFEST, Platform

    if not (path / MANIFEST).exists():
        return False
    try:
        platform = Platform.open(path)
        shared = Platform.open(pki_from) if pki_from is not None else None
    except _ERRORS as exc:
        fail(str(exc))
    if shared is not None:
        roles = ["root", "tcb_signing"] + (["pck_ca"] if shared.identity.ca == platform.identity.ca else [])
        differ = [r for r in roles if platform.certs[r] != shared.certs[r]]
        if differ:
            fail(
                f"{path} already holds a simulated platform under another SIMULATED PKI than {pki_from} "
                f"(different {', '.join(differ)}); remove it or use --force to replace it"
            )
    click.echo(f"kept the simulated SGX platform in {path}")
    return True


@sim.command("report")
@state_dir_option
@click.option(
    "--target-info",
    "target_info",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The 512-byte TARGETINFO of the enclave the report is for (e.g. the QE's).",
)
@click.option(
    "--out", required=True, metavar="FILE", help="Where to write the 432-byte report ('-' = stdout)."
)
@_identity_options
def report_cmd(
    state_dir: Path | None,
    target_info: Path,
    out: str,
    report_data: str | None,
    mrenclave: str | None,
    mrsigner: str | None,
    isv_prod_id: int,
    isv_svn: int,
    debug: bool,
) -> None:
    """Stand in for EREPORT: write a REPORT MAC'd for the given target enclave.

    C apps and other languages use this where an enclave would call EREPORT: get the QE's
    target info (InitQuoteEx), make the report here, send it with GetQuoteEx.

    \b
    Example:
      sgx-quote-helper sim report --target-info qe_target_info.bin \\
          --report-data 00112233 --mrenclave $(printf 'ab%.0s' {1..32}) --out report.bin
    """
    try:
        target = TargetInfo.from_bytes(target_info.read_bytes())
    except OSError as exc:
        fail(f"cannot read {target_info}: {exc.strerror}")
    except ParseError as exc:
        fail(f"{target_info} is not a target info: {exc}")
    ident = _identity(report_data, mrenclave, mrsigner)
    platform = _open_platform(state_dir)
    report = platform.ereport(
        target,
        ident["report_data"],
        mr_enclave=ident["mr_enclave"],
        mr_signer=ident["mr_signer"],
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        debug=debug,
    )
    _write(out, report.to_bytes())
    _say(
        out,
        f"wrote a {len(report.to_bytes())}-byte report for target MRENCLAVE {target.mr_enclave.hex()} to {out}",
    )


@sim.command("quote")
@state_dir_option
@click.option("--out", required=True, metavar="FILE", help="Where to write the quote ('-' = stdout).")
@click.option(
    "--tee",
    type=click.Choice(["sgx", "tdx"]),
    default="sgx",
    show_default=True,
    help="sgx: an enclave's quote v3 (QE3); tdx: a TD's quote v4/v5 (TDQE).",
)
@click.option(
    "--quote-version",
    type=click.Choice(["4", "5"]),
    default=None,
    help="TDX only: 4 = from a TDX 1.0 TDREPORT (quote v4), 5 = from a TDX 1.5 TDREPORT (quote v5, "
    "body type 3) [4]. The TDQE picks the version from the report, as Intel's does.",
)
@click.option(
    "--td-report",
    "td_report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TDX only: quote this 1024-byte TDREPORT (from `sim td-report`) instead of making one.",
)
@_identity_options
@_td_options
def quote_cmd(
    state_dir: Path | None,
    out: str,
    tee: str,
    quote_version: str | None,
    td_report_file: Path | None,
    report_data: str | None,
    mrenclave: str | None,
    mrsigner: str | None,
    isv_prod_id: int,
    isv_svn: int,
    debug: bool,
    **td: str | None,
) -> None:
    """Make a report and a DCAP quote for it, in-process (no quote service needed).

    SGX (default): an enclave report and a quote v3. TDX (--tee tdx): a TDREPORT from the simulated
    TDX module, quoted by the simulated TDQE (certification data type 6 wrapping the PCK chain).

    \b
    Examples:
      sgx-quote-helper sim quote --out quote.bin --report-data "$(printf hello | xxd -p)"
      sgx-quote-helper sim quote --mrenclave <64 hex> --isv-svn 2 --out quote.bin
      sgx-quote-helper sim quote --tee tdx --quote-version 5 --mr-td <96 hex> --out td-quote.bin
      sgx-quote-helper sim quote --tee tdx --td-report td-report.bin --out td-quote.bin
      sgx-quote-helper inspect quote.bin
      sgx-quote-helper sim quote --out - | base64 -w0    # '-' writes the quote to stdout
    """
    if tee == "tdx":
        sgx_only: dict[str, object] = {
            "--mrenclave": mrenclave,
            "--mrsigner": mrsigner,
            "--debug": debug or None,
        }
        sgx_only |= {"--isv-prod-id": isv_prod_id or None, "--isv-svn": isv_svn or None}
        used = [name for name, value in sgx_only.items() if value is not None]
        if used:
            fail(
                f"{', '.join(used)} describe an SGX enclave; with --tee tdx use the TD options (--mr-td ...)"
            )
        _tdx_quote(state_dir, out, quote_version, td_report_file, report_data, td)
        return
    used = [f"--{k.replace('_', '-')}" for k, v in td.items() if v is not None]
    if quote_version is not None or td_report_file is not None:
        used += ["--quote-version"] if quote_version is not None else []
        used += ["--td-report"] if td_report_file is not None else []
    if used:
        fail(f"{', '.join(used)} only apply with --tee tdx")
    from ..engine.simulated import SimulatedEngine
    from ..sim.qe import QE_TARGET_INFO

    ident = _identity(report_data, mrenclave, mrsigner)
    platform = _open_platform(state_dir)
    engine = SimulatedEngine(platform)
    key_id = AttKeyId.ecdsa_p256_qe3()
    try:
        engine.init_quote(key_id, True)
        report = platform.ereport(
            QE_TARGET_INFO,
            ident["report_data"],
            mr_enclave=ident["mr_enclave"],
            mr_signer=ident["mr_signer"],
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            debug=debug,
        )
        quote = engine.get_quote(report, key_id).quote
    except _ERRORS as exc:
        fail(str(exc))
    _write(out, quote)
    cert_type = Quote.from_bytes(quote).certification_data.cert_type
    _say(out, f"wrote a {len(quote)}-byte DCAP quote v3 (certification data type {cert_type}) to {out}")


def _td_identity(td: dict[str, str | None]) -> Any:
    from ..sim.tdx_module import TdIdentity

    values: dict[str, bytes] = {}
    for flag, size, _ in _TD_OPTIONS:
        name = flag[2:].replace("-", "_")
        raw = _hex(td.get(name), flag, exact=size)
        if raw is not None:
            values[name] = raw
    return TdIdentity(**values)


def _tdx_module(state_dir: Path | None) -> Any:
    from ..sim.tdx_module import TdxModule

    platform = _open_platform(state_dir)
    try:
        return TdxModule.open(platform)
    except _ERRORS as exc:
        fail(str(exc))


def _tdx_version(quote_version: str | None, tdx_version: str | None = None) -> int:
    from ..abi.tdx_report import TDX_REPORT_VERSION_10, TDX_REPORT_VERSION_15

    v15 = quote_version == "5" or tdx_version == "1.5"
    return TDX_REPORT_VERSION_15 if v15 else TDX_REPORT_VERSION_10


@sim.command("td-report")
@state_dir_option
@click.option(
    "--out", required=True, metavar="FILE", help="Where to write the 1024-byte TDREPORT ('-' = stdout)."
)
@click.option("--report-data", metavar="HEX", help="Up to 64 bytes of REPORTDATA, hex (zero-padded).")
@click.option(
    "--tdx-version",
    type=click.Choice(["1.0", "1.5"]),
    default="1.0",
    show_default=True,
    help="TDREPORT layout: 1.0 (report version 0, quoted as v4) or 1.5 (version 1, with TEE_TCB_SVN2 "
    "and MRSERVICETD, quoted as v5).",
)
@_td_options
def td_report_cmd(
    state_dir: Path | None, out: str, report_data: str | None, tdx_version: str, **td: str | None
) -> None:
    """Stand in for TDG.MR.REPORT: write the TDREPORT a TD on this platform would get.

    The report carries SHA-384 hashes of TEE_TCB_INFO and TDINFO and a MAC under the platform's
    simulated TD report key: only this platform's simulated TDQE (`sim quote --tee tdx
    --td-report`, `qgs serve`) accepts it, and any altered byte makes it refuse.

    \b
    Examples:
      sgx-quote-helper sim td-report --report-data "$(printf nonce | xxd -p)" --out td-report.bin
      sgx-quote-helper sim td-report --tdx-version 1.5 --mr-td <96 hex> --rtmr0 <96 hex> --out r.bin
      sgx-quote-helper sim quote --tee tdx --td-report td-report.bin --out td-quote.bin
    """
    data = _hex(report_data, "--report-data", max_len=64) or b""
    ident = _td_identity(td)
    module = _tdx_module(state_dir)
    try:
        report = module.report(data, ident, version=_tdx_version(None, tdx_version))
    except _ERRORS as exc:
        fail(str(exc))
    _write(out, report.to_bytes())
    _say(out, f"wrote a 1024-byte TDX {tdx_version} TDREPORT to {out}")


def _tdx_quote(
    state_dir: Path | None,
    out: str,
    quote_version: str | None,
    td_report_file: Path | None,
    report_data: str | None,
    td: dict[str, str | None],
) -> None:
    from ..sim.tdqe import Tdqe

    module = _tdx_module(state_dir)
    if td_report_file is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in td.items() if v is not None]
        given += ["--report-data"] if report_data is not None else []
        given += ["--quote-version"] if quote_version is not None else []
        if given:
            fail(f"{', '.join(given)} cannot be used with --td-report (the report already says it)")
        try:
            raw = td_report_file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {td_report_file}: {exc.strerror}")
    else:
        data = _hex(report_data, "--report-data", max_len=64) or b""
        try:
            raw = module.report(data, _td_identity(td), version=_tdx_version(quote_version)).to_bytes()
        except _ERRORS as exc:
            fail(str(exc))
    try:
        quote = Tdqe.for_platform(module).quote(raw)
    except _ERRORS as exc:
        fail(str(exc))
    _write(out, quote)
    _say(out, f"wrote a {len(quote)}-byte TDX quote v{quote[0]} (certification data type 6) to {out}")


def _parse_now(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        if value.isdigit():
            return dt.datetime.fromtimestamp(int(value), dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        fail(f"--now must be unix seconds or an ISO 8601 time like 2026-01-31T12:00:00Z, got {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@sim.command("collateral")
@state_dir_option
@click.option("--out", required=True, metavar="FILE", help="Where to write the JSON ('-' = stdout).")
@click.option(
    "--now",
    metavar="TIME",
    help="Issue time: unix seconds or ISO 8601 [the current time]. Dates are issued one hour before "
    "it and stay valid 30 days; the platform's certificates are valid from a day before its creation.",
)
@click.option(
    "--tee",
    type=click.Choice(["sgx", "tdx"]),
    default="sgx",
    show_default=True,
    help="sgx: TCB Info id SGX and QE Identity id QE; tdx: TCB Info id TDX (TDX module identities, "
    "TDX TCB levels) and QE Identity id TD_QE.",
)
def collateral_cmd(state_dir: Path | None, out: str, now: str | None, tee: str) -> None:
    """Write signed collateral (TCB Info, QE Identity, CRLs) in dcap-qvl's QuoteCollateralV3 JSON.

    SGX quotes need the SGX collateral, TDX quotes (--tee tdx) the TDX collateral; both are signed
    by the platform's SIMULATED TCB signing key and share the CRLs.

    \b
    Example (verify a simulated quote with dcap-qvl, trusting the simulated root):
      sgx-quote-helper sim collateral --out coll.json        # --tee tdx for TD quotes
      sgx-quote-helper sim root-ca --der --out root.der
      python -c "import dcap_qvl,time; print(dcap_qvl.verify_with_root_ca(open('quote.bin','rb').read(),
        dcap_qvl.QuoteCollateralV3.from_json(open('coll.json').read()), open('root.der','rb').read(),
        int(time.time())).status)"
    """
    from ..sim.collateral import quote_collateral_json
    from ..sim.tdx_collateral import tdx_quote_collateral_json

    when = _parse_now(now)
    platform = _open_platform(state_dir)
    make = tdx_quote_collateral_json if tee == "tdx" else quote_collateral_json
    _write(out, make(platform, when).encode())
    _say(
        out,
        f"wrote {tee.upper()} collateral for FMSPC {platform.identity.fmspc.hex().upper()} issued {when:%Y-%m-%dT%H:%M:%SZ} to {out}",
    )


@sim.command("root-ca")
@state_dir_option
@click.option("--out", required=True, metavar="FILE", help="Where to write the certificate ('-' = stdout).")
@click.option("--der", is_flag=True, help="DER instead of PEM.")
def root_ca_cmd(state_dir: Path | None, out: str, der: bool) -> None:
    """Export the SIMULATED Intel SGX Root CA certificate (the anchor verifiers must be told to trust).

    \b
    Examples:
      sgx-quote-helper sim root-ca --out root.pem
      sgx-quote-helper sim root-ca --der --out root.der
    """
    from cryptography.hazmat.primitives import serialization

    platform = _open_platform(state_dir)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    _write(out, platform.certs["root"].public_bytes(encoding))
    _say(out, f"wrote the SIMULATED Intel SGX Root CA ({'DER' if der else 'PEM'}) to {out}")


__all__ = ["sim"]
