"""The attestation service's fast paths give the answers of the plain ones: a policy evaluated on
only the claim types it names decides and issues what it does on every claim; the one-condition
rule path matches what the general matcher matches; base64url decoding accepts and refuses what
the regex-checked decoder did; the token response is ``web.json_response``'s bytes; a Signer's
token is the one :func:`token.sign` makes; the labelled metrics children are prometheus's own."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.attest import claims as cl
from sgx_quote_helper.attest import policy as mp
from sgx_quote_helper.attest import token as tk
from sgx_quote_helper.attest.app import token_response
from sgx_quote_helper.attest.metrics import Metrics
from sgx_quote_helper.attest.policy import MAX_MATCHES, Claim, parse
from sgx_quote_helper.attest.request import b64url_decode
from sgx_quote_helper.attest.service import DEFAULT_SGX_POLICY, DEFAULT_TDX_POLICY
from sgx_quote_helper.errors import AttestationError, PolicyError

from .attest_helpers import sim_world
from .test_attest_policy import MS_DEFAULT_1_0, MS_DEFAULT_1_1, MS_GRAMMAR

# the service's claims of an SGX quote, as claims.sgx_claims makes them (objects and lists included)
SGX_MADE = {
    "x-ms-attestation-type": "sgx",
    "x-ms-ver": "1.0",
    "x-ms-sgx-is-debuggable": False,
    "x-ms-sgx-mrenclave": "aa" * 32,
    "x-ms-sgx-mrsigner": "bb" * 32,
    "x-ms-sgx-product-id": 4660,
    "x-ms-sgx-svn": 3,
    "x-ms-sgx-ehd": "",
    "x-ms-sgx-collateral": {"quotehash": "00"},
    "x-ms-runtime": {"keys": [1, 2]},
    "x-sgxqh-tcb-status": "UpToDate",
    "x-sgxqh-advisory-ids": ["INTEL-SA-00615", "INTEL-SA-00657"],
    "x-sgxqh-tcb-evaluation-data-number": 17,
}

POLICIES = [
    DEFAULT_SGX_POLICY,
    DEFAULT_TDX_POLICY,
    MS_DEFAULT_1_0,
    MS_DEFAULT_1_1,
    MS_GRAMMAR,
    # a condition without a type literal: every claim is a candidate (no filtering)
    'version=1.0; authorizationrules { [value=="UpToDate"] => permit(); }; issuancerules { '
    'c:[issuer=="AttestationService", value==3] => issue(type="three", value=c.type); };',
    # list-valued claims, a type literal that is not the first test, issue(claim=), add()
    'version=1.2; authorizationrules { c:[value!="x", type=="x-sgxqh-advisory-ids"] => permit(); '
    '[type=="x-ms-sgx-svn", value<2] => deny(); }; issuancerules { '
    'c:[type=="x-sgxqh-advisory-ids"] => issue(type="adv", value=c.value); '
    'c:[type=="$svn", value>=3] => add(type="svn-ok", value=true); '
    'c:[type=="svn-ok"] && d:[type=="x-ms-sgx-mrsigner"] => issue(type="signer-ok", value=d.value); '
    'c:[type=="x-ms-sgx-product-id"] => issue(claim=c); };',
]


def _decide(pol: mp.Policy, claims: list[Claim]) -> tuple[object, ...]:
    try:
        d = pol.evaluate(claims)
    except PolicyError as exc:
        return ("error", str(exc))
    return (d.permitted, d.reason, d.issued, d.properties, d.issued_claims())


@pytest.mark.parametrize("text", POLICIES)
@pytest.mark.parametrize(
    "change",
    [{}, {"x-ms-sgx-is-debuggable": True}, {"x-sgxqh-tcb-status": "OutOfDate"}, {"x-ms-sgx-svn": 1}],
)
def test_evaluating_only_the_named_claim_types_decides_the_same(text: str, change: dict[str, object]) -> None:
    pol = parse(text)
    made = SGX_MADE | change
    full = _decide(pol, cl.policy_claims(made))
    assert _decide(pol, cl.policy_claims(made, pol.claim_types)) == full
    if pol.claim_types is not None:
        assert len(cl.policy_claims(made, pol.claim_types)) < len(cl.policy_claims(made))


def test_claim_types_are_none_when_a_condition_names_no_type() -> None:
    assert parse(POLICIES[5]).claim_types is None
    assert parse(DEFAULT_TDX_POLICY).claim_types == {"tdx_td_attributes_debug", "attester_tcb_status"}
    assert "$is-debuggable" in (parse(MS_DEFAULT_1_0).claim_types or ())


def _general(pol: mp.Policy, claims: list[Claim]) -> list[list[dict[str, Claim]]]:
    """Each rule's matches by the general (recursive) matcher, over the incoming claims only."""
    by_type: dict[str, list[Claim]] = {}
    for c in claims:
        by_type.setdefault(c.type, []).append(c)
    out = []
    for rule in (*pol.configuration, *pol.authorization, *pol.issuance):
        gen = mp._matches(rule, claims, by_type, [mp.MAX_STEPS])
        out.append(list(itertools.islice(gen, MAX_MATCHES + 1)))
    return out


def _single(pol: mp.Policy, claims: list[Claim]) -> list[list[dict[str, Claim]]]:
    by_type: dict[str, list[Claim]] = {}
    for c in claims:
        by_type.setdefault(c.type, []).append(c)
    out = []
    for rule in (*pol.configuration, *pol.authorization, *pol.issuance):
        if len(rule.conditions) == 1:
            out.append(mp._single_matches(rule, claims, by_type, [mp.MAX_STEPS]))
        else:
            out.append(
                list(itertools.islice(mp._matches(rule, claims, by_type, [mp.MAX_STEPS]), MAX_MATCHES + 1))
            )
    return out


_values = st.one_of(st.booleans(), st.integers(-3, 5), st.sampled_from(["UpToDate", "aa", "x", ""]))
_types = st.sampled_from(
    ["x-ms-sgx-svn", "x-sgxqh-advisory-ids", "$svn", "OSName", "x-ms-sgx-product-id", "t"]
)
_issuers = st.sampled_from(["AttestationService", "CustomClaim"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.builds(Claim, _types, _values, _issuers), max_size=12), st.sampled_from(POLICIES))
def test_the_one_condition_path_matches_what_the_general_matcher_matches(
    claims: list[Claim], text: str
) -> None:
    pol = parse(text)
    assert _single(pol, claims) == _general(pol, claims)


def test_the_one_condition_path_keeps_the_match_limit_and_the_step_budget() -> None:
    many = [Claim("t", i) for i in range(MAX_MATCHES + 5)]
    pol = parse('version=1.0; authorizationrules { c:[type=="t"] => permit(); }; issuancerules { };')
    with pytest.raises(PolicyError, match="more than"):
        pol.evaluate(many)
    budget = [3]
    with pytest.raises(PolicyError, match="claim comparisons"):
        mp._single_matches(pol.authorization[0], many, {"t": many}, budget)


# ---------------------------------------------------------------------------------- base64url

_OLD = re.compile(r"[A-Za-z0-9_\-]*={0,2}")


def _reference(value: str) -> bytes | None:
    """The decoder before the fast path: regex, then urlsafe_b64decode (None = refused)."""
    if not _OLD.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except ValueError:
        return None


def _ours(value: str) -> bytes | None:
    try:
        return b64url_decode(value, "quote")
    except AttestationError as exc:
        assert exc.status == 400 and exc.code == "InvalidParameter"
        return None


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet="AZaz09-_+/=\n \u00e9\x00", max_size=12),
))  # fmt: skip
def test_base64url_decoding_accepts_and_refuses_what_the_regex_decoder_did(value: str) -> None:
    assert _ours(value) == _reference(value)


@pytest.mark.parametrize("value", ["a", "ab=c", "=ab", "ab===", "ab+/", "ab\n", "\u00e9", "ab cd"])
def test_bad_base64url_is_refused(value: str) -> None:
    assert _ours(value) is None
    with pytest.raises(AttestationError, match="must be a base64url string"):
        b64url_decode(42, "quote")


# --------------------------------------------------------------------------- token and response


def test_the_token_response_is_json_responses_bytes() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ.c2ln-_"
    ours, theirs = token_response(token), web.json_response({"token": token})
    assert ours.body == theirs.body == json.dumps({"token": token}).encode()
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json; charset=utf-8"
    assert (ours.status, ours.content_type, ours.charset) == (
        theirs.status,
        theirs.content_type,
        theirs.charset,
    )


def test_a_signer_makes_the_token_sign_makes(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = {"jku": "https://x/certs", "kid": "k1", "typ": "JWT"}
    claims = {"iss": "https://x", "n": 1, "nested": {"a": [1, "\u00e9"]}}
    signer = tk.Signer(header, key)
    token = signer.sign(claims)
    # RSASSA-PKCS1-v1_5 is deterministic: the same bytes as the one-shot function
    assert token == tk.sign(header, claims, key)
    head, body, _, _ = tk.decode(token)
    assert list(head) == ["alg", "jku", "kid", "typ"] and head["alg"] == "RS256"
    assert body == claims
    assert token.split(".")[1] == mp.b64url(json.dumps(claims, separators=(",", ":")).encode())


def test_cached_metric_children_are_prometheus_children() -> None:
    m = Metrics()
    for _ in range(3):
        m.answered("attest/SgxEnclave", 200, 0.001)
        m.verdict("SgxEnclave", "issued", "UpToDate")
    m.collateral_fetch("ok")
    assert m.requests.labels("attest/SgxEnclave", "200")._value.get() == 3
    assert m.verdicts.labels("SgxEnclave", "issued", "UpToDate")._value.get() == 3
    assert m.collateral_fetches.labels("ok")._value.get() == 1
    text = m.render().decode()
    assert 'attest_request_duration_seconds_count{endpoint="attest/SgxEnclave"} 3.0' in text


def test_the_collateral_hashes_keep_their_sorted_order(tmp_path: Path) -> None:
    world = sim_world(tmp_path / "platform", dt.datetime.now(dt.UTC))
    c = world.collateral
    hashes = cl.collateral_hashes(b"quote", c)
    assert list(hashes) == sorted(hashes)
    assert hashes == {
        "qeidcertshash": hashlib.sha256(c.qe_identity_issuer_chain.encode()).hexdigest(),
        "qeidcrlhash": hashlib.sha256(c.root_ca_crl).hexdigest(),
        "qeidhash": hashlib.sha256(c.qe_identity.encode()).hexdigest(),
        "quotehash": hashlib.sha256(b"quote").hexdigest(),
        "tcbinfocertshash": hashlib.sha256(c.tcb_info_issuer_chain.encode()).hexdigest(),
        "tcbinfocrlhash": hashlib.sha256(c.root_ca_crl).hexdigest(),
        "tcbinfohash": hashlib.sha256(c.tcb_info.encode()).hexdigest(),
    }
