"""``sgx-quote-helper verify``: exit codes 0/1/2, one JSON object with --json, policy flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli.verify import parse_now
from sgx_quote_helper.cli.verify import verify as verify_cmd

from .conftest import real_dir

KEYS = {"status", "platform_status", "qe_status", "advisory_ids", "qe_advisory_ids", "accepted", "error"}


def run(*args: str) -> tuple[int, dict[str, object], str]:
    res = CliRunner().invoke(verify_cmd, [*args, "--json"])
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.output  # exactly one JSON object on stdout
    obj = json.loads(lines[0])
    assert set(obj) >= KEYS
    return res.exit_code, obj, res.stderr


def _phala() -> tuple[str, str]:
    d = real_dir("phala-sgx-v3-processor")
    return str(d / "quote.bin"), str(d / "collateral-2025-06.dcap-qvl.json")


def test_accepted_real_quote() -> None:
    q, c = _phala()
    code, obj, _ = run(q, "--collateral", c, "--now", "1750334400")
    assert code == 0 and obj["accepted"] is True and obj["error"] is None
    assert obj["status"] == "ConfigurationAndSWHardeningNeeded"
    assert obj["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert obj["mr_enclave"] and obj["fmspc"] == "00A067110000"


def test_human_output_and_reason_on_stderr() -> None:
    q, c = _phala()
    ok = CliRunner().invoke(verify_cmd, [q, "--collateral", c, "--now", "2025-06-19T12:00:00Z"])
    assert ok.exit_code == 0 and "ConfigurationAndSWHardeningNeeded" in ok.stdout
    late = CliRunner().invoke(verify_cmd, [q, "--collateral", c, "--now", "2027-01-01"])
    assert late.exit_code == 1 and late.stdout == ""
    assert len(late.stderr.strip().splitlines()) == 1 and "crl" in late.stderr


def test_expired_collateral_is_rejected_with_step() -> None:
    q, c = _phala()
    code, obj, _ = run(q, "--collateral", c, "--now", "1850334400")
    assert code == 1 and obj["status"] is None and obj["accepted"] is False
    assert "mr_enclave" not in obj and obj["unverified_body"]["mr_enclave"]  # claims, not facts
    assert obj["error"] == {"step": "crl", "reason": "root-ca-crl-expired"}


def test_debug_is_a_policy_rejection_that_keeps_the_status() -> None:
    d = real_dir("automata-sgx-v3-debug")
    args = [
        str(d / "quote.bin"),
        "--collateral",
        str(d / "collateral-2024-08.dcap-qvl.json"),
        "--now",
        "1724634000",
    ]
    code, obj, _ = run(*args)
    assert code == 1 and obj["error"] == {"step": "policy", "reason": "debug"}
    assert obj["status"] == "ConfigurationAndSWHardeningNeeded"
    code, obj, _ = run(*args, "--allow-debug")
    assert code == 0 and obj["accepted"] is True


def test_policy_flags_and_file(tmp_path: Path) -> None:
    q, c = _phala()
    base = [q, "--collateral", c, "--now", "1750334400"]
    code, obj, _ = run(*base, "--mrenclave", "00" * 32)
    assert code == 1 and obj["error"] == {"step": "policy", "reason": "mr-enclave"}
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"allowed_statuses": ["UpToDate"]}))
    code, obj, _ = run(*base, "--policy", str(policy))
    assert code == 1 and obj["error"]["reason"] == "tcb-status"  # type: ignore[index]
    policy.write_text(json.dumps({"min_isv_svn": 0, "report_data_prefix": b"Hello".hex()}))
    assert run(*base, "--policy", str(policy))[0] == 0


@pytest.mark.parametrize(
    "mutate",
    ["missing-quote", "not-a-quote", "bad-collateral", "bad-now", "bad-policy", "no-collateral"],
)
def test_bad_input_exits_2(tmp_path: Path, mutate: str) -> None:
    q, c = _phala()
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x03\x00 definitely not a quote")
    bad_coll = tmp_path / "c.json"
    bad_coll.write_text('{"tcb_info": 5}')
    policy = tmp_path / "p.json"
    policy.write_text('{"no_such_key": 1}')
    args = {
        "missing-quote": [str(tmp_path / "nope"), "--collateral", c],
        "not-a-quote": [str(junk), "--collateral", c],
        "bad-collateral": [q, "--collateral", str(bad_coll)],
        "bad-now": [q, "--collateral", c, "--now", "yesterday"],
        "bad-policy": [q, "--collateral", c, "--policy", str(policy)],
        "no-collateral": [q],
    }[mutate]
    code, obj, err = run(*args)
    assert code == 2 and obj["accepted"] is False and obj["error"]["step"] == "input"  # type: ignore[index]
    assert err.strip()


def test_parse_now_forms() -> None:
    assert parse_now("1750334400") == parse_now("2025-06-19T12:00:00Z") == parse_now("2025-06-19T12:00:00")


def test_bench_verify_json_is_one_line() -> None:
    from sgx_quote_helper.cli.bench import bench

    q, c = _phala()
    res = CliRunner().invoke(
        bench,
        ["verify", "--quote", q, "--collateral", c, "--now", "1750334400", "--seconds", "0.05", "--json"],
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["cold_per_s"] > 0 and obj["warm_per_s"] > 0
    assert obj["status"] == "ConfigurationAndSWHardeningNeeded"
    assert "measuring" in res.stderr


def _tdx_args() -> list[str]:
    d = real_dir("tdx/phala-tdx-v4")
    return [
        str(d / "quote.bin"),
        "--collateral",
        str(d / "collateral-2025-06.dcap-qvl.json"),
        "--now",
        "1750334400",
    ]


def test_sgx_only_flags_reject_a_tdx_quote_with_every_violation(tmp_path: Path) -> None:
    """Fail closed: ``--min-isv-svn`` / ``--isv-prod-id`` cannot be evaluated on a TD (exit 1)."""
    code, obj, err = run(*_tdx_args(), "--min-isv-svn", "200", "--isv-prod-id", "7")
    assert code == 1 and obj["accepted"] is False and obj["status"] == "UpToDate"
    assert [(v["step"], v["reason"], v["constraint"]) for v in obj["violations"]] == [  # type: ignore[union-attr]
        ("policy", "isv-prod-id-not-applicable", "isv_prod_id"),
        ("policy", "min-isv-svn-not-applicable", "min_isv_svn"),
    ]
    assert "isv-prod-id-not-applicable" in err and "min-isv-svn-not-applicable" in err
    policy = tmp_path / "p.json"
    policy.write_text('{"mr_enclave": "' + "00" * 32 + '"}')
    code, obj, _ = run(*_tdx_args(), "--policy", str(policy))
    assert code == 1 and obj["error"] == {"step": "policy", "reason": "mr-enclave-not-applicable"}
    human = CliRunner().invoke(verify_cmd, [*_tdx_args(), "--isv-prod-id", "7"])
    assert human.exit_code == 1 and "isv-prod-id-not-applicable" in human.stderr
    assert CliRunner().invoke(verify_cmd, _tdx_args()).exit_code == 0


def test_min_tcb_evaluation_data_number_flag() -> None:
    q, c = _phala()
    code, obj, _ = run(q, "--collateral", c, "--now", "1750334400", "--min-tcb-evaluation-data-number", "17")
    assert code == 0 and obj["tcb_info_evaluation_data_number"] == 17
    assert obj["qe_identity_evaluation_data_number"] == 17
    code, obj, _ = run(q, "--collateral", c, "--now", "1750334400", "--min-tcb-evaluation-data-number", "18")
    assert code == 1
    assert [v["step"] for v in obj["violations"]] == ["tcb_info", "qe_identity"]  # type: ignore[union-attr]
    assert obj["status"] == "ConfigurationAndSWHardeningNeeded"  # authentic: the facts stay reported


def test_update_needs_pccs() -> None:
    q, c = _phala()
    code, obj, _ = run(q, "--collateral", c, "--update", "early")
    assert code == 2 and obj["error"] == {"step": "input", "reason": "usage"}
