"""Quotes from the simulated platform (engine/) verify with its SIMULATED root passed explicitly,
and are rejected at the root pinning step without it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.cli.verify import verify as verify_cmd
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import ParseError, VerificationError
from sgx_quote_helper.sim import collateral as sim_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.verify.collateral import Collateral, load_dcap_qvl_json
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.verifier import Verifier, verify

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
KEY_ID = AttKeyId.ecdsa_p256_qe3()


def _simulate(path: Path, cert_data: str = "pck-chain") -> tuple[bytes, Collateral, bytes]:
    platform = Platform.init(path, now=NOW, cert_data=cert_data)  # type: ignore[arg-type]
    engine = SimulatedEngine(platform)
    engine.init_quote(KEY_ID, True)
    report = platform.ereport(QE_TARGET_INFO, b"simulated verify test", mr_enclave=b"\x11" * 32)
    quote = engine.get_quote(report, KEY_ID).quote
    coll = load_dcap_qvl_json(json.dumps(sim_collateral.quote_collateral(platform, NOW)))
    return quote, coll, sim_collateral.root_ca_der(platform)


@pytest.mark.parametrize("cert_data", ["pck-chain", "encrypted-ppid"])
def test_simulated_quote_verifies_only_with_its_root(tmp_path: Path, cert_data: str) -> None:
    quote, coll, root = _simulate(tmp_path / "p", cert_data)
    v = verify(quote, coll, NOW, root_ca=root)
    assert v.status is TcbStatus.UP_TO_DATE and v.accepted
    assert v.identity()["mr_enclave"] == "11" * 32
    with pytest.raises(VerificationError) as exc:
        verify(quote, coll, NOW)  # Intel's production root
    assert (exc.value.step, exc.value.reason) == (Step.ROOT_CA, "untrusted-root")


def test_simulated_quote_every_signed_byte(tmp_path: Path) -> None:
    quote, coll, root = _simulate(tmp_path / "p")
    v = Verifier(root)
    assert v.verify(quote, coll, NOW).accepted
    for off in [*range(0, 432), *range(564, 564 + 384)]:
        bad = quote[:off] + bytes([quote[off] ^ 0x80]) + quote[off + 1 :]
        with pytest.raises((VerificationError, ParseError)):
            v.verify(bad, coll, NOW)


def test_cli_root_ca_pem_or_der(tmp_path: Path) -> None:
    quote, coll, root = _simulate(tmp_path / "p")
    (tmp_path / "q.bin").write_bytes(quote)
    (tmp_path / "c.json").write_text(coll.to_dcap_qvl_json())
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "root.pem").write_bytes(
        x509.load_der_x509_certificate(root).public_bytes(serialization.Encoding.PEM)
    )
    base = [str(tmp_path / "q.bin"), "--collateral", str(tmp_path / "c.json"), "--now", NOW.isoformat()]
    ok = CliRunner().invoke(verify_cmd, [*base, "--root-ca", str(tmp_path / "root.pem")])
    assert ok.exit_code == 0, ok.output
    assert "UpToDate" in ok.stdout
    rejected = CliRunner().invoke(verify_cmd, [*base, "--json"])
    assert rejected.exit_code == 1
    assert json.loads(rejected.stdout)["error"] == {"step": "root_ca", "reason": "untrusted-root"}


@pytest.mark.parametrize("cert_data", ["pck-chain", "encrypted-ppid"])
def test_fetch_from_our_pccs_service(tmp_path: Path, cert_data: str) -> None:
    """The fetcher against the project's own collateral service (pccs/, simulated store)."""
    from sgx_quote_helper.pccs.app import make_app
    from sgx_quote_helper.pccs.store import SimulatedStore
    from sgx_quote_helper.verify.fetch import CollateralFetcher, urllib_getter

    from .pccs_fakes import Clock, app_in_thread

    platform = Platform.init(tmp_path / "p", now=NOW, cert_data=cert_data)  # type: ignore[arg-type]
    engine = SimulatedEngine(platform)
    engine.init_quote(KEY_ID, True)
    quote = engine.get_quote(platform.ereport(QE_TARGET_INFO, b"via pccs"), KEY_ID).quote
    with app_in_thread(make_app(SimulatedStore([platform], Clock(NOW)))) as base:
        coll = CollateralFetcher(base, urllib_getter(5)).fetch(Quote.from_bytes(quote))
    assert (coll.pck_certificate_chain is not None) == (cert_data == "encrypted-ppid")
    v = verify(quote, coll, NOW, root_ca=sim_collateral.root_ca_der(platform))
    assert v.status is TcbStatus.UP_TO_DATE and v.accepted
