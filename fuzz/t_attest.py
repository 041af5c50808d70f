"""Attestation-service targets: MAA policy text (lexer, parser, evaluator) and MAA request bodies.

Invariants: a policy parses or raises PolicyError (with a line and column inside the text), and a
parsed policy evaluates to a Decision or PolicyError within its step budget, the same way twice;
a request body parses to an AttestRequest or raises AttestationError (400/413 codes), never a
KeyError, TypeError, RecursionError...
"""

from __future__ import annotations

import json
from functools import cache

from hypothesis import strategies as st

from sgx_quote_helper.attest.policy import Claim, parse
from sgx_quote_helper.attest.request import open_enclave_report, parse_request
from sgx_quote_helper.attest.service import DEFAULT_SGX_POLICY, DEFAULT_TDX_POLICY
from sgx_quote_helper.errors import AttestationError, PolicyError

from .seeds import real_files
from .target import Target, ours

CLAIMS = (
    Claim("x-ms-sgx-is-debuggable", False),
    Claim("$is-debuggable", False),
    Claim("x-ms-sgx-mrenclave", "aa" * 32),
    Claim("x-ms-sgx-svn", 3),
    Claim("x-sgxqh-tcb-status", "UpToDate"),
    Claim("x-sgxqh-advisory-ids", "INTEL-SA-00615"),
    Claim("OSName", "Windows", "CustomClaim"),
)

SAMPLE_POLICIES = (
    DEFAULT_SGX_POLICY,
    DEFAULT_TDX_POLICY,
    'version= 1.1;\nconfigurationrules{\n\t=> issueproperty(type="x-ms-sgx-tcbidentifier", value="10");\n};\n'
    "authorizationrules{\n\t=> permit();\n};\nissuancerules{\n"
    '\tc:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);\n};\n',
    'version=1.0; authorizationrules { F1:[type=="OSName", issuer=="CustomClaim"] && '
    '[type=="OSName", value==F1.value] => permit(); [type=="x-ms-sgx-svn", value<2] => deny(); }; '
    'issuancerules { c:[type=="x-ms-sgx-svn"] => issue(claim=c); c:[type!="x"] => add(type="y", value=c.type); };',
)


def check_policy(data: bytes) -> int:
    text = data.decode("utf-8", "replace")
    try:
        pol = parse(text)
    except PolicyError as exc:
        lines = text.split("\n")
        assert 0 <= exc.line <= len(lines), (exc.line, len(lines))
        assert exc.line == 0 or 1 <= exc.column <= len(lines[exc.line - 1]) + 1, (exc.line, exc.column)
        return 1
    first = ours(pol.evaluate, CLAIMS)
    second = ours(pol.evaluate, CLAIMS)
    assert (first is None) == (second is None)
    if first is not None and second is not None:
        assert (first.permitted, first.issued, first.properties) == (
            second.permitted,
            second.issued,
            second.properties,
        )
    return 1


@cache
def policy_seeds() -> tuple[bytes, ...]:
    return tuple(p.encode() for p in SAMPLE_POLICIES)


def _structured_policy() -> st.SearchStrategy[bytes]:
    word = st.sampled_from(["version", "=", "1.0", "1.1", ";", "authorizationrules", "issuancerules",
                            "configurationrules", "{", "}", "[", "]", "(", ")", "c", ":", "type", "value",
                            "issuer", "==", "!=", "<", ">=", '"x-ms-sgx-svn"', "3", "true", "&&", "=>",
                            "permit", "deny", "issue", "add", "issueproperty", "claim", ",", ".", "c.value"])  # fmt: skip
    return st.lists(word, max_size=60).map(lambda ws: " ".join(ws).encode())


MAA_POLICY = Target(
    "maa-policy",
    "attest.policy: MAA policy text lexer, parser and evaluator",
    check_policy,
    policy_seeds,
    max_size=4096,
    extra=_structured_policy,
)

ROUTES = ("SgxEnclave", "OpenEnclave", "TdxVm")


def check_request(data: bytes) -> int:
    """Byte 0 picks the route; the rest is the body."""
    if not data:
        return 1
    route = ROUTES[data[0] % len(ROUTES)]
    try:
        req = parse_request(route, data[1:])  # type: ignore[arg-type]
    except AttestationError as exc:
        assert exc.status in (400, 413) and exc.code and exc.message
        return 1
    assert isinstance(req.quote, bytes)
    return 1


@cache
def request_seeds() -> tuple[bytes, ...]:
    from sgx_quote_helper.attest.policy import b64url

    quotes = real_files("quote.bin")[:2] or (b"\x03\x00" + bytes(60),)
    out = []
    for i, q in enumerate(quotes):
        out.append(bytes([0]) + json.dumps({"quote": b64url(q), "runtimeData": {"data": "eyJhIjoxfQ", "dataType": "JSON"},
                                              "initTimeData": {"data": "AA"}, "nonce": "n"}).encode())  # fmt: skip
        out.append(
            bytes([1])
            + json.dumps(
                {
                    "report": b64url(open_enclave_report(q)),
                    "draftPolicyForAttestation": SAMPLE_POLICIES[i % 4],
                }
            ).encode()
        )
        out.append(bytes([2]) + json.dumps({"quote": b64url(q) + "=="}).encode())
    return tuple(out)


MAA_REQUEST = Target(
    "maa-request",
    "attest.request: MAA attestation request bodies, base64url fields, Open Enclave report headers",
    check_request,
    request_seeds,
    max_size=16384,
)
