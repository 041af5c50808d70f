"""TDX through the attestation service with the simulated TDX platform: MAA's TdxVm route binds
runtime data like the SGX routes, issues the TDX EAT-profile claims (checked against ``inspect``),
and the default TDX policy denies a debug TD."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.attest import token as tk
from sgx_quote_helper.attest.collateral import FixedCollateral
from sgx_quote_helper.attest.policy import b64url
from sgx_quote_helper.cli.inspect_cmd import inspect
from sgx_quote_helper.sim import collateral as sim_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdqe import Tdqe
from sgx_quote_helper.sim.tdx_collateral import tdx_quote_collateral
from sgx_quote_helper.sim.tdx_module import DEFAULT_TD_ATTRIBUTES, TdIdentity, TdxModule
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json

from .attest_helpers import make_service, serving
from .test_attest_api import get, post

RUNTIME = json.dumps({"td-key": "tdx-runtime-key-1"}).encode()
TD = TdIdentity(mr_td=bytes(range(48)), rtmr0=b"\x01" * 48, rtmr3=b"\x03" * 48, mr_owner=b"\x0a" * 48)


@pytest.mark.parametrize("version", [0, 1])
def test_simulated_td_through_tdxvm(tmp_path: Path, version: int) -> None:
    now = dt.datetime.now(dt.UTC)
    platform = Platform.init(tmp_path / "p", now=now)
    module = TdxModule.open(platform)
    tdqe = Tdqe.for_platform(module)
    quote = tdqe.quote(module.report(hashlib.sha256(RUNTIME).digest(), TD, version=version))
    debug_attrs = (int.from_bytes(DEFAULT_TD_ATTRIBUTES, "little") | 1).to_bytes(8, "little")
    debug = tdqe.quote(module.report(b"", TdIdentity(td_attributes=debug_attrs), version=version))
    coll = load_dcap_qvl_json(json.dumps(tdx_quote_collateral(platform, now)))
    service = make_service(tmp_path / "keys", sim_collateral.root_ca_der(platform))
    url_v = "/attest/TdxVm?api-version=2025-06-01"
    with serving(service, FixedCollateral(coll)) as base:
        ok = post(
            base + url_v,
            {"quote": b64url(quote), "runtimeData": {"data": b64url(RUNTIME), "dataType": "JSON"}},
        )
        wrong = post(base + url_v, {"quote": b64url(quote), "runtimeData": {"data": b64url(RUNTIME + b" ")}})
        denied = post(base + url_v, {"quote": b64url(debug)})
        jwks = get(base + "/certs")[1]
    assert ok[0] == 200, ok[1]
    claims = tk.verify_token(ok[1]["token"], jwks, now.timestamp(), issuer=base)
    (tmp_path / "q.bin").write_bytes(quote)
    summary = json.loads(CliRunner().invoke(inspect, [str(tmp_path / "q.bin"), "--json"]).stdout)
    for claim, field in [("tdx_mrtd", "mr_td"), ("tdx_rtmr0", "rtmr0"), ("tdx_rtmr3", "rtmr3"),
                         ("tdx_mrowner", "mr_owner"), ("tdx_report_data", "report_data"),
                         ("tdx_td_attributes", "td_attributes"), ("tdx_xfam", "xfam")]:  # fmt: skip
        assert claims[claim] == summary[field], claim
    assert claims["tdx_mrtd"] == TD.mr_td.hex()
    assert claims["x-ms-runtime"] == json.loads(RUNTIME)
    assert claims["tdx_td_attributes_septve_disable"] is True and claims["tdx_td_attributes_debug"] is False
    assert claims["attester_tcb_status"] == "UpToDate" and claims["x-ms-attestation-type"] == "tdxvm"
    assert ("tdx_mrservicetd" in claims) is (version == 1)
    assert wrong[0] == 400 and "SHA-256(runtimeData.data)" in wrong[1]["error"]["message"]
    assert denied[0] == 400 and denied[1]["error"]["code"] == "PolicyEvaluationError"
