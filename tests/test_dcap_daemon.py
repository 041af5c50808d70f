"""End to end: AESM client -> our daemon -> DCAP hardware engine -> fake libsgx_qe3_logic.so.

The bytes the fake library produces (a real quote, QE target info, ECDSA_ID, QE report) must reach
the client unchanged, and every quote3_error_t must come back as the AESM errorCode Intel's ECDSA
quote service bundle sends (``ecdsa_quote_service_bundle.cpp: quote3_error_to_aesm_error``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus, QuoteLibStatus
from sgx_quote_helper.abi.keyid import AttKeyId, QeReportInfo
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Report, ReportBody, TargetInfo
from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.engine.dcap import DcapEngine
from sgx_quote_helper.errors import AesmError
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.wire import messages as m
from tests.daemon_thread import running_daemon
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)

KEY = AttKeyId.ecdsa_p256_qe3()
Q, A = QuoteLibStatus, AesmStatus

#: Intel's quote3_error_to_aesm_error, case by case; every other value gives UNEXPECTED_ERROR (1)
INTEL_BUNDLE_MAPPING: dict[int, AesmStatus] = {
    Q.ERROR_UNEXPECTED: A.UNEXPECTED_ERROR,
    Q.ERROR_INVALID_PARAMETER: A.PARAMETER_ERROR,
    Q.ERROR_OUT_OF_MEMORY: A.OUT_OF_MEMORY_ERROR,
    Q.ERROR_ECDSA_ID_MISMATCH: A.ECDSA_ID_MISMATCH,
    Q.PATHNAME_BUFFER_OVERFLOW_ERROR: A.PATHNAME_BUFFER_OVERFLOW_ERROR,
    Q.FILE_ACCESS_ERROR: A.FILE_ACCESS_ERROR,
    Q.ERROR_STORED_KEY: A.ERROR_STORED_KEY,
    Q.ERROR_PUB_KEY_ID_MISMATCH: A.PUB_KEY_ID_MISMATCH,
    Q.ERROR_INVALID_PCE_SIG_SCHEME: A.INVALID_PCE_SIG_SCHEME,
    Q.ATT_KEY_BLOB_ERROR: A.ATT_KEY_BLOB_ERROR,
    Q.UNSUPPORTED_ATT_KEY_ID: A.UNSUPPORTED_ATT_KEY_ID,
    Q.UNSUPPORTED_LOADING_POLICY: A.UNSUPPORTED_LOADING_POLICY,
    Q.INTERFACE_UNAVAILABLE: A.INTERFACE_UNAVAILABLE,
    Q.PLATFORM_LIB_UNAVAILABLE: A.PLATFORM_LIB_UNAVAILABLE,
    Q.ATT_KEY_NOT_INITIALIZED: A.ATT_KEY_NOT_INITIALIZED,
    Q.ATT_KEY_CERT_DATA_INVALID: A.ATT_KEY_CERT_DATA_INVALID,
    Q.NO_PLATFORM_CERT_DATA: A.NO_PLATFORM_CERT_DATA,
    Q.OUT_OF_EPC: A.OUT_OF_EPC,
    Q.ERROR_REPORT: A.ERROR_REPORT,
    Q.ENCLAVE_LOST: A.ENCLAVE_LOST,
    Q.INVALID_REPORT: A.INVALID_REPORT,
    Q.ENCLAVE_LOAD_ERROR: A.ENCLAVE_LOAD_ERROR,
    Q.UNABLE_TO_GENERATE_QE_REPORT: A.UNABLE_TO_GENERATE_QE_REPORT,
    Q.KEY_CERTIFCATION_ERROR: A.KEY_CERTIFICATION_ERROR,
    Q.NETWORK_ERROR: A.NETWORK_ERROR,
    Q.MESSAGE_ERROR: A.MSG_ERROR,
}
#: every quote3_error_t, plus codes nobody knows and a raw sgx_status_t (0x200f), all as aesmd:
#: BUSY, NO_DEVICE and SERVICE_UNAVAILABLE have no case in Intel's table, so they answer 1 too
STATUSES = [s for s in QuoteLibStatus if s != Q.SUCCESS] + [0xE036, 0xE0AB, 0x200F]


@pytest.fixture
def daemon(fake_dcap: FakeDcap, tmp_path: Path) -> Iterator[tuple[FakeDcap, QuoteClient]]:  # noqa: F811
    fake_dcap.reset()
    engine = DcapEngine(library=str(fake_dcap.qe3), pce_library=None, device_root=fake_dcap.device_root)
    sock = tmp_path / "aesm.socket"
    try:
        with running_daemon(AesmService(engine), sock), QuoteClient(sock, retry_deadline=0) as client:
            yield fake_dcap, client
    finally:
        engine.close()
        fake_dcap.reset()


def app_report() -> Report:
    return Report(body=ReportBody(mr_enclave=b"\x77" * 32, report_data=b"\x42" * 64))


def test_quote_flow_bytes_are_the_library_bytes(daemon: tuple[FakeDcap, QuoteClient]) -> None:
    fake, client = daemon
    real = Quote.from_bytes(fake.quote)
    assert client.get_supported_att_key_ids() == [KEY]
    assert client.select_att_key_id() == KEY

    size_query = client.init_quote_ex(want_pub_key_id=False)
    assert size_query.pub_key_id_size == 32
    assert size_query.target_info.to_bytes() == bytes(512)
    with pytest.raises(AesmError) as no_key:
        client.get_quote_size_ex()
    assert no_key.value.status == AesmStatus.ATT_KEY_NOT_INITIALIZED

    init = client.init_quote_ex()
    assert init.target_info.mr_enclave == real.qe_report.mr_enclave
    assert init.target_info.attributes == real.qe_report.attributes
    sig = real.signature_data
    assert init.pub_key_id == hashlib.sha256(sig.attestation_key + sig.qe_cert.qe_auth_data).digest()
    assert fake.control.fake_dcap_last_refresh() == 0

    size = client.get_quote_size_ex()
    assert size == len(fake.quote)
    plain = client.get_quote_ex(app_report(), buf_size=size + 100)
    assert plain.quote == fake.quote + bytes(100)  # aesmd's buffer: quote then zero padding
    assert plain.trimmed() == fake.quote
    assert plain.qe_report_info is None


def test_qe_report_info_round_trip(daemon: tuple[FakeDcap, QuoteClient]) -> None:
    fake, client = daemon
    client.init_quote_ex()
    nonce = b"\x10" * 16
    sent = QeReportInfo(nonce, TargetInfo(mr_enclave=b"\x99" * 32))
    result = client.get_quote_ex(app_report(), qe_report_info=sent)
    assert result.quote == fake.quote
    back = result.qe_report_info
    assert back is not None
    assert (back.nonce, back.app_enclave_target_info) == (nonce, sent.app_enclave_target_info)
    qe_body = Quote.from_bytes(fake.quote).qe_report.to_bytes()
    assert back.qe_report == qe_body[:320] + nonce + b"\x99" * 32 + bytes(16) + b"\xa5" * 32 + b"\x5a" * 16


def test_error_reply_still_echoes_qe_report_info(daemon: tuple[FakeDcap, QuoteClient]) -> None:
    fake, client = daemon
    client.init_quote_ex()
    fake.force("quote", Q.INVALID_REPORT)
    info = QeReportInfo(b"\x01" * 16, TargetInfo()).to_bytes()
    req = m.GetQuoteExRequest(app_report().to_bytes(), KEY.to_bytes(), info, 8192, 15000)
    resp = client.transact(req)
    assert isinstance(resp, m.GetQuoteExResponse)
    assert resp.error_code == AesmStatus.INVALID_REPORT
    assert resp.quote is None
    assert resp.qe_report_info == info


@pytest.mark.parametrize("call", ["init", "size", "quote"])
def test_every_library_status_maps_as_intel_bundle(daemon: tuple[FakeDcap, QuoteClient], call: str) -> None:
    fake, client = daemon
    client.init_quote_ex()
    for status in STATUSES:
        fake.force(call, status)
        with pytest.raises(AesmError) as err:
            if call == "init":
                client.init_quote_ex()
            elif call == "size":
                client.get_quote_size_ex()
            else:
                client.get_quote_ex(app_report(), buf_size=len(fake.quote))
        expected = INTEL_BUNDLE_MAPPING.get(int(status), AesmStatus.UNEXPECTED_ERROR)
        assert err.value.status == expected, f"{QuoteLibStatus(status).name} on {call}"
    fake.force(call, 0)
    assert client.get_quote_ex(app_report()).trimmed() == fake.quote


def test_get_quote_ex_buffer_goes_to_the_library_without_a_size_query(
    daemon: tuple[FakeDcap, QuoteClient],
) -> None:
    fake, client = daemon
    client.init_quote_ex()
    sizes = fake.calls("size")
    reply = client.get_quote_ex(app_report(), buf_size=len(fake.quote) + 7)
    assert reply.quote == fake.quote + bytes(7)
    assert fake.control.fake_dcap_last_quote_size() == len(fake.quote) + 7  # aesmd: quote_size = buf_size
    assert fake.calls("size") == sizes  # no hidden sgx_ql_get_quote_size per quote
    with pytest.raises(AesmError) as err:
        client.get_quote_ex(app_report(), buf_size=len(fake.quote) - 1)
    assert err.value.status == AesmStatus.PARAMETER_ERROR  # the library's INVALID_PARAMETER


def test_closed_engine_answers_service_unavailable(fake_dcap: FakeDcap, tmp_path: Path) -> None:  # noqa: F811
    fake_dcap.reset()
    engine = DcapEngine(library=str(fake_dcap.qe3), pce_library=None, device_root=fake_dcap.device_root)
    engine.close()
    try:
        with (
            running_daemon(AesmService(engine), tmp_path / "s"),
            QuoteClient(tmp_path / "s", retry_deadline=0) as client,
            pytest.raises(AesmError) as err,
        ):
            client.init_quote_ex()
        assert err.value.status == AesmStatus.SERVICE_UNAVAILABLE  # aesmd: not initialized -> 30
    finally:
        fake_dcap.reset()
