"""MAA policy text: every rule form of Microsoft's published default and sample policies parses and
evaluates as documented; anything else is an error with its line and column; MAA's policy hash."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sgx_quote_helper.attest.policy import MAX_STEPS, Claim, parse, policy_hash
from sgx_quote_helper.attest.service import DEFAULT_SGX_POLICY, DEFAULT_TDX_POLICY
from sgx_quote_helper.errors import PolicyError

# learn.microsoft.com/azure/attestation/policy-examples: the default SGX policy (version 1.0, with
# the legacy "$" claim names), after replacing the page's typographic quotes with plain ones
MS_DEFAULT_1_0 = """Version= 1.0;
authorizationrules
{
\tc:[type=="$is-debuggable"] => permit();
};
issuancerules
{
\tc:[type=="$is-debuggable"] => issue(type="is-debuggable", value=c.value);
\tc:[type=="$sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);
\tc:[type=="$sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);
\tc:[type=="$product-id"] => issue(type="product-id", value=c.value);
\tc:[type=="$svn"] => issue(type="svn", value=c.value);
\tc:[type=="$tee"] => issue(type="tee", value=c.value);
};
"""

# the default policy version 1.1 (custom TCB baseline article; configurationrules + issueproperty)
MS_DEFAULT_1_1 = """version= 1.1;
configurationrules{
\t=> issueproperty(type="x-ms-sgx-tcbidentifier", value="azuredefault");
};
authorizationrules{
\t=> permit();
};
issuancerules{
\tc:[type=="x-ms-sgx-is-debuggable"] => issue(type="is-debuggable", value=c.value);
\tc:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);
\tc:[type=="x-ms-sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);
\tc:[type=="x-ms-sgx-product-id"] => issue(type="product-id", value=c.value);
\tc:[type=="x-ms-sgx-svn"] => issue(type="svn", value=c.value);
\tc:[type=="x-ms-attestation-type"] => issue(type="tee", value=c.value);
};
"""

# claim-rule-grammar: identifiers referring to each other, issuer conditions, claim= issuance
MS_GRAMMAR = """version=1.0;
authorizationrules {
  [type=="x-ms-sgx-mrenclave", value=="aa"] => permit();
};
issuancerules {
  F1:[type=="OSName", issuer=="CustomClaim"] && [type=="OSName", issuer=="AttestationService", value==F1.value]
    => issue(type="report_validity_in_minutes", value=1440);
  F1:[type=="OSName", issuer=="CustomClaim"] && C2:[type=="OSName", issuer=="AttestationService", value==F1.value]
    => issue(claim=C2);
};
"""


def sgx_claims(debug: bool = False, svn: int = 3, mrenclave: str = "aa") -> list[Claim]:
    base = {
        "x-ms-attestation-type": "sgx",
        "x-ms-sgx-is-debuggable": debug,
        "x-ms-sgx-mrenclave": mrenclave,
        "x-ms-sgx-mrsigner": "bb",
        "x-ms-sgx-product-id": 4660,
        "x-ms-sgx-svn": svn,
        "x-sgxqh-tcb-status": "UpToDate",
    }
    legacy = {"x-ms-sgx-is-debuggable": "$is-debuggable", "x-ms-sgx-mrsigner": "$sgx-mrsigner",
              "x-ms-sgx-mrenclave": "$sgx-mrenclave", "x-ms-sgx-product-id": "$product-id",
              "x-ms-sgx-svn": "$svn", "x-ms-attestation-type": "$tee"}  # fmt: skip
    out = [Claim(k, v) for k, v in base.items()]
    out += [Claim(legacy[k], v) for k, v in base.items() if k in legacy]
    return out


def test_microsoft_default_policy_1_0() -> None:
    pol = parse(MS_DEFAULT_1_0)
    assert pol.version == "1.0" and len(pol.authorization) == 1 and len(pol.issuance) == 6
    d = pol.evaluate(sgx_claims(debug=True))
    assert d.permitted  # MAA's default permits whenever $is-debuggable exists, debug or not
    assert d.issued_claims() == {"is-debuggable": True, "sgx-mrsigner": "bb", "sgx-mrenclave": "aa",
                                 "product-id": 4660, "svn": 3, "tee": "sgx"}  # fmt: skip
    assert all(c.issuer == "AttestationPolicy" for c in d.issued)


def test_microsoft_default_policy_1_1_configuration_rules() -> None:
    pol = parse(MS_DEFAULT_1_1)
    d = pol.evaluate(sgx_claims())
    assert d.permitted
    assert [(p.type, p.value) for p in d.properties] == [("x-ms-sgx-tcbidentifier", "azuredefault")]
    assert d.issued_claims()["tee"] == "sgx"


def test_grammar_identifiers_issuer_and_claim_issuance() -> None:
    pol = parse(MS_GRAMMAR)
    claims = [*sgx_claims(), Claim("OSName", "Windows", "CustomClaim"), Claim("OSName", "Windows")]
    d = pol.evaluate(claims)
    assert d.permitted
    assert d.issued_claims() == {"report_validity_in_minutes": 1440, "OSName": "Windows"}
    assert d.issued[1].issuer == "AttestationPolicy"
    other = [*sgx_claims(), Claim("OSName", "Windows", "CustomClaim"), Claim("OSName", "Linux")]
    assert pol.evaluate(other).issued_claims() == {}


@pytest.mark.parametrize(
    ("condition", "svn", "expected"),
    [
        ("value==3", 3, True), ("value!=3", 3, False), ("value<3", 2, True), ("value<3", 3, False),
        ("value<=3", 3, True), ("value>3", 4, True), ("value>3", 3, False), ("value>=3", 3, True),
        ('value=="3"', 3, False),  # a string never equals an integer
    ],
)  # fmt: skip
def test_integer_comparisons(condition: str, svn: int, expected: bool) -> None:
    pol = parse(
        f'version=1.0; authorizationrules {{ [type=="x-ms-sgx-svn", {condition}] => permit(); }}; issuancerules {{ }};'
    )
    assert pol.evaluate(sgx_claims(svn=svn)).permitted is expected


def test_conjunction_deny_and_boolean_values() -> None:
    text = """version=1.2;
    authorizationrules {
        [type=="x-ms-sgx-is-debuggable", value==true] => deny();
        [type=="x-ms-sgx-mrenclave", value=="aa"] && [type=="x-ms-sgx-svn", value>=2] => permit();
    };
    issuancerules { };"""
    pol = parse(text)
    assert pol.evaluate(sgx_claims()).permitted
    denied = pol.evaluate(sgx_claims(debug=True))
    assert not denied.permitted and "line 3" in denied.reason
    assert not pol.evaluate(sgx_claims(svn=1)).permitted
    assert not pol.evaluate(sgx_claims(mrenclave="cc")).permitted


def test_no_permit_is_a_denial_and_add_feeds_later_rules() -> None:
    assert (
        not parse("version=1.0; authorizationrules { }; issuancerules { };").evaluate(sgx_claims()).permitted
    )
    text = """version=1.0;
    authorizationrules {
        c:[type=="x-ms-sgx-mrsigner"] => add(type="trusted-signer", value=c.value);
        [type=="trusted-signer", value=="bb"] => permit();
    };
    issuancerules { c:[type=="trusted-signer"] => issue(type="signer", value=c.value); };"""
    d = parse(text).evaluate(sgx_claims())
    assert d.permitted and d.issued_claims() == {"signer": "bb"}  # add() is not issued itself


def test_issue_of_one_type_twice_is_a_list() -> None:
    text = 'version=1.0; authorizationrules { => permit(); }; issuancerules { c:[type=="a"] => issue(type="b", value=c.value); };'
    d = parse(text).evaluate([Claim("a", "x"), Claim("a", "y")])
    assert d.issued_claims() == {"b": ["x", "y"]}


def test_the_service_defaults_fail_closed() -> None:
    sgx = parse(DEFAULT_SGX_POLICY)
    assert sgx.evaluate(sgx_claims()).permitted
    assert not sgx.evaluate(sgx_claims(debug=True)).permitted
    out_of_date = [
        c if c.type != "x-sgxqh-tcb-status" else Claim(c.type, "SWHardeningNeeded") for c in sgx_claims()
    ]
    assert not sgx.evaluate(out_of_date).permitted
    assert not sgx.evaluate([c for c in sgx_claims() if c.type != "x-sgxqh-tcb-status"]).permitted
    tdx = parse(DEFAULT_TDX_POLICY)
    ok = [Claim("tdx_td_attributes_debug", False), Claim("attester_tcb_status", "UpToDate")]
    assert tdx.evaluate(ok).permitted
    assert not tdx.evaluate([Claim("tdx_td_attributes_debug", True), ok[1]]).permitted


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("versio= 1.0;", 1, 1, "expected 'version'"),
        ("version= 2.0;", 1, 10, "policy version"),
        ("version= 1.0;\nauthorizationrules\n{\n  [type=”x”] => permit();\n};", 4, 9, "typographic quote"),
        ("version=1.0;\nauthorizationrules { => permit() };\nissuancerules { };", 2, 34, "expected ';'"),
        ("version=1.0;\nauthorizationrules { => issue(type=\"a\", value=1); };\nissuancerules { };", 2, 25, "not allowed in authorizationrules"),
        ("version=1.0;\nauthorizationrules { => permit(); };\nissuancerules { => permit(); };", 3, 20, "not allowed in issuancerules"),
        ("version=1.0;\nauthorizationrules { [type==\"a\", value<\"x\"] => permit(); };", 2, 39, "integer"),
        ("version=1.0;\nauthorizationrules { [type==\"a\", value==c.value] => permit(); };", 2, 41, "unknown identifier"),
        ("version=1.0;\nauthorizationrules { => permit(); };", 2, 37, "issuancerules"),
        ("version=1.0;\nissuancerules { };\nauthorizationrules { };", 3, 1, "out of order"),
        ("version=1.0;\nconfigurationrules { };\nauthorizationrules { };\nissuancerules { };", 2, 1, "1.1 or later"),
        ('version=1.0;\nauthorizationrules { => permit(); };\nissuancerules { => issue(type="x-ms-sgx-mrenclave", value="00"); };', 3, 63, "service's own"),
        ('version=1.0;\nauthorizationrules { [type=="unterminated] => permit(); };', 2, 29, "unterminated string"),
        ("version=1.0;\nauthorizationrules { [type==\"a\"] => permit(); }; @", 2, 50, "unexpected character"),
    ],
)  # fmt: skip
def test_errors_name_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse(text)
    assert (exc.value.line, exc.value.column) == (line, column), str(exc.value)
    assert words in str(exc.value)
    assert str(exc.value).startswith(f"policy line {line}, column {column}: ")


def test_evaluation_is_bounded() -> None:
    # every condition matches every claim: 40^4 combinations must stop at the step budget
    cond = " && ".join(f'c{i}:[type!="nothing"]' for i in range(4))
    text = (
        f'version=1.0; authorizationrules {{ {cond} && [type=="none"] => permit(); }}; issuancerules {{ }};'
    )
    claims = [Claim(f"t{i}", i) for i in range(40)]
    with pytest.raises(PolicyError) as exc:
        parse(text).evaluate(claims)
    assert str(MAX_STEPS) in str(exc.value)


def test_policy_hash_is_maas_formula() -> None:
    text = MS_DEFAULT_1_0
    inner = base64.urlsafe_b64encode(text.encode()).rstrip(b"=")
    expected = base64.urlsafe_b64encode(hashlib.sha256(inner).digest()).rstrip(b"=").decode()
    assert policy_hash(text) == expected == parse(text).hash
    assert policy_hash(text + " ") != expected


def test_only_known_properties() -> None:
    text = 'version=1.1; configurationrules { => issueproperty(type="require_valid_aik_cert", value=false); }; authorizationrules { => permit(); }; issuancerules { };'
    with pytest.raises(PolicyError, match="unsupported property"):
        parse(text)
