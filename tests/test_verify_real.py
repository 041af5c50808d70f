"""Every real vector with collateral reaches its expected verdict (``shared/testdata/real``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.errors import VerificationError
from sgx_quote_helper.verify.collateral import Collateral, from_pcs_responses, load_dcap_qvl_json
from sgx_quote_helper.verify.policy import DEFAULT_ALLOWED, Policy
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.verifier import Verifier, verify

from .conftest import REAL, load_expected, real_dir

CSW = TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED

#: dcap-qvl's error text (as recorded in expected.json) -> the (step, reason) our verifier gives for it:
#: a policy violation on an authentic quote (``"policy"``) or a failed check (a Step)
DCAP_QVL_ERRORS: dict[str, tuple[str | Step, str]] = {
    "Verification failed: Debug mode is enabled": ("policy", "debug"),
    "Verification failed: Invalid MR service TD": ("policy", "service-td"),
    "Verification failed: No matching TCB level found": (Step.TCB_LEVEL, "no-matching-tcb-level"),
}


def _vectors() -> list[tuple[str, dict[str, Any]]]:
    """Every (vector, case) of shared/testdata/real whose collateral is a dcap-qvl JSON file."""
    if not REAL.is_dir():
        return []
    out = []
    for exp in sorted(REAL.glob("**/expected.json")):
        vector = str(exp.parent.relative_to(REAL))
        for case in load_expected(exp.parent)["cases"]:
            if str(case.get("collateral", "")).endswith(".dcap-qvl.json") and "dcap_qvl_0_7_0" in case:
                out.append((vector, case))
    return out


VECTORS = _vectors()


def _case(vector: str, collateral: str) -> tuple[bytes, Collateral, int]:
    d = real_dir(vector)
    now = next(c["now_unix"] for c in load_expected(d)["cases"] if c["collateral"] == collateral)
    return (d / "quote.bin").read_bytes(), load_dcap_qvl_json((d / collateral).read_text()), now


def test_every_vector_with_collateral_is_covered() -> None:
    if not REAL.is_dir():
        pytest.skip(f"real test vectors not found at {REAL}")
    assert (
        len(VECTORS) >= 6
    )  # phala SGX x2, automata SGX debug, phala TDX v4, automata TDX v5, TDX v5 outdated


@pytest.mark.parametrize(("vector", "case"), VECTORS, ids=[f"{v}:{c['collateral']}" for v, c in VECTORS])
def test_real_vector_reaches_its_expected_verdict(vector: str, case: dict[str, Any]) -> None:
    """The verdict recorded in expected.json (dcap-qvl 0.7.0's, and the hand-computed QVL rules
    where the vector has them) is ours too."""
    quote, coll, now = _case(vector, case["collateral"])
    want = case["dcap_qvl_0_7_0"]
    if "error" in want:
        step, reason = DCAP_QVL_ERRORS[want["error"]]
        if isinstance(step, Step):
            with pytest.raises(VerificationError) as exc:
                verify(quote, coll, now)
            assert (exc.value.step, exc.value.reason) == (step, reason)
            return
        v = verify(quote, coll, now)
        assert not v.accepted and (v.rejection.step, v.rejection.reason) == (step, reason)  # type: ignore[union-attr]
    else:
        v = verify(quote, coll, now)
        assert v.status.value == want["status"] and v.platform_status.value == want["platform"]
        assert v.qe_status.value == want["qe"] and list(v.advisory_ids) == want["advisory_ids"]
        assert v.accepted == (v.status in DEFAULT_ALLOWED)
        assert v.to_dict()["status"] == want["status"]
        parsed = verify(Quote.from_bytes(quote), coll, now)  # a parsed Quote works the same
        assert parsed.status is v.status and parsed.advisory_ids == v.advisory_ids
    assert v.crls_checked
    hand = case.get("hand_computed_qvl_rules")
    if hand is not None:  # the facts hold whatever the policy decided
        assert v.fmspc.hex().upper() == hand["fmspc"] and v.sgx_type == hand["sgx_type"]
        assert v.platform_status.value == hand["platform_status"] and v.qe_status.value == hand["qe_status"]
        assert v.status.value == hand["final_status_intel_converge"]
        assert list(v.advisory_ids) == hand["platform_advisories"]


def test_phala_sgx_identity_fields() -> None:
    quote, coll, now = _case("phala-sgx-v3-processor", "collateral-2025-06.dcap-qvl.json")
    v = verify(quote, coll, now)
    assert v.ca_type == "processor"
    assert bytes.fromhex(v.to_dict()["report_data"]).startswith(b"Hello, world!")
    assert v.tcb_info_evaluation_data_number == v.qe_identity_evaluation_data_number == 17
    assert v.warnings  # accepted with a warning: not UpToDate


def test_policy_violations_can_be_waived_explicitly() -> None:
    quote, coll, now = _case("automata-sgx-v3-debug", "collateral-2024-08.dcap-qvl.json")
    v = verify(quote, coll, now)
    with pytest.raises(VerificationError) as exc:
        v.require_accepted()
    assert (exc.value.step, exc.value.reason) == (Step.POLICY, "debug")
    allowed = verify(quote, coll, now, policy=Policy(allow_debug=True))
    assert allowed.accepted and allowed.status is v.status
    quote, coll, now = _case("tdx/automata-tdx-v5", "collateral-2025-06.dcap-qvl.json")
    assert verify(quote, coll, now, policy=Policy(allow_service_td=True)).accepted


def _oasis() -> tuple[bytes, Collateral]:
    d: Path = real_dir("oasis-sgx-v3-platform")
    coll = from_pcs_responses(
        tcb_info_response=(d / "tcb_info_v3_2022-12.json").read_bytes(),
        tcb_info_issuer_chain=(d / "tcb_info_issuer_chain.pem").read_text(),
        qe_identity_response=(d / "qe_identity_2022-12.json").read_bytes(),
    )
    return (d / "quote.bin").read_bytes(), coll


def test_oasis_partial_collateral_needs_the_dangerous_switch() -> None:
    quote, coll = _oasis()
    with pytest.raises(VerificationError) as exc:
        verify(quote, coll, 1671497404)
    assert (exc.value.step, exc.value.reason) == (Step.CRL, "root-ca-crl-missing")
    v = verify(quote, coll, 1671497404, dangerous_skip_crls=True)
    assert v.status is TcbStatus.SW_HARDENING_NEEDED
    assert v.advisory_ids == ("INTEL-SA-00615", "INTEL-SA-00657")
    assert v.qe_status is TcbStatus.UP_TO_DATE
    assert v.ca_type == "platform" and not v.crls_checked


@pytest.mark.parametrize(
    ("now", "step", "reason"),
    [
        (1671194735, Step.TCB_INFO, "tcb-info-not-yet-valid"),  # QE identity also not yet issued
        (1673786737, Step.QE_IDENTITY, "qe-identity-expired"),
        # the steps run in their numbered order (QVL checks the PCK chain first): the PCK leaf's
        # window (step 3) is judged before the TCB signing cert's or the TCB Info's (step 5)
        (1891163522, Step.PCK_CHAIN, "pck-cert-expired"),
        (1670238720, Step.PCK_CHAIN, "pck-cert-not-yet-valid"),
    ],
)
def test_oasis_time_windows(now: int, step: Step, reason: str) -> None:
    quote, coll = _oasis()
    with pytest.raises(VerificationError) as exc:
        verify(quote, coll, now, dangerous_skip_crls=True)
    assert (exc.value.step, exc.value.reason) == (step, reason)


def test_warm_cache_is_equivalent_and_respects_time() -> None:
    quote, coll, now = _case("phala-sgx-v3-processor", "collateral-2025-06.dcap-qvl.json")
    v = Verifier()
    first = v.verify(quote, coll, now)
    again = v.verify(quote, coll, now + 60)
    assert first.status is again.status and first.advisory_ids == again.advisory_ids
    # the same cached collateral, asked about a time past its window, fails with the precise step
    with pytest.raises(VerificationError) as exc:
        v.verify(quote, coll, now + 40 * 86400)
    assert exc.value.step in (Step.CRL, Step.TCB_INFO, Step.QE_IDENTITY)
    assert v.verify(quote, coll, now).status is first.status


def test_shared_verifier_is_consistent_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    quote, coll, now = _case("phala-sgx-v3-processor", "collateral-2025-06.dcap-qvl.json")
    tdx_quote, tdx_coll, tdx_now = _case("tdx/phala-tdx-v4", "collateral-2025-06.dcap-qvl.json")
    v = Verifier(cache_size=2)  # tiny caches: constant eviction while threads race

    def one(i: int) -> tuple[str, str]:
        if i % 3 == 2:
            try:
                v.verify(quote, coll, now + 60 * 86400)  # outside the window: must never be served
            except VerificationError as exc:
                return ("error", str(exc.step))
            return ("accepted-out-of-window", "")
        if i % 2:
            return ("sgx", v.verify(quote, coll, now).status.value)
        return ("tdx", v.verify(tdx_quote, tdx_coll, tdx_now).status.value)

    with ThreadPoolExecutor(4) as pool:
        results = set(pool.map(one, range(60)))
    assert results == {
        ("sgx", CSW.value),
        ("tdx", TcbStatus.UP_TO_DATE.value),
        ("error", str(int(Step.CRL))),  # the PCK CRL (step 4) is the first window to close
    }
