"""Differential test against dcap-qvl 0.7.0 (Rust) on every vector both can run.

Where Intel's rules (ours) and dcap-qvl's differ, the difference is asserted explicitly:
- dcap-qvl rejects debug enclaves and non-zero MRSERVICETD outright; we report the status and let
  the policy reject (same accept/reject outcome by default).
- Revoked: Intel's QVL reports it as a status (our policy rejects it); dcap-qvl fails.
- A QE Identity level status other than UpToDate/Revoked: QVL treats it as "ISVSVN out of date";
  dcap-qvl 0.7.0 ignores it. (Measured on the 0.7.0 wheel: QE OutOfDate + platform
  ConfigurationNeeded gives OutOfDateConfigurationNeeded in both, not "the worst" as
  dcap-quote.md §4.2 expected from its source.)
"""

from __future__ import annotations

import pytest

from sgx_quote_helper.errors import VerificationError
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json
from sgx_quote_helper.verify.policy import Policy
from sgx_quote_helper.verify.status import TcbStatus, converge, merge_worst
from sgx_quote_helper.verify.verifier import verify

from .conftest import load_expected, real_dir
from .verify_pki import NOW, SimPki

dcap_qvl = pytest.importorskip("dcap_qvl")

VECTORS = [
    ("phala-sgx-v3-processor", "collateral-2025-06.dcap-qvl.json"),
    ("phala-sgx-v3-processor", "collateral-2023-11.dcap-qvl.json"),
    ("automata-sgx-v3-debug", "collateral-2024-08.dcap-qvl.json"),
    ("tdx/phala-tdx-v4", "collateral-2025-06.dcap-qvl.json"),
    ("tdx/phala-tdx-v5-outdated", "collateral-2026-02.dcap-qvl.json"),
    ("tdx/automata-tdx-v5", "collateral-2025-06.dcap-qvl.json"),
]


@pytest.mark.parametrize(("vector", "collateral"), VECTORS)
def test_same_outcome_as_dcap_qvl(vector: str, collateral: str) -> None:
    d = real_dir(vector)
    now = next(c["now_unix"] for c in load_expected(d)["cases"] if c["collateral"] == collateral)
    quote = (d / "quote.bin").read_bytes()
    text = (d / collateral).read_text()
    try:
        theirs = dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(text), now)
        their_error = None
    except ValueError as exc:  # dcap-qvl raises ValueError("Verification failed: ...")
        theirs, their_error = None, str(exc)
    try:
        ours = verify(quote, load_dcap_qvl_json(text), now)
        our_error = None
    except VerificationError as exc:
        ours, our_error = None, exc.reason
    if theirs is not None:
        assert ours is not None and ours.accepted
        assert ours.status.value == theirs.status
        assert list(ours.advisory_ids) == sorted(theirs.advisory_ids)
    elif "Debug mode" in str(their_error):
        assert ours is not None and ours.rejection is not None and ours.rejection.reason == "debug"
    elif "MR service TD" in str(their_error):
        assert ours is not None and ours.rejection is not None and ours.rejection.reason == "service-td"
    else:
        assert "No matching TCB level" in str(their_error)
        assert our_error == "no-matching-tcb-level"


def test_simulated_pki_with_explicit_root_agrees() -> None:
    pki = SimPki(platform_status="SWHardeningNeeded")
    quote, coll = pki.quote(), pki.collateral()
    theirs = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(coll.to_dcap_qvl_json()),
        pki.root_der,
        int(NOW.timestamp()),
    )
    ours = verify(quote, coll, NOW, root_ca=pki.root_der)
    assert ours.status.value == theirs.status == "SWHardeningNeeded"
    assert list(ours.advisory_ids) == list(theirs.advisory_ids)


def _theirs(pki: SimPki) -> str:
    quote, coll = pki.quote(), pki.collateral()
    try:
        return str(
            dcap_qvl.verify_with_root_ca(
                quote,
                dcap_qvl.QuoteCollateralV3.from_json(coll.to_dcap_qvl_json()),
                pki.root_der,
                int(NOW.timestamp()),
            ).status
        )
    except ValueError as exc:
        return f"error: {exc}"


ALL = Policy(allowed_statuses=frozenset(TcbStatus))


@pytest.mark.parametrize(
    ("qe", "platform", "ours", "theirs"),
    [
        # agreement: QE OutOfDate turns ConfigurationNeeded into OutOfDateConfigurationNeeded in both
        ("OutOfDate", "ConfigurationNeeded", "OutOfDateConfigurationNeeded", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        # QVL: any QE level other than UpToDate/Revoked is "ISVSVN out of date"; dcap-qvl ignores it
        ("ConfigurationNeeded", "UpToDate", "OutOfDate", "UpToDate"),
        # QVL reports Revoked as a status; dcap-qvl fails
        ("Revoked", "UpToDate", "Revoked", "error"),
        ("UpToDate", "Revoked", "Revoked", "error"),
    ],
)
def test_status_merge_against_dcap_qvl(qe: str, platform: str, ours: str, theirs: str) -> None:
    pki = SimPki(platform_status=platform, qe_level_status=qe)
    v = verify(pki.quote(), pki.collateral(), NOW, root_ca=pki.root_der, policy=ALL)
    assert v.status.value == ours
    assert v.status is converge(TcbStatus(qe), TcbStatus(platform))
    assert _theirs(pki).startswith(theirs)


def test_merge_worst_is_the_severity_order() -> None:
    assert merge_worst(TcbStatus.OUT_OF_DATE, TcbStatus.CONFIGURATION_NEEDED) is TcbStatus.OUT_OF_DATE
    assert (
        converge(TcbStatus.OUT_OF_DATE, TcbStatus.CONFIGURATION_NEEDED)
        is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    )
