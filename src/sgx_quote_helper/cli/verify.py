"""``sgx-quote-helper verify``: verify a DCAP quote against collateral, print the verdict."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from ..abi.quote import Quote
from ..errors import CollateralError, ConfigError, ParseError, VerificationError
from ..verify.chain import TrustedRoot
from ..verify.collateral import Collateral, load_dcap_qvl_json
from ..verify.policy import Policy
from ..verify.verdict import Verdict, failure_dict
from ..verify.verifier import Verifier

EXAMPLES = """
\b
Examples:
  sgx-quote-helper verify quote.bin --collateral collateral.json
  sgx-quote-helper verify quote.bin --collateral c.json --now 2025-06-19T12:00:00Z --json
  sgx-quote-helper verify quote.bin --pccs http://127.0.0.1:8081 --root-ca sim-root.der
  sgx-quote-helper verify quote.bin --collateral c.json --mrenclave 68823b... --min-isv-svn 2
  sgx-quote-helper verify quote.bin --pccs URL --update standard --min-tcb-evaluation-data-number 17

\b
Policy: every constraint is checked and every violation reported (not just the first); a
constraint the quote's TEE cannot satisfy (--mrenclave, --mrsigner, --isv-prod-id, --min-isv-svn
on a TDX quote; mr_td on an SGX quote) is a violation, never silently ignored.
\b
Exit status: 0 authentic and accepted by the policy; 1 rejected (a failed check, with its step
and reason, or one or more policy violations); 2 unusable input (unreadable file, not a quote,
collateral or policy that does not parse). With --json stdout holds exactly one JSON object for
every exit status: "violations" lists every reason (step, reason, constraint); on a failed check
the quote's claimed identity is under "unverified_body", never beside the results.
"""


def parse_now(value: str | None) -> datetime:
    """``--now``: Unix seconds or ISO-8601 (naive means UTC); default the current time."""
    if value is None:
        return datetime.fromtimestamp(time.time(), UTC)
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"--now must be Unix seconds or ISO-8601, got {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _finish(as_json: bool, obj: dict[str, Any], code: int, message: str) -> NoReturn:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    if message:
        click.echo(message, err=code != 0)
    sys.exit(code)


def _input_error(as_json: bool, reason: str, detail: str) -> NoReturn:
    obj: dict[str, Any] = {
        "status": None, "platform_status": None, "qe_status": None, "advisory_ids": [],
        "qe_advisory_ids": [], "accepted": False, "error": {"step": "input", "reason": reason},
        "violations": [{"step": "input", "reason": reason}],
    }  # fmt: skip
    _finish(as_json, obj, 2, f"error: {detail}")


def _policy(policy_file: Path | None, overrides: dict[str, Any]) -> Policy:
    """The policy file (if any) with the command-line constraints on top: one path for both."""
    base: dict[str, Any] = {}
    if policy_file is not None:
        try:
            base = json.loads(policy_file.read_text())
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"policy: invalid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise ConfigError("policy: expected a JSON object")
    base.update({k: v for k, v in overrides.items() if v is not None and v is not False})
    return Policy.from_dict(base)


def _human(v: Verdict) -> str:
    ident = v.identity()
    who = f"mrenclave {ident['mr_enclave']}" if "mr_enclave" in ident else f"mr_td {ident['mr_td']}"
    adv = ", ".join(v.advisory_ids) or "none"
    lines = [
        f"OK: {v.tee} quote v{v.quote_version} accepted: {v.status.value} "
        f"(platform {v.platform_status.value}, QE {v.qe_status.value})",
        f"  advisories: {adv}; QE advisories: {', '.join(v.qe_advisory_ids) or 'none'}",
        f"  FMSPC {v.fmspc.hex().upper()} ({v.ca_type} CA), {who}",
        f"  collateral valid until {v.earliest_expiration.isoformat()}; tcbEvaluationDataNumber "
        f"TCB Info {v.tcb_info_evaluation_data_number}, QE Identity {v.qe_identity_evaluation_data_number}",
    ]
    lines += [f"  warning: {w}" for w in v.warnings]
    return "\n".join(lines)


@click.command("verify", epilog=EXAMPLES)
@click.argument("quote_file", metavar="QUOTE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--collateral",
    "collateral_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Collateral in dcap-qvl's QuoteCollateralV3 JSON shape.",
)
@click.option("--pccs", metavar="URL", help="Fetch collateral from this PCCS/PCS base URL instead.")
@click.option(
    "--root-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust this root CA (DER or PEM) instead of Intel's production root.",
)
@click.option(
    "--now", "now_text", metavar="TIME", help="Verification time: Unix seconds or ISO-8601 [default: now]."
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy JSON file (keys: mr_enclave, mr_signer, isv_prod_id, min_isv_svn, mr_td, "
    "report_data_prefix, allowed_statuses, allowed_advisory_ids, max_collateral_age_s, "
    "min_tcb_evaluation_data_number, allow_debug, allow_service_td). Options below override it.",
)
@click.option("--mrenclave", help="Expected MRENCLAVE (hex).")
@click.option("--mrsigner", help="Expected MRSIGNER (hex).")
@click.option("--isv-prod-id", type=int, help="Expected ISVPRODID.")
@click.option("--min-isv-svn", type=int, help="Minimum ISVSVN.")
@click.option(
    "--min-tcb-evaluation-data-number",
    "min_tcb_eval",
    type=click.IntRange(min=0),
    metavar="N",
    help="Reject collateral (TCB Info or QE Identity) whose tcbEvaluationDataNumber is below N "
    "(catches a replayed old TCB Info that has not expired yet).",
)
@click.option(
    "--update",
    type=click.Choice(["early", "standard"]),
    help="With --pccs: which TCB baseline to fetch (PCS v4 update=early|standard) [default: the PCCS's].",
)
@click.option("--allow-debug", is_flag=True, help="Accept debug enclaves/TDs (never in production).")
@click.option(
    "--dangerous-skip-crls",
    is_flag=True,
    help="Verify collateral that has no CRLs (no revocation checking at all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def verify(
    quote_file: Path, collateral_file: Path | None, pccs: str | None, root_ca: Path | None,
    now_text: str | None, policy_file: Path | None, mrenclave: str | None, mrsigner: str | None,
    isv_prod_id: int | None, min_isv_svn: int | None, min_tcb_eval: int | None, update: str | None,
    allow_debug: bool, dangerous_skip_crls: bool, as_json: bool,
) -> None:  # fmt: skip
    """Verify a DCAP quote (SGX v3/v4/v5, TDX v4/v5) with Intel's TCB rules and a policy.

    Checks the quote format (as Intel QVL's Quote::validate), the PCK chain to the pinned root,
    both CRLs, the TCB Info and QE Identity signatures and windows, the QE report, the quote
    signature and the TCB level; then applies the policy and reports every violation (debug
    enclaves and OutOfDate/Revoked platforms are rejected by default).
    """
    if (collateral_file is None) == (pccs is None):
        _input_error(as_json, "usage", "give exactly one of --collateral FILE or --pccs URL")
    if update is not None and pccs is None:
        _input_error(as_json, "usage", "--update picks what --pccs fetches; it needs --pccs URL")
    try:
        now = parse_now(now_text)
        quote_bytes = quote_file.read_bytes()
        quote = Quote.from_bytes(quote_bytes)
        root = TrustedRoot.load(root_ca.read_bytes()) if root_ca is not None else None
        overrides = {"mr_enclave": mrenclave, "mr_signer": mrsigner, "isv_prod_id": isv_prod_id,
                     "min_isv_svn": min_isv_svn, "min_tcb_evaluation_data_number": min_tcb_eval,
                     "allow_debug": allow_debug}  # fmt: skip
        policy = _policy(policy_file, overrides)
        collateral: Collateral
        if collateral_file is not None:
            collateral = load_dcap_qvl_json(collateral_file.read_bytes())
        else:
            from ..verify.fetch import CollateralFetcher, urllib_getter

            collateral = CollateralFetcher(str(pccs), urllib_getter(), update=update).fetch(quote)
        collateral.tcb_info_model  # noqa: B018  (collateral that does not parse is bad input)
        collateral.qe_identity_model  # noqa: B018
    except click.BadParameter as exc:
        _input_error(as_json, "usage", exc.format_message())
    except OSError as exc:
        _input_error(as_json, "unreadable-file", str(exc))
    except ParseError as exc:
        _input_error(as_json, "not-a-quote", str(exc))
    except (CollateralError, ConfigError) as exc:
        _input_error(as_json, "bad-collateral-or-policy", str(exc))
    verifier = Verifier(root, policy=policy, dangerous_skip_crls=dangerous_skip_crls, cache_size=0)
    try:
        verdict = verifier.verify(quote, collateral, now)
    except VerificationError as exc:
        obj = failure_dict(exc, quote.body)
        _finish(as_json, obj, 1, f"rejected at step {exc.step} ({obj['error']['step']}): {exc.reason}"
                + (f": {exc.detail}" if exc.detail else ""))  # fmt: skip
    except CollateralError as exc:
        _input_error(as_json, "bad-collateral-or-policy", str(exc))
    if verdict.violations:
        lines = [
            f"rejected: {len(verdict.violations)} policy violation(s); TCB status {verdict.status.value}"
        ]
        lines += [
            f"  {r.step}: {r.reason}" + (f": {r.detail}" if r.detail else "") for r in verdict.violations
        ]
        _finish(as_json, verdict.to_dict(), 1, "\n".join(lines))
    _finish(as_json, verdict.to_dict(), 0, "" if as_json else _human(verdict))
