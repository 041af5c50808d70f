"""verify.policy: the default policy, each rule, and policy files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.verify import Policy, TcbStatus, verify

from .verify_pki import NOW, SimPki

PKI = SimPki(platform_status="SWHardeningNeeded")
QUOTE, COLL = PKI.quote(), PKI.collateral()


def _reason(policy: Policy) -> str | None:
    v = verify(QUOTE, COLL, NOW, root_ca=PKI.root_der, policy=policy)
    return v.rejection.reason if v.rejection else None


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (Policy(), None),
        (Policy(mr_enclave=b"\xe1" * 32, mr_signer=b"\x51" * 32, isv_prod_id=7, min_isv_svn=3), None),
        (Policy(mr_enclave=bytes(32)), "mr-enclave"),
        (Policy(mr_signer=bytes(32)), "mr-signer"),
        (Policy(isv_prod_id=8), "isv-prod-id"),
        (Policy(min_isv_svn=4), "isv-svn"),
        (Policy(report_data_prefix=b"SIMULATED"), None),
        (Policy(report_data_prefix=b"REAL"), "report-data"),
        (Policy(allowed_statuses=frozenset({TcbStatus.UP_TO_DATE})), "tcb-status"),
        (Policy(allowed_advisory_ids=frozenset()), "advisory"),
        (Policy(allowed_advisory_ids=frozenset({"INTEL-SA-99999"})), None),
        (Policy(max_collateral_age_s=86400), "collateral-too-old"),  # issued 3 days before NOW
        (Policy(max_collateral_age_s=int(timedelta(days=4).total_seconds())), None),
        (Policy(mr_td=bytes(48)), "mr-td-not-applicable"),  # a policy for a TD never accepts an enclave
    ],
)
def test_policy_rules(policy: Policy, reason: str | None) -> None:
    assert _reason(policy) == reason


def test_default_policy_warns_but_accepts_sw_hardening() -> None:
    v = verify(QUOTE, COLL, NOW, root_ca=PKI.root_der)
    assert v.accepted and v.warnings and "INTEL-SA-99999" in v.warnings[0]


def test_policy_file_round_trip() -> None:
    p = Policy.from_json(
        '{"mr_enclave": "' + "e1" * 32 + '", "allowed_statuses": ["UpToDate", "SWHardeningNeeded"],'
        ' "allow_debug": false, "report_data_prefix": "0x53494d"}'
    )
    assert p.mr_enclave == b"\xe1" * 32 and p.report_data_prefix == b"SIM"
    assert _reason(p) is None


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"mr_enclave": "zz"}',
        '{"mr_enclave": "00"}',
        '{"allowed_statuses": ["Fine"]}',
        '{"allow_debug": 1}',
        '{"min_isv_svn": -1}',
        '{"allowed_advisory_ids": "INTEL-SA-1"}',
        '{"debug": true}',
    ],
)
def test_bad_policy_files(text: str) -> None:
    with pytest.raises(ConfigError):
        Policy.from_json(text)


# --- every violation, each with its step and the constraint it names ------------------------------
def test_policy_reports_every_violation_not_the_first() -> None:
    p = Policy(
        mr_enclave=bytes(32),
        isv_prod_id=8,
        min_isv_svn=4,
        allowed_statuses=frozenset({TcbStatus.UP_TO_DATE}),
        report_data_prefix=b"REAL",
        min_tcb_evaluation_data_number=18,
    )
    v = verify(QUOTE, COLL, NOW, root_ca=PKI.root_der, policy=p)
    got = [(r.step, r.reason, r.constraint) for r in v.violations]
    assert got == [
        ("tcb_level", "tcb-status", "allowed_statuses"),
        ("tcb_info", "tcb-info-evaluation-data-number-too-low", "min_tcb_evaluation_data_number"),
        ("qe_identity", "qe-identity-evaluation-data-number-too-low", "min_tcb_evaluation_data_number"),
        ("policy", "report-data", "report_data_prefix"),
        ("policy", "mr-enclave", "mr_enclave"),
        ("policy", "isv-prod-id", "isv_prod_id"),
        ("policy", "isv-svn", "min_isv_svn"),
    ]
    assert not v.accepted and v.rejection == v.violations[0]
    d = v.to_dict()
    assert d["error"] == {"step": "tcb_level", "reason": "tcb-status"}
    assert [x["reason"] for x in d["violations"]] == [r.reason for r in v.violations]
    assert v.status is TcbStatus.SW_HARDENING_NEEDED  # the facts are still reported


def test_require_accepted_raises_the_first_violations_step() -> None:
    from sgx_quote_helper.errors import VerificationError
    from sgx_quote_helper.verify import Step

    v = verify(QUOTE, COLL, NOW, root_ca=PKI.root_der, policy=Policy(min_tcb_evaluation_data_number=18))
    with pytest.raises(VerificationError) as exc:
        v.require_accepted()
    assert (exc.value.step, exc.value.reason) == (Step.TCB_INFO, "tcb-info-evaluation-data-number-too-low")


# --- fail closed: constraints the quote's TEE cannot satisfy ---------------------------------------
def _tdx() -> tuple[bytes, object, int]:
    from sgx_quote_helper.verify import load_dcap_qvl_json

    from .conftest import load_expected, real_dir

    d = real_dir("tdx/phala-tdx-v4")
    case = load_expected(d)["cases"][0]
    coll = load_dcap_qvl_json((d / case["collateral"]).read_text())
    return (d / "quote.bin").read_bytes(), coll, case["now_unix"]


@pytest.mark.parametrize(
    ("policy", "reasons"),
    [
        (
            Policy(min_isv_svn=200, isv_prod_id=7),
            ["isv-prod-id-not-applicable", "min-isv-svn-not-applicable"],
        ),
        (Policy(mr_enclave=bytes(32)), ["mr-enclave-not-applicable"]),
        (
            Policy(mr_signer=bytes(32), min_isv_svn=0),
            ["mr-signer-not-applicable", "min-isv-svn-not-applicable"],
        ),
    ],
)
def test_sgx_only_constraints_reject_a_tdx_quote(policy: Policy, reasons: list[str]) -> None:
    quote, coll, now = _tdx()
    v = verify(quote, coll, now, policy=policy)  # type: ignore[arg-type]
    assert v.tee == "TDX" and v.status is TcbStatus.UP_TO_DATE and not v.accepted
    assert [r.reason for r in v.violations] == reasons
    assert all(r.step == "policy" and r.constraint in r.detail for r in v.violations)
    assert verify(quote, coll, now).accepted  # type: ignore[arg-type]  # the same quote, no constraint


def test_policy_file_constraints_fail_closed_too() -> None:
    quote, coll, now = _tdx()
    p = Policy.from_json('{"min_isv_svn": 200, "isv_prod_id": 7}')
    v = verify(quote, coll, now, policy=p)  # type: ignore[arg-type]
    assert [r.constraint for r in v.violations] == ["isv_prod_id", "min_isv_svn"]


# --- TCB Evaluation Data Number: a replayed old-but-unexpired TCB Info is caught -------------------
def test_verdict_reports_both_evaluation_data_numbers() -> None:
    pki = SimPki(tcb_evaluation_data_number=16, qe_evaluation_data_number=17)
    v = verify(pki.quote(), pki.collateral(), NOW, root_ca=pki.root_der)
    assert (v.tcb_info_evaluation_data_number, v.qe_identity_evaluation_data_number) == (16, 17)
    assert v.tcb_evaluation_data_number == 16  # QVL's tcb_eval_ref_num: the lower one
    d = v.to_dict()
    assert (d["tcb_info_evaluation_data_number"], d["qe_identity_evaluation_data_number"]) == (16, 17)


def test_replayed_old_tcb_info_is_rejected_by_the_minimum() -> None:
    """An attacker serves last quarter's TCB Info (number 16, still inside its window): without a
    minimum it verifies (its window is fine); with ``min_tcb_evaluation_data_number=17`` it is
    rejected at the TCB Info step, and the current QE Identity (17) passes."""
    old = SimPki(tcb_evaluation_data_number=16)
    assert verify(old.quote(), old.collateral(), NOW, root_ca=old.root_der).accepted
    v = verify(
        old.quote(),
        old.collateral(),
        NOW,
        root_ca=old.root_der,
        policy=Policy(min_tcb_evaluation_data_number=17),
    )
    assert [(r.step, r.reason) for r in v.violations] == [
        ("tcb_info", "tcb-info-evaluation-data-number-too-low")
    ]
    assert "16" in v.violations[0].detail and "17" in v.violations[0].detail
    old_qe = SimPki(qe_evaluation_data_number=15)
    v = verify(
        old_qe.quote(),
        old_qe.collateral(),
        NOW,
        root_ca=old_qe.root_der,
        policy=Policy(min_tcb_evaluation_data_number=17),
    )
    assert [(r.step, r.reason) for r in v.violations] == [
        ("qe_identity", "qe-identity-evaluation-data-number-too-low")
    ]
    current = SimPki()
    assert verify(
        current.quote(),
        current.collateral(),
        NOW,
        root_ca=current.root_der,
        policy=Policy(min_tcb_evaluation_data_number=17),
    ).accepted


def test_policy_file_evaluation_number_field() -> None:
    assert Policy.from_json('{"min_tcb_evaluation_data_number": 17}').min_tcb_evaluation_data_number == 17
    for bad in ('{"min_tcb_evaluation_data_number": -1}', '{"min_tcb_evaluation_data_number": "17"}'):
        with pytest.raises(ConfigError):
            Policy.from_json(bad)


def test_mr_td_on_a_simulated_td() -> None:
    td = SimPki(tdx=True)
    quote, coll = td.quote(), td.collateral()
    assert verify(quote, coll, NOW, root_ca=td.root_der, policy=Policy(mr_td=b"\x7d" * 48)).accepted
    v = verify(quote, coll, NOW, root_ca=td.root_der, policy=Policy(mr_td=bytes(48), isv_prod_id=1))
    assert [(r.reason, r.constraint) for r in v.violations] == [
        ("isv-prod-id-not-applicable", "isv_prod_id"),
        ("mr-td", "mr_td"),
    ]
