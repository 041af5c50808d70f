"""The attestation service's HTTP API on loopback: MAA's error shapes for malformed requests, TDX
tokens from the real Intel-signed TDX vectors (time pinned), key rotation, metrics, collateral from
a PCCS with a warm cache."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner

from sgx_quote_helper.attest import token as tk
from sgx_quote_helper.attest.collateral import FixedCollateral
from sgx_quote_helper.attest.keys import GRACE, PUBLISH_AHEAD, KeyDir, published
from sgx_quote_helper.attest.policy import b64url
from sgx_quote_helper.attest.request import open_enclave_report
from sgx_quote_helper.cli.inspect_cmd import inspect
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json

from .attest_helpers import SimWorld, make_service, serving, sim_world
from .conftest import load_expected, real_dir


def post(
    url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    return _send(req)


def get(url: str) -> tuple[int, Any, dict[str, str]]:
    return _send(urllib.request.Request(url))


def _send(req: urllib.request.Request) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw, headers


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return sim_world(tmp_path_factory.mktemp("sim") / "p", dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def url(world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = make_service(tmp_path_factory.mktemp("keys"), world.root_der)
    with serving(service, FixedCollateral(world.collateral), max_body=64 * 1024) as base:
        yield base


def _maa_error(status: int, answer: Any, want_status: int, code: str) -> str:
    assert status == want_status, answer
    assert isinstance(answer, dict) and set(answer) == {"error"}
    assert set(answer["error"]) == {"code", "message"}
    assert answer["error"]["code"] == code, answer
    message: str = answer["error"]["message"]
    assert "Traceback" not in message
    return message


V = "?api-version=2020-10-01"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "words"),
    [
        ("/attest/SgxEnclave", {"quote": "AAAA"}, 400, "MissingApiVersionParameter", "api-version"),
        ("/attest/SgxEnclave?api-version=2019-01-01", {"quote": "AAAA"}, 400, "InvalidApiVersionParameter", "2020-10-01"),
        (f"/attest/SgxEnclave{V}", b"{not json", 400, "InvalidParameter", "not JSON"),
        (f"/attest/SgxEnclave{V}", b"[1]", 400, "InvalidParameter", "JSON object"),
        (f"/attest/SgxEnclave{V}", {}, 400, "InvalidParameter", "quote is missing"),
        (f"/attest/SgxEnclave{V}", {"quote": "a+b/"}, 400, "InvalidParameter", "base64url"),
        (f"/attest/SgxEnclave{V}", {"quote": "abcde"}, 400, "InvalidParameter", "base64url"),
        (f"/attest/SgxEnclave{V}", {"quote": 12}, 400, "InvalidParameter", "base64url string"),
        (f"/attest/SgxEnclave{V}", {"quote": "AAAA", "extra": 1}, 400, "InvalidParameter", "unknown fields"),
        (f"/attest/SgxEnclave{V}", {"quote": "AAAA"}, 400, "InvalidQuote", "does not parse"),
        (f"/attest/SgxEnclave{V}", {"quote": "AAAA", "runtimeData": {"data": "AA", "dataType": "Text"}}, 400, "InvalidParameter", "dataType"),
        (f"/attest/SgxEnclave{V}", {"quote": "AAAA", "runtimeData": {"dataType": "JSON"}}, 400, "InvalidParameter", "data is missing"),
        (f"/attest/OpenEnclave{V}", {"quote": "AAAA"}, 400, "InvalidParameter", "takes 'report'"),
        (f"/attest/OpenEnclave{V}", {"report": b64url(b"\x01\x00\x00\x00\x01" + bytes(11))}, 400, "InvalidParameter", "report type 1"),
        (f"/attest/Tpm{V}", {"quote": "AAAA"}, 404, "NotFound", "Not Found"),
        (f"/attest/SgxEnclave{V}", b"{" + b" " * (65 * 1024) + b"}", 413, "RequestEntityTooLarge", "larger than"),
    ],
)  # fmt: skip
def test_malformed_requests_get_maa_errors(
    url: str, path: str, body: Any, status: int, code: str, words: str
) -> None:
    s, answer, headers = post(url + path, body)
    assert words in _maa_error(s, answer, status, code)
    assert "Retry-After" not in headers  # the SDK would retry


def test_wrong_method_and_unknown_policy_type(url: str) -> None:
    s, answer, _ = get(url + "/attest/SgxEnclave" + V)
    _maa_error(s, answer, 405, "MethodNotAllowed")
    s, answer, _ = get(url + "/policies/Tpm")
    assert "SgxEnclave" in _maa_error(s, answer, 404, "InvalidAttestationType")


def test_route_must_match_the_tee(url: str) -> None:
    d = real_dir("tdx/phala-tdx-v4")
    s, answer, _ = post(url + "/attest/SgxEnclave" + V, {"quote": b64url((d / "quote.bin").read_bytes())})
    assert "does not take TDX quotes" in _maa_error(s, answer, 400, "InvalidParameter")
    s, answer, _ = post(url + "/attest/TdxVm" + V, {"quote": "AAAA"})
    _maa_error(s, answer, 400, "InvalidQuote")


def test_tampered_quote_wrong_runtime_data_and_init_time_data(world: SimWorld, url: str) -> None:
    runtime = b"runtime"
    quote = world.quote(runtime)
    ok = {"quote": b64url(quote), "runtimeData": {"data": b64url(runtime), "dataType": "Binary"}}
    s, answer, _ = post(url + "/attest/SgxEnclave" + V, ok)
    assert s == 200 and set(answer) == {"token"}
    for off in (50, 150, 400, 500, 700):  # header, body, signature, attestation key, QE report
        bad = quote[:off] + bytes([quote[off] ^ 0x40]) + quote[off + 1 :]
        s, answer, _ = post(url + "/attest/SgxEnclave" + V, {**ok, "quote": b64url(bad)})
        assert s == 400 and answer["error"]["code"] in ("InvalidQuote", "InvalidParameter"), (off, answer)
    s, answer, _ = post(url + "/attest/SgxEnclave" + V, {**ok, "runtimeData": {"data": b64url(b"other")}})
    assert "SHA-256(runtimeData.data)" in _maa_error(s, answer, 400, "InvalidParameter")
    s, answer, _ = post(url + "/attest/SgxEnclave" + V, {**ok, "initTimeData": {"data": b64url(b"cfg")}})
    assert "CONFIGID" in _maa_error(s, answer, 400, "InvalidParameter")
    # padded base64url is accepted too
    s, _, _ = post(
        url + "/attest/OpenEnclave" + V,
        {"report": b64url(open_enclave_report(quote)) + "=="[: -len(b64url(open_enclave_report(quote))) % 4]},
    )
    assert s == 200


def test_policy_rejections(world: SimWorld, url: str) -> None:
    debug = world.quote(b"", debug=True)
    s, answer, _ = post(url + "/attest/SgxEnclave" + V, {"quote": b64url(debug)})
    assert "line" in _maa_error(s, answer, 400, "PolicyEvaluationError")
    s, answer, _ = post(
        url + "/attest/SgxEnclave" + V, {"quote": b64url(debug), "draftPolicyForAttestation": "version=9;"}
    )
    assert "line 1, column 9" in _maa_error(s, answer, 400, "InvalidParameter")


def test_metrics_and_probes(url: str) -> None:
    s, body, _ = get(url + "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    assert s == 200
    assert 'attest_verdicts_total{result="issued",route="SgxEnclave",tcb_status="UpToDate"}' in text
    assert "attest_request_duration_seconds_bucket" in text and "attest_collateral_cache_age_seconds" in text
    assert get(url + "/healthz")[0] == 200 and get(url + "/readyz")[1] == {"status": "ready"}


# ------------------------------------------------------------------------------ TDX real vector


def test_tdx_claims_from_a_real_intel_quote(tmp_path: Path) -> None:
    d = real_dir("tdx/phala-tdx-v4")
    case = next(c for c in load_expected(d)["cases"] if c["collateral"] == "collateral-2025-06.dcap-qvl.json")
    now = dt.datetime.fromtimestamp(case["now_unix"], dt.UTC)
    quote = (d / "quote.bin").read_bytes()
    coll = load_dcap_qvl_json((d / case["collateral"]).read_text())
    service = make_service(tmp_path / "keys", None, now=now)  # Intel's production root
    with serving(service, FixedCollateral(coll), clock=lambda: now) as base:
        s, answer, _ = post(
            base + "/attest/TdxVm?api-version=2023-04-01-preview", {"quote": b64url(quote), "nonce": "tdx"}
        )
        assert s == 200, answer
        _, jwks, _ = get(base + "/certs")
        s, sgx_answer, _ = post(base + "/attest/SgxEnclave" + V, {"quote": b64url(quote)})
        assert s == 400 and "TDX" in sgx_answer["error"]["message"]
    claims = tk.verify_token(answer["token"], jwks, now.timestamp(), issuer=base)
    key = jwt.PyJWKSet.from_dict(jwks).keys[0].key
    assert (
        jwt.decode(
            answer["token"],
            key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        == claims
    )
    (tmp_path / "q.bin").write_bytes(quote)
    summary = json.loads(CliRunner().invoke(inspect, [str(tmp_path / "q.bin"), "--json"]).stdout)
    assert claims["x-ms-attestation-type"] == "tdxvm" and claims["nonce"] == "tdx"
    for claim, field in [
        ("tdx_mrtd", "mr_td"), ("tdx_rtmr0", "rtmr0"), ("tdx_rtmr1", "rtmr1"), ("tdx_rtmr2", "rtmr2"),
        ("tdx_rtmr3", "rtmr3"), ("tdx_mrseam", "mr_seam"), ("tdx_mrsignerseam", "mr_signer_seam"),
        ("tdx_mrconfigid", "mr_config_id"), ("tdx_mrowner", "mr_owner"), ("tdx_mrownerconfig", "mr_owner_config"),
        ("tdx_td_attributes", "td_attributes"), ("tdx_xfam", "xfam"), ("tdx_tee_tcb_svn", "tee_tcb_svn"),
        ("tdx_seam_attributes", "seam_attributes"), ("tdx_report_data", "report_data"),
    ]:  # fmt: skip
        assert claims[claim] == summary[field], claim
    assert claims["tdx_td_attributes_debug"] is summary["debug"] is False and claims["dbgstat"] == "disabled"
    attrs = int.from_bytes(bytes.fromhex(summary["td_attributes"]), "little")
    assert claims["tdx_td_attributes_septve_disable"] is bool(attrs >> 28 & 1)
    assert claims["attester_tcb_status"] == "UpToDate" == claims["x-sgxqh-tcb-status"]
    assert claims["x-sgxqh-advisory-ids"] == []
    assert claims["x-sgxqh-fmspc"] == summary["fmspc"].upper()
    assert claims["x-ms-sgx-collateral"]["quotehash"] == hashlib.sha256(quote).hexdigest()
    assert claims["iat"] == case["now_unix"] and claims["exp"] == case["now_unix"] + 8 * 3600


# ----------------------------------------------------------------------------------------- keys


def test_keys_are_0600_and_rotation_keeps_old_keys_until_their_tokens_expire(
    world: SimWorld, tmp_path: Path
) -> None:
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    kd = KeyDir(tmp_path / "keys")
    first = kd.ensure(t0)
    assert len(first) == 1 and [k.kid for k in kd.ensure(t0)] == [first[0].kid]  # no second key
    for f in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    lifetime = dt.timedelta(hours=8)
    second = kd.add(t0 + dt.timedelta(hours=1))
    keys = kd.load()
    kids = lambda at: [k.kid for k in published(keys, at, lifetime)]  # noqa: E731
    assert kids(t0 + dt.timedelta(hours=2)) == [first[0].kid, second.kid]
    assert kids(t0 + dt.timedelta(hours=9) + PUBLISH_AHEAD + GRACE - dt.timedelta(seconds=1)) == [
        first[0].kid,
        second.kid,
    ]
    assert kids(t0 + dt.timedelta(hours=9) + PUBLISH_AHEAD + GRACE + dt.timedelta(seconds=1)) == [second.kid]
    assert kd.prune(t0 + dt.timedelta(hours=2), lifetime) == []
    assert kd.prune(t0 + dt.timedelta(hours=10), lifetime) == [1]
    assert [k.number for k in kd.load()] == [2]


def test_a_running_service_signs_with_the_rotated_key(world: SimWorld, tmp_path: Path) -> None:
    service = make_service(tmp_path / "keys", world.root_der)
    with serving(service, FixedCollateral(world.collateral)) as base:
        body = {"quote": b64url(world.quote(b""))}
        old = post(base + "/attest/SgxEnclave" + V, body)[1]["token"]
        kd = KeyDir(tmp_path / "keys")
        fresh = kd.add(dt.datetime.now(dt.UTC))
        assert service.reload_keys_if_changed(dt.datetime.now(dt.UTC))
        # published at once, signing only after PUBLISH_AHEAD (every replica has reloaded by then)
        assert fresh.kid in [k["kid"] for k in get(base + "/certs")[1]["keys"]]
        assert (
            tk.decode(post(base + "/attest/SgxEnclave" + V, body)[1]["token"])[0]["kid"]
            == tk.decode(old)[0]["kid"]
        )
        new_key = kd.add(dt.datetime.now(dt.UTC) - PUBLISH_AHEAD - dt.timedelta(seconds=1))
        assert service.reload_keys_if_changed(dt.datetime.now(dt.UTC))
        new = post(base + "/attest/SgxEnclave" + V, body)[1]["token"]
        jwks = get(base + "/certs")[1]
    assert tk.decode(new)[0]["kid"] == new_key.kid != tk.decode(old)[0]["kid"]
    now = dt.datetime.now(dt.UTC).timestamp()
    for token in (old, new):  # the old key is still published: its tokens still verify
        tk.verify_token(token, jwks, now)


def test_a_broken_key_dir_is_a_clear_error(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    kd.ensure(dt.datetime.now(dt.UTC))
    (tmp_path / "keys" / "signing-0001.crt").write_text("junk")
    os.chmod(tmp_path / "keys" / "signing-0001.crt", 0o600)
    from sgx_quote_helper.errors import ConfigError

    with pytest.raises(ConfigError, match="not PEM"):
        kd.load()


def test_nothing_a_client_sends_trusts_the_simulated_root(world: SimWorld, tmp_path: Path) -> None:
    """Started without --root-ca the service trusts Intel's root only: a simulated quote is
    rejected whatever the request says, a permissive draft policy included."""
    service = make_service(tmp_path / "keys", None)
    with serving(service, FixedCollateral(world.collateral)) as base:
        quote = b64url(world.quote(b""))
        permissive = "version=1.0; authorizationrules { => permit(); }; issuancerules { };"
        for body in ({"quote": quote}, {"quote": quote, "draftPolicyForAttestation": permissive}):
            s, answer, _ = post(base + "/attest/SgxEnclave" + V, body)
            assert "untrusted-root" in _maa_error(s, answer, 400, "InvalidQuote")


def test_a_verify_json_policy_reports_every_violation(world: SimWorld, tmp_path: Path) -> None:
    from sgx_quote_helper.attest.service import load_policy

    strict = load_policy(json.dumps({"mr_enclave": "ff" * 32, "min_isv_svn": 99}))
    service = make_service(tmp_path / "keys", world.root_der, policies={"SgxEnclave": strict})
    with serving(service, FixedCollateral(world.collateral)) as base:
        quote = b64url(world.quote(b""))
        s, answer, _ = post(base + "/attest/SgxEnclave" + V, {"quote": quote})
        s_oe, answer_oe, _ = post(
            base + "/attest/OpenEnclave" + V, {"report": b64url(open_enclave_report(world.quote(b"")))}
        )
    message = _maa_error(s, answer, 400, "PolicyEvaluationError")
    assert "mr-enclave" in message and "isv-svn" in message, message  # both, not the first only
    assert s_oe == 200  # the other types keep the default policy
    claims = tk.decode(answer_oe["token"])[1]
    assert claims["x-sgxqh-tcb-evaluation-data-number"] == min(
        claims["x-sgxqh-tcb-info-evaluation-data-number"],
        claims["x-sgxqh-qe-identity-evaluation-data-number"],
    )
