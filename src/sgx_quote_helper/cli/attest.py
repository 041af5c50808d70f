"""``sgx-quote-helper attest``: an Azure Attestation-compatible service, its keys, and a client."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import re
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from ..errors import AttestationError, CollateralError, ConfigError, ParseError, PolicyError
from ._common import fail
from ._logs import LOG_FORMATS, setup_logging

log = logging.getLogger("sgx_quote_helper.attest")

ROUTES = ("SgxEnclave", "OpenEnclave", "TdxVm")
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, allow_zero: bool = False) -> dt.timedelta:
    """``90``, ``90s``, ``15m``, ``8h``, ``7d`` -> timedelta (click.BadParameter otherwise)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or (int(m.group(1)) == 0 and not allow_zero):
        raise click.BadParameter(f"expected a positive duration like 30s, 15m, 8h or 1d, got {text!r}")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


class _AttestGroup(click.Group):
    """``attest QUOTE ...`` runs the client; ``attest serve|keys|client`` the subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["client", *args]
        return super().parse_args(ctx, args)


@click.group("attest", cls=_AttestGroup)
def attest() -> None:
    """An attestation service in Azure Attestation's (MAA's) API, and its client.

    The service verifies SGX and TDX quotes with this tool's DCAP verifier (collateral from a
    PCCS or a file), evaluates a policy in MAA's text format, and answers with RS256 tokens
    carrying MAA's claims: Microsoft's azure-security-attestation SDK works against it unchanged.

    \b
    Start here:
      sgx-quote-helper attest serve --key-dir keys/ --collateral c.json --root-ca sim-root.der \\
          --tls-cert tls.crt --tls-key tls.key
      sgx-quote-helper attest quote.bin --url https://127.0.0.1:8443 --ca tls.crt
      sgx-quote-helper attest keys rotate --key-dir keys/

    `attest QUOTE ...` is short for `attest client QUOTE ...`.
    """


def _load_policies(values: tuple[str, ...]) -> dict[str, Any]:
    from ..attest.service import load_policy

    out: dict[str, Any] = {}
    for value in values:
        kind, sep, path = value.partition("=")
        types: tuple[str, ...]
        if sep and kind in ROUTES:
            types = (kind,)
        else:
            types, path = ROUTES, value
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"--policy {value}: {exc}") from None
        try:
            pol = load_policy(text)
        except PolicyError as exc:
            raise click.BadParameter(f"--policy {path}: {exc}") from None
        except ConfigError as exc:
            raise click.BadParameter(f"--policy {path}: {exc}") from None
        for t in types:
            out[t] = pol
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SERVE_EPILOG = """
\b
Examples:
  # simulated platform (its SIMULATED root must be passed explicitly):
  sgx-quote-helper sim collateral > c.json && sgx-quote-helper sim root-ca > sim-root.der
  sgx-quote-helper attest serve --key-dir keys/ --collateral c.json --root-ca sim-root.der \\
      --tls-cert tls.crt --tls-key tls.key --port 8443
  # real platforms, collateral from a PCCS (cached for --collateral-ttl):
  sgx-quote-helper attest serve --key-dir keys/ --pccs https://pccs.example:8081 \\
      --tls-cert tls.crt --tls-key tls.key --host 0.0.0.0 --policy my-policy.txt

\b
Routes (MAA's): POST /attest/SgxEnclave, /attest/OpenEnclave, /attest/TdxVm ?api-version=2020-10-01
(and 2022-08-01, 2023-04-01-preview, 2025-06-01); GET /certs, /.well-known/openid-configuration,
/policies/{type}; plus /healthz, /readyz, /metrics.

\b
Policies: --policy FILE (every type) or --policy TdxVm=FILE; MAA's text format
(version=1.x; authorizationrules {...}; issuancerules {...};) or a `verify --policy` JSON file.
The defaults deny debug enclaves/TDs and every TCB status but UpToDate (see README).
"""


@attest.command("serve", epilog=SERVE_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option("--key-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Signing keys (generated on first start; shared by replicas, e.g. a Secret).")  # fmt: skip
@click.option("--pccs", metavar="URL", help="Fetch collateral from this PCCS/PCS (cached).")
@click.option("--collateral", "collateral_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this collateral (dcap-qvl JSON, as `verify --collateral`) for every quote.")  # fmt: skip
@click.option("--root-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust this root CA (DER/PEM) instead of Intel's; needed for simulated quotes.")  # fmt: skip
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Server certificate chain (PEM)."
)
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Server private key (PEM).")
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).")  # fmt: skip
@click.option(
    "--update",
    type=click.Choice(["early", "standard"]),
    help="With --pccs: which TCB baseline to fetch (PCS v4 update=early|standard) [default: the PCCS's].",
)
@click.option(
    "--tcb-evaluation-data-number", "tcb_eval", type=click.IntRange(1), metavar="N",
    help="With --pccs: fetch the TCB baseline with this tcbEvaluationDataNumber (MAA's custom TCB baseline).",
)  # fmt: skip
@click.option(
    "--policy", "policies", multiple=True, metavar="[TYPE=]FILE", help="Policy for every type, or one TYPE."
)
@click.option("--token-lifetime", default="8h", show_default=True, help="Token lifetime (30m, 8h, 1d...).")
@click.option("--issuer", metavar="URL", help="The iss claim and the jku base [the URL served].")
@click.option(
    "--collateral-ttl",
    default="1h",
    show_default=True,
    help="How long fetched collateral is reused (0: fetch for every request).",
)
@click.option(
    "--max-body",
    default=1024 * 1024,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest request body (bytes); larger: 413.",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option("--log-format", default="text", show_default=True, type=click.Choice(LOG_FORMATS))
def serve(
    host: str, port: int, key_dir: Path, pccs: str | None, collateral_file: Path | None, root_ca: Path | None,
    tls_cert: Path | None, tls_key: Path | None, insecure_http: bool, update: str | None, tcb_eval: int | None,
    policies: tuple[str, ...],
    token_lifetime: str, issuer: str | None, collateral_ttl: str, max_body: int, log_level: str, log_format: str,
) -> None:  # fmt: skip
    """Serve MAA-compatible attestation over HTTPS.

    Prints one line `attest ready at https://HOST:PORT` on stdout once it answers. Quotes are
    verified against Intel's production root unless --root-ca names another (the simulated
    platform's root is trusted only that way; nothing a client sends can change it).
    """
    from ..attest.collateral import FixedCollateral, PccsCollateral
    from ..attest.keys import KeyDir
    from ..verify.chain import TrustedRoot
    from ..verify.collateral import load_dcap_qvl_json
    from ..verify.fetch import urllib_getter
    from ..verify.verifier import Verifier

    setup_logging(getattr(logging, log_level.upper()), log_format)
    if (pccs is None) == (collateral_file is None):
        fail("give exactly one of --pccs URL or --collateral FILE")
    if (update is not None or tcb_eval is not None) and pccs is None:
        fail("--update and --tcb-evaluation-data-number pick what --pccs fetches; they need --pccs URL")
    if update is not None and tcb_eval is not None:
        fail("give --update or --tcb-evaluation-data-number, not both (PCS v4 takes one)")
    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither")
    try:
        lifetime = parse_duration(token_lifetime)
        ttl = parse_duration(collateral_ttl, allow_zero=True).total_seconds()
        policy_map = _load_policies(policies)
    except click.BadParameter as exc:
        fail(exc.format_message())
    ctx: ssl.SSLContext | None = None
    if tls_cert is not None and tls_key is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            fail(f"--tls-cert/--tls-key: {exc}")
    elif not _is_loopback(host) and not insecure_http:
        fail(
            f"plain HTTP on {host} would expose tokens: give --tls-cert/--tls-key (or --insecure-http behind a TLS proxy)"
        )
    else:
        click.echo("warning: serving plain HTTP (no --tls-cert): for loopback tests only", err=True)
    try:
        root = TrustedRoot.load(root_ca.read_bytes()) if root_ca is not None else None
        source: Any
        if collateral_file is not None:
            coll = load_dcap_qvl_json(collateral_file.read_bytes())
            coll.tcb_info_model  # noqa: B018  (fail at start, not on the first request)
            coll.qe_identity_model  # noqa: B018
            source = FixedCollateral(coll)
        else:
            source = PccsCollateral(
                str(pccs), urllib_getter(), ttl=ttl, update=update, tcb_evaluation_data_number=tcb_eval
            )
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    except (CollateralError, ConfigError, ValueError) as exc:
        fail(str(exc))
    verifier = Verifier(root) if root is not None else Verifier()
    from .pccs import _loop_factory

    try:
        # uvloop when installed, as `pccs serve`: less event-loop CPU per request
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                _serve(
                    host, port, ctx, verifier, source, KeyDir(key_dir), policy_map, lifetime, issuer, max_body
                )
            )
    except ConfigError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")


async def _serve(
    host: str, port: int, ctx: ssl.SSLContext | None, verifier: Any, source: Any, keydir: Any,
    policies: dict[str, Any], lifetime: dt.timedelta, issuer: str | None, max_body: int,
) -> None:  # fmt: skip
    from ..attest.app import make_app, start, system_clock
    from ..attest.service import AttestationService

    service = AttestationService(
        verifier=verifier,
        keys=keydir,
        issuer=issuer or "https://pending",
        lifetime=lifetime,
        policies=policies,  # type: ignore[arg-type]
    )
    keys = service.load_keys(system_clock())
    app = make_app(service, source, max_body=max_body)
    runner, url = await start(app, host, port, ctx)
    if issuer is None:
        service.issuer = url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "serving attestation at %s (collateral: %s, %d signing key(s), issuer %s)",
        url,
        source.mode,
        len(keys),
        service.issuer,
    )
    click.echo(f"attest ready at {url}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------- keys


@attest.group("keys")
def keys() -> None:
    """Token signing keys in a key directory (RSA, self-signed x5c certificates, mode 0600)."""


@keys.command("rotate")
@click.option("--key-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--token-lifetime", default="8h", show_default=True,
              help="The service's token lifetime: older keys are deleted once no token they signed can be alive.")  # fmt: skip
@click.option(
    "--bits", default=2048, show_default=True, type=click.IntRange(2048, 8192), help="RSA key size."
)
def rotate(key_dir: Path, token_lifetime: str, bits: int) -> None:
    """Add a new signing key, published at once and signing 5 minutes later (once every replica
    has reloaded it); keep older keys in the JWKS until every token they signed has expired, and
    delete the keys past that point.

    \b
    Running services reload the directory within 30 s. With Kubernetes, rotate into a copy and
    update the Secret:
      sgx-quote-helper attest keys rotate --key-dir keys/
      kubectl create secret generic attest-keys --from-file=keys/ --dry-run=client -o yaml | kubectl apply -f -
    """
    from ..attest.keys import KeyDir

    try:
        lifetime = parse_duration(token_lifetime)
    except click.BadParameter as exc:
        fail(exc.format_message())
    now = dt.datetime.now(dt.UTC)
    kd = KeyDir(key_dir)
    try:
        gone = kd.prune(now, lifetime)
        new = kd.add(now, bits)
    except ConfigError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {key_dir}: {exc.strerror}")
    from ..attest.keys import PUBLISH_AHEAD

    starts = (new.created + PUBLISH_AHEAD).isoformat()
    click.echo(f"added signing key {new.number} (kid {new.kid}): published now, signs from {starts}")
    for n in gone:
        click.echo(f"deleted signing key {n}: every token it signed has expired")


@keys.command("list")
@click.option("--key-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--token-lifetime", default="8h", show_default=True)
def list_keys(key_dir: Path, token_lifetime: str) -> None:
    """Show each key: number, state (signing, next, published, retired), creation, size, kid."""
    from ..attest.keys import PUBLISH_AHEAD, KeyDir, active, published

    try:
        lifetime = parse_duration(token_lifetime)
        ks = KeyDir(key_dir).load()
    except (click.BadParameter, ConfigError) as exc:
        fail(str(exc))
    if not ks:
        fail(f"no signing keys in {key_dir}")
    now = dt.datetime.now(dt.UTC)
    signer = active(ks, now).number
    live = {k.number for k in published(ks, now, lifetime)}
    for k in ks:
        if k.number == signer:
            state = "signing"
        elif k.number > signer:
            state = f"next (signs from {(k.created + PUBLISH_AHEAD).isoformat()})"
        else:
            state = "published" if k.number in live else "retired"
        click.echo(f"{k.number:4d}  {state:9s}  {k.created.isoformat()}  {k.key.key_size} bits  kid {k.kid}")


# ----------------------------------------------------------------------------------- client


def _http(url: str, ctx: ssl.SSLContext | None, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}")
    try:
        return status, json.loads(raw)
    except ValueError:
        fail(f"{url}: HTTP {status}, not JSON")


CLIENT_EPILOG = """
\b
Examples:
  sgx-quote-helper attest quote.bin --url https://127.0.0.1:8443 --ca tls.crt
  sgx-quote-helper attest quote.bin --url https://attest.example --runtime-data key.json --runtime-json --json

\b
The token is checked as a relying party would: the key named by its kid in GET /certs, the RS256
signature with that key's x5c certificate, then nbf/exp. Exit status: 0 a valid token; 1 the
service refused the quote (its error code and message are printed) or the token did not check
out; 2 bad input or an unreachable service.
"""


@attest.command("client", epilog=CLIENT_EPILOG)
@click.argument("quote_file", metavar="QUOTE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="The attestation service's base URL.")
@click.option("--runtime-data", type=click.Path(dir_okay=False, path_type=Path),
              help="Runtime data whose SHA-256 is report_data[0:32] of the quote.")  # fmt: skip
@click.option(
    "--runtime-json", is_flag=True, help="Send the runtime data as dataType JSON (claims in x-ms-runtime)."
)
@click.option(
    "--type", "route", type=click.Choice(ROUTES), help="Route [SgxEnclave, or TdxVm for TDX quotes]."
)
@click.option("--nonce", help="A nonce the token echoes.")
@click.option(
    "--ca", type=click.Path(dir_okay=False, path_type=Path), help="Trust this CA (PEM) for the service's TLS."
)
@click.option("--api-version", default="2022-08-01", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {header, claims} as one JSON object.")
def client(
    quote_file: Path, url: str, runtime_data: Path | None, runtime_json: bool, route: str | None,
    nonce: str | None, ca: Path | None, api_version: str, as_json: bool,
) -> None:  # fmt: skip
    """Send QUOTE to an attestation service; print the decoded, signature-checked token."""
    from ..abi.quote import Quote
    from ..attest.policy import b64url
    from ..attest.request import open_enclave_report
    from ..attest.token import decode, verify_token

    try:
        raw = quote_file.read_bytes()
        rd = runtime_data.read_bytes() if runtime_data is not None else None
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    try:
        quote = Quote.from_bytes(raw)
    except ParseError as exc:
        fail(f"{quote_file} is not a quote: {exc}")
    route = route or ("TdxVm" if quote.is_tdx else "SgxEnclave")
    ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    base = url.rstrip("/")
    payload: dict[str, Any] = {
        "report" if route == "OpenEnclave" else "quote": b64url(
            open_enclave_report(raw) if route == "OpenEnclave" else raw
        )
    }
    if rd is not None:
        payload["runtimeData"] = {"data": b64url(rd), "dataType": "JSON" if runtime_json else "Binary"}
    if nonce is not None:
        payload["nonce"] = nonce
    status, answer = _http(
        f"{base}/attest/{route}?api-version={api_version}", ctx, json.dumps(payload).encode()
    )
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        err = answer.get("error", {}) if isinstance(answer, dict) else {}
        click.echo(f"refused (HTTP {status}): {err.get('code', '?')}: {err.get('message', answer)}", err=True)
        sys.exit(1)
    token = answer["token"]
    _, jwks = _http(f"{base}/certs", ctx)
    try:
        claims = verify_token(token, jwks, time.time())
        header = decode(token)[0]
    except AttestationError as exc:
        click.echo(f"token rejected: {exc.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"header": header, "claims": claims}, indent=1, sort_keys=True))
        return
    click.echo(
        f"token OK: signed by kid {header.get('kid')} ({header.get('alg')}), issuer {claims.get('iss')}"
    )
    for key in sorted(claims):
        value = claims[key]
        click.echo(
            f"  {key}: {json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else value}"
        )


__all__ = ["attest", "parse_duration"]
