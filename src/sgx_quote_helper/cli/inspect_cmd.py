"""``sgx-quote-helper inspect``: decode a quote and show what it says (no verification)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..abi.quote import CERT_TYPE_PCK_CHAIN, Quote
from ..abi.report import ReportBody
from ..abi.tdreport import TdReport15
from ..errors import ParseError, VerificationError
from ..verify.chain import sgx_extensions
from ._common import fail

_TEE_NAMES = {0x00: "SGX", 0x81: "TDX"}
_CERT_TYPE_NAMES = {
    1: "PPID (cleartext)",
    2: "PPID (RSA-2048 encrypted)",
    3: "PPID (RSA-3072 encrypted)",
    4: "PCK certificate",
    5: "PCK certificate chain",
    6: "QE report certification",
    7: "platform manifest",
}


def pck_fields(chain_pem: bytes) -> dict[str, Any]:
    """Decode the PCK leaf's SGX extension and the issuer CN from a PEM chain.

    Raises:
        ParseError: the chain or a lazily decoded field of the leaf is malformed.
    """
    from cryptography import x509

    try:
        return _pck_fields(chain_pem)
    except ParseError:
        raise
    # cryptography decodes certificate fields lazily; these escaped before (found by fuzz/ pki)
    except (ValueError, x509.DuplicateExtension, x509.InvalidVersion) as exc:
        raise ParseError("PckCertChain", 0, f"malformed PCK certificate: {exc}") from None


def _pck_fields(chain_pem: bytes) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ParseError("PckCertChain", 0, f"not a PEM certificate chain: {exc}") from None
    leaf = certs[0]
    try:
        sgx = sgx_extensions(leaf, step=0)  # the verifier's decoder; here a failure is bad input
    except VerificationError as exc:
        raise ParseError("PckCertChain", 0, f"malformed PCK certificate: {exc.reason}") from None
    issuer = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    out: dict[str, Any] = {
        "fmspc": sgx.fmspc.hex(),
        "pceid": sgx.pceid.hex(),
        "pcesvn": sgx.pcesvn,
        "cpusvn": sgx.cpusvn.hex(),
        "tcb_components": list(sgx.tcb_components),
        "sgx_type": sgx.sgx_type,
        "pck_issuer": str(issuer[0].value) if issuer else leaf.issuer.rfc4514_string(),
        "ppid": sgx.ppid.hex(),
    }
    if sgx.configuration is not None:
        out["platform_configuration"] = {
            "dynamic_platform": sgx.configuration.dynamic_platform,
            "cached_keys": sgx.configuration.cached_keys,
            "smt_enabled": sgx.configuration.smt_enabled,
        }
    return out


def summarize(quote: Quote) -> dict[str, Any]:
    """One flat JSON-able summary of a quote (the ``inspect --json`` object)."""
    h = quote.header
    out: dict[str, Any] = {
        "version": h.version,
        "tee_type": h.tee_type,
        "att_key_type": h.att_key_type,
        "qe_svn": h.qe_svn,
        "pce_svn": h.pce_svn,
        "qe_vendor_id": h.qe_vendor_id.hex(),
        "qe_id": h.qe_id.hex(),
    }
    body = quote.body
    if isinstance(body, ReportBody):
        out.update(
            mrenclave=body.mr_enclave.hex(),
            mrsigner=body.mr_signer.hex(),
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            cpu_svn=body.cpu_svn.hex(),
            misc_select=body.misc_select,
            attributes=body.attributes.to_bytes().hex(),
            debug=body.debug,
        )
    else:
        out.update(
            tee_tcb_svn=body.tee_tcb_svn.hex(),
            mr_seam=body.mr_seam.hex(),
            mr_signer_seam=body.mr_signer_seam.hex(),
            seam_attributes=body.seam_attributes.hex(),
            td_attributes=body.td_attributes.hex(),
            xfam=body.xfam.hex(),
            mr_td=body.mr_td.hex(),
            mr_config_id=body.mr_config_id.hex(),
            mr_owner=body.mr_owner.hex(),
            mr_owner_config=body.mr_owner_config.hex(),
            rtmr0=body.rtmr0.hex(),
            rtmr1=body.rtmr1.hex(),
            rtmr2=body.rtmr2.hex(),
            rtmr3=body.rtmr3.hex(),
            attributes=body.td_attributes.hex(),
            debug=body.debug,
        )
        if isinstance(body, TdReport15):
            out["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
            out["mr_service_td"] = body.mr_service_td.hex()
    out["report_data"] = body.report_data.hex()
    if quote.body_type is not None:
        out["body_type"] = quote.body_type
    qe = quote.qe_report
    out.update(qe_report_isv_svn=qe.isv_svn, qe_report_mrsigner=qe.mr_signer.hex())
    cd = quote.certification_data
    out["certification_data_type"] = cd.cert_type
    out["signature_data_len"] = quote.signature_data_len
    out["size"] = len(quote.to_bytes())
    out["trailing_bytes"] = len(quote.trailing)
    if cd.cert_type == CERT_TYPE_PCK_CHAIN:
        out.update(pck_fields(cd.pck_chain_pem()))
    elif cd.cert_type in (1, 2, 3):
        ppid = cd.encrypted_ppid()
        out.update(
            encrypted_ppid=ppid.encrypted_ppid.hex(),
            cpusvn=ppid.cpusvn.hex(),
            pcesvn=ppid.pcesvn,
            pceid=ppid.pceid.to_bytes(2, "little").hex(),
        )
    return out


def _human(path: Path, s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    tee = _TEE_NAMES.get(s["tee_type"], hex(s["tee_type"]))
    title = f"{path.name}: DCAP quote v{s['version']} ({tee}), {s['size']} bytes"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    skip = {"version", "size"}
    for key, value in s.items():
        if key in skip:
            continue
        if key == "certification_data_type":
            value = f"{value} ({_CERT_TYPE_NAMES.get(value, 'unknown')})"
        elif key == "debug":
            value = "YES (debug enclave: secrets are not protected)" if value else "no"
        elif key == "tee_type":
            value = f"{value:#x} ({tee})"
        elif key == "tcb_components":
            value = " ".join(str(v) for v in value)
        table.add_row(key, str(value))
    Console().print(table)


@click.command("inspect")
@click.argument("quote_file", metavar="QUOTE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one flat JSON object instead of a table.")
def inspect(quote_file: Path, as_json: bool) -> None:
    """Decode QUOTE (a binary DCAP quote file, v3/v4/v5, SGX or TDX) and print its fields.

    Nothing is verified here: use `sgx-quote-helper verify` for that. With --json the keys are
    version, tee_type, qe_svn, pce_svn, qe_vendor_id, mrenclave, mrsigner, isv_prod_id, isv_svn,
    attributes, debug, report_data, certification_data_type and, when the quote carries a PCK
    chain, fmspc, pceid, pcesvn, cpusvn, tcb_components, sgx_type, pck_issuer (TDX quotes carry
    their TD report fields: mr_td, rtmr0-3, ...). Byte strings are lower-case hex.

    \b
    Examples:
      sgx-quote-helper inspect quote.bin
      sgx-quote-helper inspect quote.bin --json | jq .fmspc
    """
    try:
        data = quote_file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {quote_file}: {exc.strerror or exc}")
    try:
        summary = summarize(Quote.from_bytes(data))
    except ParseError as exc:
        fail(f"{quote_file} is not a valid DCAP quote: {exc}")
    if as_json:
        click.echo(json.dumps(summary, sort_keys=False))
    else:
        _human(quote_file, summary)


__all__ = ["inspect", "pck_fields", "summarize"]
