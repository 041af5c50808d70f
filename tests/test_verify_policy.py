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
        (Policy(mr_td=bytes(48)), "not-td"),  # a policy for a TD never accepts an enclave
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
