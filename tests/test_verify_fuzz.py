"""Fuzz: collateral loaders, signed-JSON models, policies and verify() on mutated quotes never
raise anything but our errors (parse-or-raise-our-error)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import CollateralError, ConfigError, ParseError, VerificationError
from sgx_quote_helper.verify.collateral import Collateral, from_pcs_responses, load_dcap_qvl_json
from sgx_quote_helper.verify.policy import Policy
from sgx_quote_helper.verify.qeidentity import QeIdentity
from sgx_quote_helper.verify.tcbinfo import TcbInfo
from sgx_quote_helper.verify.verdict import Verdict
from sgx_quote_helper.verify.verifier import Verifier

from .conftest import REAL

PHALA = REAL / "phala-sgx-v3-processor"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = (CollateralError, ParseError, VerificationError)


def _real() -> tuple[bytes, str]:
    if not PHALA.is_dir():
        pytest.skip(f"real test vectors not found at {PHALA}")
    return _load_real()


@cache
def _load_real() -> tuple[bytes, str]:
    return (PHALA / "quote.bin").read_bytes(), (PHALA / "collateral-2025-06.dcap-qvl.json").read_text()


_KEYS = [
    "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info", "tcb_info_signature",
    "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature", "pck_certificate_chain",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_loader_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(CollateralError):
        assert isinstance(load_dcap_qvl_json(data), Collateral)


@FUZZ
@given(st.sampled_from(_KEYS), json_values)
def test_loader_on_mutated_real_json(key: str, value: object) -> None:
    obj = json.loads(_real()[1])
    obj[key] = value
    try:
        c = load_dcap_qvl_json(json.dumps(obj))
        c.tcb_info_model  # noqa: B018
        c.qe_identity_model  # noqa: B018
    except CollateralError:
        pass


@FUZZ
@given(st.text(max_size=300), st.text(max_size=300))
def test_pcs_response_loader(tcb: str, qe: str) -> None:
    with contextlib.suppress(CollateralError):
        from_pcs_responses(tcb_info_response=tcb, tcb_info_issuer_chain=tcb, qe_identity_response=qe)


@pytest.mark.slow
@FUZZ
@given(json_values, st.sampled_from(["TCB", "QE"]))
def test_models_on_random_json(value: object, which: str) -> None:
    real = json.loads(json.loads(_real()[1])["tcb_info" if which == "TCB" else "qe_identity"])
    candidates = [
        value,
        {**real, "tcbLevels": value},
        {**real, "version": value},
        {**real, "issueDate": value},
    ]
    for cand in candidates:
        with contextlib.suppress(CollateralError):
            (TcbInfo if which == "TCB" else QeIdentity).parse(json.dumps(cand))


@pytest.mark.slow
@FUZZ
@given(json_values)
def test_policy_from_json(value: object) -> None:
    with contextlib.suppress(ConfigError):
        Policy.from_json(json.dumps(value))


_VERIFIER = Verifier()


@FUZZ
@given(st.data())
def test_verify_on_mutated_real_quote(data: st.DataObject) -> None:
    quote, text = _real()
    coll = load_dcap_qvl_json(text)
    q = bytearray(quote)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "length"]))
        pos = data.draw(st.integers(0, len(q) - 1))
        if op == "flip":
            q[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del q[pos:]
            if not q:
                q.append(0)
        elif op == "insert":
            q[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:  # rewrite a length field: signature data, QE auth data, certification data
            off = data.draw(st.sampled_from([432, 1012, 1046, 1048]))
            if off + 2 <= len(q):
                q[off : off + 2] = data.draw(st.binary(min_size=2, max_size=2))
    with contextlib.suppress(*OURS):
        assert isinstance(_VERIFIER.verify(bytes(q), coll, 1750334400), Verdict)


_FIELDS = [
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "qe_identity_issuer_chain",
    "pck_crl_issuer_chain",
]
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@FUZZ
@given(st.sampled_from(_FIELDS), st.data())
def test_verify_on_mutated_collateral_pki(name: str, data: st.DataObject) -> None:
    quote, text = _real()
    coll = load_dcap_qvl_json(text)
    value = getattr(coll, name)
    raw = bytearray(value.encode() if isinstance(value, str) else value)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = (
            ord(data.draw(st.sampled_from(_B64)))
            if isinstance(value, str)
            else data.draw(st.integers(0, 255))
        )
    new = raw.decode() if isinstance(value, str) else bytes(raw)
    mutated = dataclasses.replace(coll, **{name: new})  # type: ignore[arg-type]
    with contextlib.suppress(*OURS):
        assert isinstance(_VERIFIER.verify(quote, mutated, 1750334400), Verdict)
