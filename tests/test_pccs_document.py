"""pccs.document: upstream answers are accepted only when well-formed (real Intel answers are), and
any bytes or headers either parse or raise CollateralError (hypothesis fuzz, mutations of real
answers included); cache records round-trip."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import CollateralError
from sgx_quote_helper.pccs.document import (
    TCB_CHAIN_V3,
    TCB_CHAIN_V4,
    Document,
    encode_chain,
    upstream_document,
)
from sgx_quote_helper.pccs.resource import Resource, parse_resource

from .conftest import real_dir
from .pccs_fakes import PHALA_FMSPC, phala_collateral


def _resource(path: str, **query: str) -> Resource:
    r = parse_resource(path, list(query.items()))
    assert r is not None
    return r


TCB = _resource("/sgx/certification/v4/tcb", fmspc=PHALA_FMSPC)
TCB_V3 = _resource("/sgx/certification/v3/tcb", fmspc=PHALA_FMSPC)
QE = _resource("/sgx/certification/v4/qe/identity")
CRL = _resource("/sgx/certification/v4/pckcrl", ca="processor", encoding="der")
CRL_HEX = _resource("/sgx/certification/v4/pckcrl", ca="processor")
CRL_PEM = _resource("/sgx/certification/v4/pckcrl", ca="processor", encoding="pem")
ROOT = _resource("/sgx/certification/v4/rootcacrl")
PCK = _resource(
    "/sgx/certification/v4/pckcert", encrypted_ppid="01" * 384, cpusvn="00" * 16, pcesvn="0000", pceid="0000"
)


def _answers() -> dict[str, tuple[Resource, dict[str, str], bytes]]:
    real_dir("phala-sgx-v3-processor")
    c = phala_collateral()
    chain = quote(c["tcb_info_issuer_chain"], safe="")
    leaf = c.get("pck_certificate_chain") or _phala_leaf()
    return {
        "tcb": (
            TCB,
            {"TCB-Info-Issuer-Chain": chain},
            ('{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}').encode(),
        ),
        "qe": (
            QE,
            {"SGX-Enclave-Identity-Issuer-Chain": chain},
            (
                '{"enclaveIdentity":'
                + c["qe_identity"]
                + ',"signature":"'
                + c["qe_identity_signature"]
                + '"}'
            ).encode(),
        ),
        "crl": (
            CRL,
            {"SGX-PCK-CRL-Issuer-Chain": quote(c["pck_crl_issuer_chain"], safe="")},
            bytes.fromhex(c["pck_crl"]),
        ),
        "root": (ROOT, {}, c["root_ca_crl"].encode()),
        "pck": (
            PCK,
            {
                "SGX-PCK-Certificate-Issuer-Chain": quote(c["pck_crl_issuer_chain"], safe=""),
                "SGX-TCBm": "0B0B0202FF01000000000000000000000D00",
                "SGX-FMSPC": PHALA_FMSPC,
                "SGX-PCK-Certificate-CA-Type": "processor",
            },
            leaf,
        ),
    }


def _phala_leaf() -> bytes:
    from sgx_quote_helper.abi.quote import Quote

    chain = Quote.from_bytes((real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes()).pck_chain_pem
    assert chain is not None
    return chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("name", ["tcb", "qe", "crl", "root", "pck"])
def test_real_intel_answers_are_accepted(name: str) -> None:
    resource, headers, body = _answers()[name]
    doc = upstream_document(resource, headers, body)
    assert doc.next_update > datetime(2025, 6, 19, tzinfo=UTC)
    again = Document.from_json(doc.body, doc.to_json())
    assert again == doc


def test_tcb_chain_header_follows_the_api_version() -> None:
    _, headers, body = _answers()["tcb"]
    v3_headers = {TCB_CHAIN_V3: headers[TCB_CHAIN_V4]}
    assert upstream_document(TCB, v3_headers, body).header(TCB_CHAIN_V4) is not None
    assert upstream_document(TCB_V3, headers, body).header(TCB_CHAIN_V3) is not None


def test_crl_encodings_are_normalised() -> None:
    _, headers, der = _answers()["crl"]
    pem = upstream_document(CRL_PEM, headers, der)
    assert pem.body.startswith(b"-----BEGIN X509 CRL-----") and pem.content_type == "application/x-pem-file"
    assert upstream_document(CRL, headers, pem.body).body == der  # PEM from upstream, DER asked
    # no encoding: hex text of the DER, as Intel's PCCS answers it (pckcrlService.js)
    hexed = upstream_document(CRL_HEX, headers, pem.body)
    assert hexed.body == der.hex().encode() and hexed.content_type == "application/x-pem-file"
    root = _answers()["root"]
    assert upstream_document(ROOT, {}, bytes.fromhex(root[2].decode())).body == root[2]  # DER -> hex text


@pytest.mark.parametrize(
    ("name", "headers", "body"),
    [
        ("tcb", {}, None),
        ("tcb", {"TCB-Info-Issuer-Chain": "not a chain"}, None),
        (
            "tcb",
            {"TCB-Info-Issuer-Chain": quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")},
            None,
        ),
        ("tcb", None, b'{"tcbInfo":{},"signature":"00"}'),
        ("tcb", None, b"[]"),
        (
            "qe",
            None,
            b'{"enclaveIdentity":{"id":"QE","issueDate":"x","nextUpdate":"y"},"signature":"'
            + b"00" * 64
            + b'"}',
        ),
        ("crl", None, b"\x30\x03\x02\x01\x00"),
        ("root", None, b"zz"),
        ("pck", {"SGX-TCBm": "00"}, None),
        ("pck", None, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    ],
)
def test_malformed_answers_are_refused(name: str, headers: dict[str, str] | None, body: bytes | None) -> None:
    resource, real_headers, real_body = _answers()[name]
    merged = real_headers if headers is None else {**real_headers, **headers}
    if headers == {}:
        merged = {}
    with pytest.raises(CollateralError):
        upstream_document(resource, merged, real_body if body is None else body)


def test_expired_window_order_is_refused() -> None:
    resource, headers, body = _answers()["qe"]
    text = body.decode()
    issue = text.split('"issueDate":"')[1].split('"')[0]
    nxt = text.split('"nextUpdate":"')[1].split('"')[0]
    swapped = text.replace(issue, "ISSUE").replace(nxt, issue).replace("ISSUE", nxt)
    with pytest.raises(CollateralError):
        upstream_document(resource, headers, swapped.encode())


@st.composite
def _mutated(draw: Any) -> tuple[Resource, dict[str, str], bytes]:
    resource, headers, body = _answers()[draw(st.sampled_from(["tcb", "qe", "crl", "root", "pck"]))]
    how = draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
    data = bytearray(body)
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=8))
    else:
        name = draw(st.sampled_from(sorted(headers) or ["X"]))
        headers = {**headers, name: draw(st.text(max_size=60))}
    return resource, headers, bytes(data)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fuzz_mutated_real_answers_parse_or_refuse(case: tuple[Resource, dict[str, str], bytes]) -> None:
    resource, headers, body = case
    with contextlib.suppress(CollateralError):
        upstream_document(resource, headers, body)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([TCB, QE, CRL, CRL_PEM, ROOT, PCK]),
    body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "TCB-Info-Issuer-Chain",
                "SGX-Enclave-Identity-Issuer-Chain",
                "SGX-PCK-CRL-Issuer-Chain",
                "SGX-TCBm",
                "SGX-FMSPC",
            ]
        ),
        st.text(max_size=80),
    ),
)
def test_fuzz_arbitrary_answers_parse_or_refuse(kind: Resource, body: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(CollateralError):
        upstream_document(kind, headers, body)


@given(st.text(max_size=200))
def test_encode_chain_round_trips(text: str) -> None:
    from urllib.parse import unquote

    encoded = encode_chain(text)
    assert unquote(encoded) == text
    assert not set(encoded) & set(" \n+/=")


def test_identity_kind_must_match_the_path() -> None:
    _, headers, body = _answers()["qe"]
    tdx_qe = _resource("/tdx/certification/v4/qe/identity")
    qve = _resource("/sgx/certification/v4/qve/identity")
    for resource in (tdx_qe, qve):  # an SGX QE identity answered on the TD QE / QvE path
        with pytest.raises(CollateralError):
            upstream_document(resource, headers, body)


def test_well_formed_but_corrupted_answers_are_refused() -> None:
    answers = _answers()
    resource, headers, body = answers["tcb"]
    # one digit of a date changed: still valid JSON with good dates, but no longer what Intel signed
    corrupted = body.replace(b'"issueDate":"2025-06-19T10:56:11Z"', b'"issueDate":"2025-06-19T10:56:12Z"')
    assert corrupted != body
    with pytest.raises(CollateralError):
        upstream_document(resource, headers, corrupted)
    # a CRL with somebody else's issuer chain (the TCB signing chain)
    crl_resource, _, der = answers["crl"]
    with pytest.raises(CollateralError):
        upstream_document(crl_resource, {"SGX-PCK-CRL-Issuer-Chain": headers["TCB-Info-Issuer-Chain"]}, der)
    # a PCK certificate whose "issuer chain" did not issue it
    pck_resource, pck_headers, leaf = answers["pck"]
    wrong = {**pck_headers, "SGX-PCK-Certificate-Issuer-Chain": headers["TCB-Info-Issuer-Chain"]}
    with pytest.raises(CollateralError):
        upstream_document(pck_resource, wrong, leaf)
