"""The attestation service without HTTP: request -> verified quote -> policy -> signed token.

Steps for one request (:meth:`AttestationService.attest`):

1. parse the body (:mod:`.request`) and the quote (:class:`~sgx_quote_helper.abi.quote.Quote`);
   the route must match the TEE (SGX for SgxEnclave / OpenEnclave, TDX for TdxVm);
2. collateral for the quote (:mod:`.collateral`; fetched by the caller when not cached);
3. the DCAP verifier with the root the service was started with (the client cannot choose it);
4. MAA's runtime / init-time data binding checks (:func:`.claims.check_bound_data`);
5. the claims (:mod:`.claims`), then the policy in force for the route (or the request's draft);
6. a token: RS256 with the active key, or, for a draft policy, unsecured (``alg: none``) as MAA
   answers drafts, so that no client-written policy yields a signed token.

Time and randomness are parameters (``now``, ``random``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..abi.quote import Quote
from ..errors import (
    AttestationError,
    CollateralError,
    ConfigError,
    ParseError,
    PolicyError,
    VerificationError,
)
from ..verify.collateral import Collateral
from ..verify.policy import Policy as VerifyPolicy
from ..verify.status import TcbStatus
from ..verify.step import Step
from ..verify.verdict import Verdict
from ..verify.verifier import Verifier
from . import claims as cl
from . import keys as kd
from . import policy as mp
from . import token as tk
from .request import AttestRequest, Route, parse_request

ATTESTATION_TYPES: tuple[Route, ...] = ("SgxEnclave", "OpenEnclave", "TdxVm")

#: the verifier's policy when an MAA policy decides: authenticity only, the MAA policy does the rest
AUTHENTICITY_ONLY = VerifyPolicy(
    allowed_statuses=frozenset(TcbStatus), allow_debug=True, allow_service_td=True
)

_SGX_ISSUANCE = """\
    c:[type=="x-ms-sgx-is-debuggable"] => issue(type="is-debuggable", value=c.value);
    c:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);
    c:[type=="x-ms-sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);
    c:[type=="x-ms-sgx-product-id"] => issue(type="product-id", value=c.value);
    c:[type=="x-ms-sgx-svn"] => issue(type="svn", value=c.value);
    c:[type=="x-ms-attestation-type"] => issue(type="tee", value=c.value);
"""

#: default SGX policy: no debug enclaves, UpToDate only (fail closed); MAA's legacy claims issued
DEFAULT_SGX_POLICY = f"""\
version= 1.2;
authorizationrules
{{
    [type=="x-ms-sgx-is-debuggable", value==true] => deny();
    [type=="x-sgxqh-tcb-status", value=="UpToDate"] => permit();
}};
issuancerules
{{
{_SGX_ISSUANCE}}};
"""

#: default TDX policy: no debug TDs, UpToDate only
DEFAULT_TDX_POLICY = """\
version= 1.2;
authorizationrules
{
    [type=="tdx_td_attributes_debug", value==true] => deny();
    [type=="attester_tcb_status", value=="UpToDate"] => permit();
};
issuancerules
{
};
"""


@dataclass(frozen=True)
class AttestationPolicy:
    """A policy in force: its text, and either an MAA policy or a ``verify --policy`` JSON policy."""

    text: str
    maa: mp.Policy | None = None
    verify: VerifyPolicy | None = None

    @functools.cached_property
    def hash(self) -> str:
        return mp.policy_hash(self.text)

    @property
    def format(self) -> str:
        return "maa" if self.maa is not None else "verify-json"


def load_policy(text: str) -> AttestationPolicy:
    """MAA policy text, or (text starting with ``{``) a ``verify --policy`` JSON policy."""
    if text.lstrip().startswith("{"):
        return AttestationPolicy(text, verify=VerifyPolicy.from_json(text))
    return AttestationPolicy(text, maa=mp.parse(text))


def default_policies() -> dict[Route, AttestationPolicy]:
    sgx = load_policy(DEFAULT_SGX_POLICY)
    return {"SgxEnclave": sgx, "OpenEnclave": sgx, "TdxVm": load_policy(DEFAULT_TDX_POLICY)}


@dataclass
class Outcome:
    """What one attestation produced (for the HTTP layer's metrics and logs)."""

    token: str
    tee: str
    tcb_status: str
    draft: bool
    claims: dict[str, Any] = field(default_factory=dict)


class AttestationService:
    """Verifies quotes and issues MAA-shaped tokens (see the module doc)."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        keys: kd.KeyDir,
        issuer: str,
        lifetime: dt.timedelta = dt.timedelta(hours=8),
        policies: dict[Route, AttestationPolicy] | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if lifetime <= dt.timedelta(0):
            raise ConfigError("the token lifetime must be positive")
        self.verifier = verifier
        self.keydir = keys
        self.issuer = issuer.rstrip("/")
        self.lifetime = lifetime
        self.policies: dict[Route, AttestationPolicy] = default_policies() | (policies or {})
        self.random = random
        self._keys: list[kd.SigningKey] = []
        self._fingerprint: tuple[object, ...] = ()
        #: the last signer made: (key number, kid, issuer) -> its Signer (header encoded once)
        self._signer: tuple[tuple[int, str, str], tk.Signer] | None = None

    # -- keys ---------------------------------------------------------------------------------
    def load_keys(self, now: dt.datetime, *, create: bool = True) -> list[kd.SigningKey]:
        """(Re)load the key directory, generating the first key if ``create`` and none exists."""
        self._keys = self.keydir.ensure(now) if create else self.keydir.load()
        if not self._keys:
            raise ConfigError(f"key directory {self.keydir.path} has no signing keys")
        self._fingerprint = self.keydir.fingerprint()
        return self._keys

    def reload_keys_if_changed(self, now: dt.datetime) -> bool:
        """Reload after a rotation (a new Secret version); a broken directory keeps the old keys."""
        if self.keydir.fingerprint() == self._fingerprint:
            return False
        try:
            keys = self.keydir.load()
        except ConfigError:
            return False
        if not keys:
            return False
        self._keys, self._fingerprint = keys, self.keydir.fingerprint()
        return True

    def jwks(self, now: dt.datetime) -> dict[str, Any]:
        """``GET /certs``: the active key and every older key a live token may need."""
        return {"keys": [k.jwk() for k in kd.published(self._keys, now, self.lifetime)]}

    def openid_configuration(self) -> dict[str, Any]:
        """``GET /.well-known/openid-configuration`` (MAA's members)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token", "none"],
            "revocation_endpoint": f"{self.issuer}/revocations",
            "claims_supported": sorted(CLAIMS_SUPPORTED),
        }

    def _sign(self, body: dict[str, Any], now: dt.datetime) -> str:
        key = kd.active(self._keys, now)
        which = (key.number, key.kid, self.issuer)
        cached = self._signer
        if cached is None or cached[0] != which or cached[1].key is not key.key:
            signer = tk.Signer({"jku": f"{self.issuer}/certs", "kid": key.kid, "typ": "JWT"}, key.key)
            self._signer = cached = (which, signer)
        return cached[1].sign(body)

    def _times(self, now: dt.datetime) -> dict[str, Any]:
        t = int(now.timestamp())
        return {"exp": t + int(self.lifetime.total_seconds()), "iat": t, "iss": self.issuer, "nbf": t}

    # -- policies -------------------------------------------------------------------------------
    def policy_token(self, attestation_type: str, now: dt.datetime) -> str:
        """``GET /policies/{type}``: a signed token whose ``x-ms-policy`` is the stored policy as an
        unsecured JWS ``{"AttestationPolicy": BASE64URL(text)}`` (MAA's answer for unsigned policies)."""
        route = _route(attestation_type)
        pol = self.policies[route]
        stored = tk.unsecured({"AttestationPolicy": mp.b64url(pol.text.encode("utf-8"))})
        return self._sign({**self._times(now), "x-ms-policy": stored}, now)

    # -- attestation ----------------------------------------------------------------------------
    def parse(self, route: Route, body: bytes) -> tuple[AttestRequest, Quote]:
        """Step 1: the request and its quote (AttestationError for anything malformed)."""
        req = parse_request(route, body)
        try:
            quote = Quote.from_bytes(req.quote)
        except ParseError as exc:
            raise AttestationError("InvalidQuote", f"the quote does not parse: {exc}") from None
        if quote.is_tdx != (route == "TdxVm"):
            tee = "TDX" if quote.is_tdx else "SGX"
            raise AttestationError("InvalidParameter", f"/attest/{route} does not take {tee} quotes")
        return req, quote

    def attest(self, req: AttestRequest, quote: Quote, collateral: Collateral, now: dt.datetime) -> Outcome:
        """Steps 3-6 (see the module doc)."""
        if req.draft_policy is not None:
            try:
                pol = load_policy(req.draft_policy)
            except (PolicyError, ConfigError) as exc:
                raise AttestationError("InvalidParameter", f"draftPolicyForAttestation: {exc}") from None
        else:
            pol = self.policies[req.route]
        verdict = self._verify(quote, collateral, now, pol)
        cl.check_bound_data(req, verdict.body)
        made = (
            cl.tdx_claims(req, verdict, collateral)
            if quote.is_tdx
            else cl.sgx_claims(req, verdict, collateral)
        )
        issued: dict[str, Any] = {}
        if pol.maa is not None:
            try:
                decision = pol.maa.evaluate(cl.policy_claims(made, pol.maa.claim_types))
            except PolicyError as exc:
                raise AttestationError("PolicyEvaluationError", str(exc)) from None
            if not decision.permitted:
                raise AttestationError(
                    "PolicyEvaluationError", f"the policy did not authorize this quote: {decision.reason}"
                )
            issued = decision.issued_claims()
            issued |= {c.type: c.value for c in decision.properties}
        elif verdict.violations:
            every = "; ".join(
                f"{r.step}: {r.reason}" + (f" ({r.detail})" if r.detail else "") for r in verdict.violations
            )
            raise AttestationError("PolicyEvaluationError", f"the policy rejected this quote: {every}")
        body: dict[str, Any] = {**issued, **made, **self._times(now), "jti": self.random(32).hex()}
        if req.nonce is not None:
            body["nonce"] = req.nonce
        body["x-ms-policy-hash"] = pol.hash  # the service's claims always win over issued ones
        token = tk.unsecured(body) if req.draft_policy is not None else self._sign(body, now)
        return Outcome(token, verdict.tee, verdict.status.value, req.draft_policy is not None, body)

    def _verify(
        self, quote: Quote, collateral: Collateral, now: dt.datetime, pol: AttestationPolicy
    ) -> Verdict:
        try:
            return self.verifier.verify(quote, collateral, now, policy=pol.verify or AUTHENTICITY_ONLY)
        except VerificationError as exc:
            try:
                label = Step(exc.step).label
            except ValueError:
                label = str(exc.step)
            raise AttestationError(
                "InvalidQuote", f"quote verification failed at step {exc.step} ({label}): {exc.reason}"
            ) from None
        except CollateralError as exc:
            raise AttestationError("CollateralUnavailable", f"unusable collateral: {exc}", 503) from None


def _route(attestation_type: str) -> Route:
    for r in ATTESTATION_TYPES:
        if r.lower() == attestation_type.lower():
            return r
    raise AttestationError(
        "InvalidAttestationType",
        f"unknown attestation type {attestation_type[:40]!r}; known: {', '.join(ATTESTATION_TYPES)}",
        404,
    )


CLAIMS_SUPPORTED = {
    "iss", "iat", "exp", "nbf", "jti", "nonce", "x-ms-ver", "x-ms-attestation-type", "x-ms-policy-hash",
    "x-ms-sgx-is-debuggable", "x-ms-sgx-mrenclave", "x-ms-sgx-mrsigner", "x-ms-sgx-product-id",
    "x-ms-sgx-svn", "x-ms-sgx-ehd", "x-ms-sgx-collateral", "x-ms-sgx-config-id", "x-ms-sgx-config-svn",
    "x-ms-sgx-isv-extended-product-id", "x-ms-sgx-isv-family-id", "x-ms-runtime", "x-ms-inittime",
    "is-debuggable", "sgx-mrsigner", "sgx-mrenclave", "product-id", "svn", "tee",
    "eat_profile", "dbgstat", "intuse", "attester_tcb_status", "tdx_mrsignerseam", "tdx_mrseam",
    "tdx_mrtd", "tdx_rtmr0", "tdx_rtmr1", "tdx_rtmr2", "tdx_rtmr3", "tdx_mrconfigid", "tdx_mrowner",
    "tdx_mrownerconfig", "tdx_report_data", "tdx_seam_attributes", "tdx_tee_tcb_svn", "tdx_xfam",
    "tdx_seamsvn", "tdx_td_attributes", "tdx_td_attributes_debug", "tdx_td_attributes_key_locker",
    "tdx_td_attributes_perfmon", "tdx_td_attributes_protection_keys", "tdx_td_attributes_septve_disable",
    "x-sgxqh-tcb-status", "x-sgxqh-platform-tcb-status", "x-sgxqh-qe-tcb-status", "x-sgxqh-advisory-ids",
    "x-sgxqh-tcb-evaluation-data-number", "x-sgxqh-tcb-info-evaluation-data-number",
    "x-sgxqh-qe-identity-evaluation-data-number", "x-sgxqh-tcb-date", "x-sgxqh-fmspc",
}  # fmt: skip


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


__all__ = [
    "ATTESTATION_TYPES",
    "AUTHENTICITY_ONLY",
    "DEFAULT_SGX_POLICY",
    "DEFAULT_TDX_POLICY",
    "AttestationPolicy",
    "AttestationService",
    "Outcome",
    "default_policies",
    "load_policy",
]
