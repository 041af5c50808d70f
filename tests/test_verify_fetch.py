"""Collateral fetching from a loopback fake PCCS (types 5 and 3), and the CLI's --pccs path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.cli.verify import verify as verify_cmd
from sgx_quote_helper.errors import CollateralError, VerificationError
from sgx_quote_helper.testing.fakes import FakePccs
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json
from sgx_quote_helper.verify.fetch import CollateralFetcher, HttpResponse, normalise_base
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.verifier import verify

from .conftest import real_dir
from .fake_pccs import LoopbackPccs
from .verify_pki import FMSPC, NOW, SimPki, pccs_routes


def test_normalise_base() -> None:
    assert normalise_base("http://h:1/sgx/certification/v4/") == "http://h:1"
    assert normalise_base("http://h:1/") == "http://h:1"


@pytest.mark.parametrize(
    ("vector", "fmspc", "ca", "tee", "status"),
    [
        (
            "phala-sgx-v3-processor",
            "00A067110000",
            "processor",
            "sgx",
            TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        ),
        ("tdx/phala-tdx-v4", "B0C06F000000", "platform", "tdx", TcbStatus.UP_TO_DATE),
    ],
)
def test_fetch_real_collateral_reproduces_the_verdict(
    vector: str, fmspc: str, ca: str, tee: str, status: TcbStatus
) -> None:
    d = real_dir(vector)
    quote = (d / "quote.bin").read_bytes()
    original = load_dcap_qvl_json((d / "collateral-2025-06.dcap-qvl.json").read_text())
    pccs = FakePccs(pccs_routes(original, bytes.fromhex(fmspc), ca, tee))
    fetched = CollateralFetcher("https://pccs.invalid/sgx/certification/v4", pccs).fetch(
        Quote.from_bytes(quote)
    )
    assert fetched.tcb_info == original.tcb_info  # the exact signed text survives the round trip
    assert fetched.root_ca_crl == original.root_ca_crl and fetched.pck_crl == original.pck_crl
    v = verify(quote, fetched, 1750334400)
    assert v.status is status
    assert f"/{tee}/certification/v4/tcb?fmspc={fmspc}" in pccs.requests


def test_type3_quote_fetches_its_pck_certificate() -> None:
    pki = SimPki(cert_type=3)
    quote = pki.quote()
    with pytest.raises(VerificationError) as exc:
        verify(quote, pki.collateral(), NOW, root_ca=pki.root_der)
    assert (exc.value.step, exc.value.reason) == (Step.PCK_CHAIN, "pck-chain-missing")
    pccs = FakePccs(pki.pccs_routes())
    coll = CollateralFetcher("https://pccs.invalid", pccs).fetch(Quote.from_bytes(quote))
    pckcert = next(r for r in pccs.requests if "pckcert" in r)
    assert "encrypted_ppid=" + "EE" * 384 in pckcert and "qeid=3987622EE6968A54977C8626EF471235" in pckcert
    assert "pcesvn=0D00" in pckcert and "pceid=0000" in pckcert
    assert coll.pck_certificate_chain is not None
    v = verify(quote, coll, NOW, root_ca=pki.root_der)
    assert v.status is TcbStatus.UP_TO_DATE and v.accepted


def test_tcbm_mismatch_and_http_errors_are_collateral_errors() -> None:
    pki = SimPki(cert_type=3)
    routes = pki.pccs_routes()
    status, body, headers = routes["/sgx/certification/v4/pckcert"]
    routes["/sgx/certification/v4/pckcert"] = (status, body, {**headers, "SGX-TCBm": "00" * 18})
    q = Quote.from_bytes(pki.quote())
    with pytest.raises(CollateralError):
        CollateralFetcher("https://pccs.invalid", FakePccs(routes)).fetch(q)

    def missing(url: str) -> HttpResponse:
        return HttpResponse(404, b"")

    with pytest.raises(CollateralError):
        CollateralFetcher("http://127.0.0.1:9", missing).fetch(q)


def test_cli_pccs_with_explicit_root(tmp_path: Path) -> None:
    pki = SimPki()
    (tmp_path / "q.bin").write_bytes(pki.quote())
    (tmp_path / "root.der").write_bytes(pki.root_der)
    with LoopbackPccs(FakePccs(pki.pccs_routes())) as pccs:
        args = [str(tmp_path / "q.bin"), "--pccs", pccs.url, "--now", NOW.isoformat(), "--json"]
        ok = CliRunner().invoke(verify_cmd, [*args, "--root-ca", str(tmp_path / "root.der")])
        bad = CliRunner().invoke(verify_cmd, args)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["status"] == "UpToDate"
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"] == {"step": "root_ca", "reason": "untrusted-root"}
    assert FMSPC.hex().upper() == json.loads(ok.stdout)["fmspc"]


@pytest.mark.parametrize("update", ["early", "standard"])
def test_update_choice_is_passed_as_the_pcs_v4_query_parameter(update: str, tmp_path: Path) -> None:
    """``update=early|standard`` goes on ``tcb`` and ``qe/identity`` only (PCS v4), in the library
    and through ``verify --pccs URL --update``."""
    pki = SimPki()
    c = pki.collateral()
    v4 = "/sgx/certification/v4"
    routes = {
        k.replace(
            "/tcb?fmspc=" + FMSPC.hex().upper(), f"/tcb?fmspc={FMSPC.hex().upper()}&update={update}"
        ).replace("/qe/identity", f"/qe/identity?update={update}"): r
        for k, r in pccs_routes(c, FMSPC, "processor").items()
    }
    pccs = FakePccs(routes)
    CollateralFetcher("https://pccs.invalid", pccs, update=update).fetch(Quote.from_bytes(pki.quote()))
    assert f"{v4}/tcb?fmspc={FMSPC.hex().upper()}&update={update}" in pccs.requests
    assert f"{v4}/qe/identity?update={update}" in pccs.requests
    assert all("update=" not in r for r in pccs.requests if "/tcb" not in r and "/qe/identity" not in r)
    plain = FakePccs(pccs_routes(c, FMSPC, "processor"))
    CollateralFetcher("https://pccs.invalid", plain).fetch(Quote.from_bytes(pki.quote()))
    assert all("update=" not in r for r in plain.requests)  # no choice: the PCCS's default
    (tmp_path / "q.bin").write_bytes(pki.quote())
    (tmp_path / "root.der").write_bytes(pki.root_der)
    http = FakePccs(routes)
    with LoopbackPccs(http) as server:
        args = [str(tmp_path / "q.bin"), "--pccs", server.url, "--update", update, "--now", NOW.isoformat()]
        res = CliRunner().invoke(verify_cmd, [*args, "--root-ca", str(tmp_path / "root.der"), "--json"])
    assert res.exit_code == 0, res.output
    assert f"{v4}/qe/identity?update={update}" in http.requests


def test_baseline_parameters_are_checked() -> None:
    with pytest.raises(CollateralError):
        CollateralFetcher("https://pccs.invalid", FakePccs({}), update="latest")
    with pytest.raises(CollateralError):
        CollateralFetcher("https://pccs.invalid", FakePccs({}), update="early", tcb_evaluation_data_number=17)
    pki = SimPki()
    routes = {
        k.replace(
            f"fmspc={FMSPC.hex().upper()}", f"fmspc={FMSPC.hex().upper()}&tcbEvaluationDataNumber=17"
        ).replace("/qe/identity", "/qe/identity?tcbEvaluationDataNumber=17"): r
        for k, r in pccs_routes(pki.collateral(), FMSPC, "processor").items()
    }
    pccs = FakePccs(routes)
    CollateralFetcher("https://pccs.invalid", pccs, tcb_evaluation_data_number=17).fetch(
        Quote.from_bytes(pki.quote())
    )
    assert "/sgx/certification/v4/qe/identity?tcbEvaluationDataNumber=17" in pccs.requests


def test_early_and_standard_baselines_from_the_simulated_pccs(tmp_path: Path) -> None:
    """End to end against ``pccs`` in simulated mode (its history publishes 18 early, 17 standard):
    ``verify --pccs URL --update`` gets the chosen baseline, the verdict reports its numbers, and a
    minimum of 18 rejects the standard baseline at the TCB Info and QE Identity steps."""
    from sgx_quote_helper.pccs.app import make_app
    from sgx_quote_helper.pccs.store import SimulatedStore

    from .pccs_fakes import app_in_thread
    from .test_pccs_store import Sim

    sim = Sim(tmp_path / "sim")
    (tmp_path / "q.bin").write_bytes(sim.quote_a)
    (tmp_path / "root.der").write_bytes(sim.root_der)
    with app_in_thread(make_app(SimulatedStore([sim.a], sim.clock))) as base:
        common = [str(tmp_path / "q.bin"), "--pccs", base, "--root-ca", str(tmp_path / "root.der")]
        common += ["--now", str(sim.now), "--json"]
        seen = {}
        for update in ("early", "standard"):
            res = CliRunner().invoke(verify_cmd, [*common, "--update", update])
            obj = json.loads(res.stdout)
            numbers = (obj["tcb_info_evaluation_data_number"], obj["qe_identity_evaluation_data_number"])
            seen[update] = (res.exit_code, numbers, obj["status"])
        strict = CliRunner().invoke(
            verify_cmd, [*common, "--update", "standard", "--min-tcb-evaluation-data-number", "18"]
        )
    # the early baseline (18) already marks this platform out of date; the standard one (17) does not
    assert seen["early"] == (1, (18, 18), "OutOfDate")
    assert seen["standard"][:2] == (0, (17, 17)) and seen["standard"][2] != "OutOfDate"
    assert strict.exit_code == 1
    assert [v["step"] for v in json.loads(strict.stdout)["violations"]] == ["tcb_info", "qe_identity"]
