"""TCB Info v2/v3 parsing, TCB level matching and Intel QVL's status convergence table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sgx_quote_helper.errors import CollateralError, VerificationError
from sgx_quote_helper.verify import tcb
from sgx_quote_helper.verify.collateral import from_pcs_responses, signed_member
from sgx_quote_helper.verify.status import TcbStatus, converge, qe_level_result
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.tcbinfo import TcbInfo

S = TcbStatus

# Intel QVL convergeTcbStatusWithQeTcbStatus (dcap-quote.md §4.2)
TABLE = [
    (S.OUT_OF_DATE, S.UP_TO_DATE, S.OUT_OF_DATE),
    (S.OUT_OF_DATE, S.SW_HARDENING_NEEDED, S.OUT_OF_DATE),
    (S.OUT_OF_DATE, S.CONFIGURATION_NEEDED, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
    (S.OUT_OF_DATE, S.CONFIGURATION_AND_SW_HARDENING_NEEDED, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
    (S.OUT_OF_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE),
    (S.OUT_OF_DATE, S.OUT_OF_DATE_CONFIGURATION_NEEDED, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
    (S.OUT_OF_DATE, S.REVOKED, S.REVOKED),
    *[(S.REVOKED, p, S.REVOKED) for p in S],
    *[(S.UP_TO_DATE, p, p) for p in S],
    (S.SW_HARDENING_NEEDED, S.UP_TO_DATE, S.OUT_OF_DATE),  # any other QE level = out of date
]


@pytest.mark.parametrize(("qe", "platform", "final"), TABLE)
def test_convergence_table(qe: TcbStatus, platform: TcbStatus, final: TcbStatus) -> None:
    assert converge(qe, platform) is final


def test_qe_level_result() -> None:
    assert qe_level_result(S.CONFIGURATION_NEEDED) is S.OUT_OF_DATE
    assert qe_level_result(S.REVOKED) is S.REVOKED


def _level(comps: list[int], pcesvn: int, status: str, tdx: list[int] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"sgxtcbcomponents": [{"svn": c} for c in comps], "pcesvn": pcesvn}
    if tdx is not None:
        t["tdxtcbcomponents"] = [{"svn": c} for c in tdx]
    return {"tcb": t, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status, "advisoryIDs": [status]}


def _info(levels: list[dict[str, Any]], tdx: bool = False) -> TcbInfo:
    body: dict[str, Any] = {
        "id": "TDX" if tdx else "SGX", "version": 3, "issueDate": "2025-01-01T00:00:00Z",
        "nextUpdate": "2025-02-01T00:00:00Z", "fmspc": "00a067110000", "pceId": "0000", "tcbType": 0,
        "tcbEvaluationDataNumber": 17, "tcbLevels": levels,
    }  # fmt: skip
    if tdx:
        mod = {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "ff" * 8}
        body["tdxModule"] = mod
        body["tdxModuleIdentities"] = [
            {**mod, "id": "TDX_03", "tcbLevels": [
                {"tcb": {"isvsvn": 3}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 1}, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "OutOfDate"}]}
        ]  # fmt: skip
    return TcbInfo.parse(json.dumps(body))


def test_levels_sorted_descending_and_first_full_match_wins() -> None:
    low = [1] * 16
    high = [5] * 16
    mixed = [9] + [0] * 15  # higher first component but lower elsewhere: compared component-wise
    info = _info(
        [_level(low, 1, "OutOfDate"), _level(mixed, 1, "ConfigurationNeeded"), _level(high, 10, "UpToDate")]
    )
    assert [lv.status for lv in info.levels] == [S.CONFIGURATION_NEEDED, S.UP_TO_DATE, S.OUT_OF_DATE]
    assert tcb.match_platform_level(info, tuple([5] * 16), 10).status is S.UP_TO_DATE  # type: ignore[union-attr]
    assert tcb.match_platform_level(info, tuple([5] * 16), 9).status is S.OUT_OF_DATE  # type: ignore[union-attr]
    assert tcb.match_platform_level(info, tuple([9] + [1] * 15), 1).status is S.CONFIGURATION_NEEDED  # type: ignore[union-attr]
    assert tcb.match_platform_level(info, tuple([0] * 16), 99) is None


def test_tdx_components_skip_module_bytes_for_module_1_5() -> None:
    info = _info(
        [_level([0] * 16, 0, "UpToDate", [9, 9] + [2] * 14), _level([0] * 16, 0, "OutOfDate", [0] * 16)],
        tdx=True,
    )
    svn_major0 = bytes([9, 0] + [2] * 14)
    assert tcb.match_platform_level(info, tuple([0] * 16), 0, svn_major0).status is S.OUT_OF_DATE  # type: ignore[union-attr]
    svn_major3 = bytes([3, 3] + [2] * 14)  # bytes 0-1 judged by the module identity instead
    assert tcb.match_platform_level(info, tuple([0] * 16), 0, svn_major3).status is S.UP_TO_DATE  # type: ignore[union-attr]
    ident = tcb.find_module_identity(info, svn_major3)
    assert ident is not None and ident.id == "TDX_03"
    assert tcb.match_module_level(ident, bytes([2, 3] + [0] * 14)).status is S.OUT_OF_DATE  # type: ignore[union-attr]
    assert tcb.find_module_identity(info, bytes([1, 7] + [0] * 14)) is None
    assert tcb.converge_module(S.OUT_OF_DATE, S.CONFIGURATION_NEEDED) is S.OUT_OF_DATE_CONFIGURATION_NEEDED


def test_tcb_info_v2_flat_components() -> None:
    level = {
        "tcb": {**{f"sgxtcbcomp{i:02d}svn": i for i in range(1, 17)}, "pcesvn": 11},
        "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "SWHardeningNeeded",
    }  # fmt: skip
    body = {
        "version": 2, "issueDate": "2025-01-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z",
        "fmspc": "00906EA10000", "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 12, "tcbLevels": [level],
    }  # fmt: skip
    info = TcbInfo.parse(json.dumps(body))
    assert info.id == "SGX" and info.version == 2
    assert info.levels[0].sgx_components == tuple(range(1, 17)) and info.levels[0].advisory_ids == ()
    with pytest.raises(CollateralError):
        TcbInfo.parse(json.dumps({**body, "id": "SGX"}))


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        '{"version": 4}',
        '{"version": 3, "id": "XYZ"}',
        '{"version": true}',
        "nope",
        '{"version": 2, "tcbLevels": []}',
    ],
)
def test_tcb_info_rejects_malformed(text: str) -> None:
    with pytest.raises(CollateralError):
        TcbInfo.parse(text)


def test_signed_member_keeps_exact_text() -> None:
    body = '{ "tcbInfo" : {"b":1,  "a":[1, 2]} ,\n "signature":"' + "ab" * 64 + '"}'
    text, sig = signed_member(body, "tcbInfo")
    assert text == '{"b":1,  "a":[1, 2]}' and sig == bytes.fromhex("ab" * 64)
    with pytest.raises(CollateralError):
        signed_member('{"tcbInfo": {}}', "tcbInfo")
    with pytest.raises(CollateralError):
        from_pcs_responses(tcb_info_response=body, tcb_info_issuer_chain="no pem", qe_identity_response=body)


def _relaunch_info() -> TcbInfo:
    return _info(
        [_level([0] * 16, 0, "UpToDate", [9, 9] + [2] * 14), _level([0] * 16, 0, "OutOfDate", [0] * 16)],
        tdx=True,
    )


@pytest.mark.parametrize(
    ("svn2", "sgx", "tdx", "module", "qe", "expected"),
    [
        ([3, 3, 2], S.UP_TO_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE, S.UP_TO_DATE, S.TD_RELAUNCH_ADVISED),
        (
            [3, 3, 2],
            S.CONFIGURATION_NEEDED,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
        ),
        (
            [3, 3, 2],
            S.UP_TO_DATE,
            S.OUT_OF_DATE_CONFIGURATION_NEEDED,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
        ),
        (
            [3, 3, 2],
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
        ),  # QE out of date
        (
            [3, 3, 2],
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
        ),  # SGX out of date
        (
            [3, 3, 2],
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
        ),  # module fine: no
        (
            [2, 3, 2],
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
        ),  # new module too old
        (
            [3, 3, 1],
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
        ),  # TDX comp 2 too old
        (
            [9, 0, 2],
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
            S.TD_RELAUNCH_ADVISED,
        ),  # module 0
        ([8, 0, 2], S.UP_TO_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE, S.UP_TO_DATE, S.OUT_OF_DATE),
        ([3, 3, 2], S.UP_TO_DATE, S.UP_TO_DATE, S.OUT_OF_DATE, S.UP_TO_DATE, S.UP_TO_DATE),  # nothing to fix
    ],
)
def test_td_relaunch_rule(
    svn2: list[int], sgx: TcbStatus, tdx: TcbStatus, module: TcbStatus, qe: TcbStatus, expected: TcbStatus
) -> None:
    raw = bytes(svn2 + [0] * (16 - len(svn2)))
    assert tcb.relaunch_status(raw, _relaunch_info(), sgx, tdx, module, qe) is expected


def test_td_relaunch_unknown_module_identity() -> None:
    with pytest.raises(VerificationError, match="tdx-module-unknown") as exc:
        tcb.relaunch_status(
            bytes([3, 7] + [2] * 14),
            _relaunch_info(),
            S.UP_TO_DATE,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE,
            S.UP_TO_DATE,
        )
    assert exc.value.step == Step.TDX_MODULE


def test_relaunch_results_are_not_tcb_info_statuses() -> None:
    with pytest.raises(CollateralError):
        TcbStatus.parse("TDRelaunchAdvised")
