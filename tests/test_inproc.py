"""The app entry point: in-process or out-of-process by SGX_AESM_ADDR, never both in one process."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper import inproc
from sgx_quote_helper.abi.keyid import QeReportInfo
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Report, ReportBody, TargetInfo
from sgx_quote_helper.engine.dcap import DcapEngine
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.inproc import InProcessProvider, OutOfProcessProvider, QuoteProvider
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.sim.platform import Platform
from tests.daemon_thread import running_daemon
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    inproc._reset_for_tests()
    yield
    inproc._reset_for_tests()


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform.open(tmp_path / "platform", create=True)


def sim_env(platform: Platform) -> dict[str, str]:
    return {"SGX_QUOTE_HELPER_ENGINE": "simulated", "SGX_QUOTE_HELPER_STATE": str(platform.state.path)}


def check_quote(quote: bytes, report: Report) -> Quote:
    """The quote carries ``report``'s body and its attestation key's signature verifies."""
    parsed = Quote.from_bytes(quote)
    assert parsed.body == report.body
    sig = parsed.signature_data
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
    der = encode_dss_signature(
        int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
    )
    key.verify(der, parsed.signed_bytes, ec.ECDSA(hashes.SHA256()))
    return parsed


def quote_round(provider: QuoteProvider, platform: Platform) -> None:
    target = provider.target_info()
    report = platform.ereport(target, b"app data", mr_enclave=b"\x5e" * 32)
    nonce = b"\x07" * 16
    app_target = TargetInfo(mr_enclave=b"\x5e" * 32)
    result = provider.get_quote(report, QeReportInfo(nonce, app_target))
    check_quote(result.quote, report)
    assert result.qe_report_info is not None
    qe_report = Report.from_bytes(result.qe_report_info.qe_report)
    assert qe_report.body.report_data == hashlib.sha256(nonce + result.quote).digest() + bytes(32)


def test_unset_means_in_process(platform: Platform) -> None:
    provider = QuoteProvider.from_environment(sim_env(platform))
    assert provider.mode == inproc.IN_PROCESS == inproc.current_mode()
    assert isinstance(provider, InProcessProvider)
    assert isinstance(provider.engine, SimulatedEngine)
    quote_round(provider, platform)
    assert QuoteProvider.from_environment(sim_env(platform)) is provider  # one engine per process


def test_set_even_empty_means_out_of_process(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "aesm.socket"
    with running_daemon(AesmService(SimulatedEngine(platform)), sock):
        provider = QuoteProvider.from_environment({"SGX_AESM_ADDR": ""}, socket_path=sock)
        assert provider.mode == inproc.OUT_OF_PROCESS
        assert isinstance(provider, OutOfProcessProvider)
        quote_round(provider, platform)
        init = provider.init_quote()
        assert init.pub_key_id is not None and len(init.pub_key_id) == 32
        provider.close()


def test_in_process_hardware_engine(fake_dcap: FakeDcap) -> None:  # noqa: F811
    fake_dcap.reset()
    engine = DcapEngine(library=str(fake_dcap.qe3), pce_library=None, device_root=fake_dcap.device_root)
    provider = InProcessProvider(engine, environ={})
    try:
        assert provider.target_info().mr_enclave == Quote.from_bytes(fake_dcap.quote).qe_report.mr_enclave
        assert provider.get_quote(Report(ReportBody())).quote == fake_dcap.quote
    finally:
        provider.close()
        fake_dcap.reset()


def test_default_engine_is_auto_and_refuses_without_hardware(platform: Platform) -> None:
    if Path("/dev/sgx_enclave").exists():
        pytest.skip("this machine has SGX: auto would start the hardware engine")
    with pytest.raises(ConfigError) as err:
        QuoteProvider.from_environment({"SGX_QUOTE_HELPER_STATE": str(platform.state.path)})
    assert "--engine simulated" in str(err.value)
    assert inproc.current_mode() is None  # the failed start commits the process to nothing
    QuoteProvider.from_environment({"SGX_AESM_ADDR": ""})  # so out-of-process is still allowed


def test_in_process_then_out_of_process_is_refused(platform: Platform) -> None:
    QuoteProvider.from_environment(sim_env(platform))
    with pytest.raises(ConfigError, match="already quotes in-process"):
        QuoteProvider.from_environment({"SGX_AESM_ADDR": "1"})
    with pytest.raises(ConfigError, match="already quotes in-process"):
        OutOfProcessProvider()


def test_out_of_process_then_in_process_is_refused(platform: Platform) -> None:
    QuoteProvider.from_environment({"SGX_AESM_ADDR": ""})
    with pytest.raises(ConfigError, match="already quotes out-of-process"):
        QuoteProvider.from_environment(sim_env(platform))
    with pytest.raises(ConfigError, match="already quotes out-of-process"):
        InProcessProvider(SimulatedEngine(platform), environ={})


def test_in_process_engine_refused_while_aesm_addr_is_set(platform: Platform) -> None:
    with pytest.raises(ConfigError, match="SGX_AESM_ADDR is set"):
        InProcessProvider(SimulatedEngine(platform), environ={"SGX_AESM_ADDR": ""})
    assert inproc.current_mode() is None


def test_module_get_quote_uses_os_environ(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGX_AESM_ADDR", raising=False)
    for key, value in sim_env(platform).items():
        monkeypatch.setenv(key, value)
    target = QuoteProvider.from_environment().target_info()
    report = platform.ereport(target, b"via get_quote")
    check_quote(inproc.get_quote(report).quote, report)
