"""service.py: AESM semantics (aesm-protocol.md §6), one test per checklist item of §8 (5-8)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.codes import AesmStatus, QuoteLibStatus
from sgx_quote_helper.abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from sgx_quote_helper.abi.report import Report, ReportBody, TargetInfo
from sgx_quote_helper.errors import EngineError, EngineUnavailableError, RemoteProtocolError
from sgx_quote_helper.service import AesmService, aesm_status_for
from sgx_quote_helper.testing.fakes import FAKE_QE_MRENCLAVE, FAKE_QUOTE_SIZE, FakeEngine, fake_quote
from sgx_quote_helper.wire import messages as m

KEY = AttKeyId.ecdsa_p256_qe3()
KEY_RAW = KEY.to_bytes()
GOOD_REPORT = Report(ReportBody(report_data=b"r" * 64), key_id=b"k" * 32, mac=b"m" * 16)
APP_TI = TargetInfo(mr_enclave=b"A" * 32)
INFO = QeReportInfo(b"n" * 16, APP_TI)


def service(**kw: object) -> tuple[AesmService, FakeEngine]:
    eng = FakeEngine(**kw)  # type: ignore[arg-type]
    return AesmService(eng, version="t", instance_id="i", pid=7), eng


def ready() -> tuple[AesmService, FakeEngine]:
    return service(initialised=True)


# ---- item 5: key id discovery and selection


def test_supported_num_is_one() -> None:
    svc, _ = service()
    assert svc.handle(m.GetSupportedAttKeyIDNumRequest(15000)) == m.GetSupportedAttKeyIDNumResponse(
        AesmStatus.SUCCESS, 1
    )


def test_supported_num_zero_is_service_unavailable_with_num() -> None:
    svc, _ = service(key_ids=[])
    assert svc.handle(m.GetSupportedAttKeyIDNumRequest()) == m.GetSupportedAttKeyIDNumResponse(
        AesmStatus.SERVICE_UNAVAILABLE, 0
    )


def test_supported_ids_exact_buffer() -> None:
    svc, _ = service()
    resp = svc.handle(m.GetSupportedAttKeyIDsRequest(256))
    assert resp == m.GetSupportedAttKeyIDsResponse(AesmStatus.SUCCESS, KEY_RAW)
    assert KEY_RAW[154:158] == (2).to_bytes(4, "little")  # algorithm_id ECDSA-P256, what Enarx picks


@pytest.mark.parametrize("size", [0, 255, 257, 512])
def test_supported_ids_wrong_buffer_is_parameter_error(size: int) -> None:
    svc, _ = service()
    assert svc.handle(m.GetSupportedAttKeyIDsRequest(size)) == m.GetSupportedAttKeyIDsResponse(
        AesmStatus.PARAMETER_ERROR
    )


def test_select_without_list_returns_the_ecdsa_id() -> None:
    svc, _ = service()
    assert svc.handle(m.SelectAttKeyIDRequest(None, 15000)) == m.SelectAttKeyIDResponse(
        AesmStatus.SUCCESS, KEY_RAW
    )


def test_select_matches_by_158_byte_base_and_returns_the_entry() -> None:
    svc, _ = service()
    other = AttKeyId(algorithm_id=0)  # EPID: not offered
    same_base = AttKeyId(spid=b"s" * 16, att_key_type=1)  # differs only after byte 158
    raw = AttKeyIdList((other, same_base)).to_bytes()
    assert svc.handle(m.SelectAttKeyIDRequest(raw)) == m.SelectAttKeyIDResponse(
        AesmStatus.SUCCESS, same_base.to_bytes()
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes(7),
        AttKeyIdList((KEY,), id=1).to_bytes(),
        AttKeyIdList((KEY,), version=1).to_bytes(),
        AttKeyIdList((KEY,) * 11).to_bytes(),
        AttKeyIdList((KEY,)).to_bytes() + b"\0",
        AttKeyIdList((KEY,)).to_bytes()[:-1],
    ],
    ids=["empty", "short-header", "id", "version", "11-entries", "long", "short"],
)
def test_select_bad_list_is_parameter_error(raw: bytes) -> None:
    svc, _ = service()
    assert svc.handle(m.SelectAttKeyIDRequest(raw)) == m.SelectAttKeyIDResponse(AesmStatus.PARAMETER_ERROR)


def test_select_no_match_is_38() -> None:
    svc, _ = service()
    raw = AttKeyIdList((AttKeyId(algorithm_id=0), AttKeyId(prod_id=2))).to_bytes()
    assert svc.handle(m.SelectAttKeyIDRequest(raw)) == m.SelectAttKeyIDResponse(
        AesmStatus.UNSUPPORTED_ATT_KEY_ID
    )


# ---- item 6: InitQuoteEx


@pytest.mark.parametrize("garbage", [None, 0, 140393291379042, 0xFFFFFFFFFFFFFFFF])
def test_init_size_query_ignores_buf_size(garbage: int | None) -> None:
    svc, eng = service()
    resp = svc.handle(m.InitQuoteExRequest(KEY_RAW, False, garbage))
    assert resp == m.InitQuoteExResponse(AesmStatus.SUCCESS, target_info=bytes(512), pub_key_id_size=32)
    assert not eng.initialised  # a size query does not create the key


def test_init_with_buffer_returns_target_info_and_ecdsa_id() -> None:
    svc, eng = service()
    resp = svc.handle(m.InitQuoteExRequest(KEY_RAW, True, 32, 15000))
    assert resp == m.InitQuoteExResponse(AesmStatus.SUCCESS, eng.target_info.to_bytes(), 32, eng.pub_key_id)
    assert eng.initialised


@pytest.mark.parametrize("size", [None, 0, 16, 33, 64])
def test_init_with_buffer_needs_32(size: int | None) -> None:
    svc, _ = service()
    resp = svc.handle(m.InitQuoteExRequest(KEY_RAW, True, size))
    assert isinstance(resp, m.InitQuoteExResponse)
    assert (
        resp.error_code == AesmStatus.PARAMETER_ERROR and resp.target_info is None and resp.pub_key_id is None
    )
    assert resp.pub_key_id_size is not None  # always sent


@pytest.mark.parametrize(
    ("raw", "code"), [(None, 3), (KEY_RAW[:255], 3), (AttKeyId(prod_id=2).to_bytes(), 38)]
)
def test_init_key_id_checks(raw: bytes | None, code: int) -> None:
    svc, _ = service()
    resp = svc.handle(m.InitQuoteExRequest(raw, True, 32))
    assert isinstance(resp, m.InitQuoteExResponse) and resp.error_code == code


def test_init_accepts_longer_key_id_matching_by_base() -> None:
    svc, _ = service()
    resp = svc.handle(m.InitQuoteExRequest(KEY_RAW + b"extra", True, 32))
    assert isinstance(resp, m.InitQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS


# ---- item 7: GetQuoteSizeEx and GetQuoteEx


def test_quote_size_before_init_is_42_then_size() -> None:
    svc, _ = service()
    assert svc.handle(m.GetQuoteSizeExRequest(KEY_RAW)) == m.GetQuoteSizeExResponse(
        AesmStatus.ATT_KEY_NOT_INITIALIZED
    )
    svc.handle(m.InitQuoteExRequest(KEY_RAW, True, 32))
    assert svc.handle(m.GetQuoteSizeExRequest(KEY_RAW)) == m.GetQuoteSizeExResponse(
        AesmStatus.SUCCESS, FAKE_QUOTE_SIZE
    )


def test_quote_size_key_checks() -> None:
    svc, _ = ready()
    assert svc.handle(m.GetQuoteSizeExRequest(None)) == m.GetQuoteSizeExResponse(AesmStatus.PARAMETER_ERROR)
    assert svc.handle(
        m.GetQuoteSizeExRequest(AttKeyId(algorithm_id=3).to_bytes())
    ) == m.GetQuoteSizeExResponse(AesmStatus.UNSUPPORTED_ATT_KEY_ID)


@pytest.mark.parametrize("extra", [0, 1, 100, 8192 - FAKE_QUOTE_SIZE])
def test_quote_is_zero_padded_to_buf_size(extra: int) -> None:
    svc, _ = ready()
    size = FAKE_QUOTE_SIZE + extra
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, size))
    assert isinstance(resp, m.GetQuoteExResponse)
    assert resp.error_code == AesmStatus.SUCCESS and resp.qe_report_info is None
    assert resp.quote == fake_quote(GOOD_REPORT) + bytes(extra)
    assert len(resp.quote) == size  # Enarx requires exactly buf_size


def test_quote_buffer_too_small_is_3() -> None:
    svc, _ = ready()
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, FAKE_QUOTE_SIZE - 1))
    assert resp == m.GetQuoteExResponse(AesmStatus.PARAMETER_ERROR)


def test_quote_huge_buffer_is_out_of_memory() -> None:
    svc, _ = ready()
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, 0xFFFFFFFF))
    assert resp == m.GetQuoteExResponse(AesmStatus.OUT_OF_MEMORY_ERROR)


def test_qe_report_info_echoed_and_filled() -> None:
    svc, _ = ready()
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, INFO.to_bytes(), 8192))
    assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
    assert resp.qe_report_info is not None and len(resp.qe_report_info) == 960
    back = QeReportInfo.from_bytes(resp.qe_report_info)
    assert back.nonce == INFO.nonce and back.app_enclave_target_info == APP_TI
    qe = Report.from_bytes(back.qe_report)
    assert qe.body.mr_enclave == FAKE_QE_MRENCLAVE
    # report_data hashes the real quote, not the padding
    assert qe.body.report_data == hashlib.sha256(INFO.nonce + fake_quote(GOOD_REPORT)).digest() + bytes(32)


def test_qe_report_info_echoed_unchanged_on_error() -> None:
    svc, _ = service()  # no key yet: 42
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, INFO.to_bytes(), 8192))
    assert resp == m.GetQuoteExResponse(AesmStatus.ATT_KEY_NOT_INITIALIZED, None, INFO.to_bytes())


# ---- item 8: validation as AESM does


@pytest.mark.parametrize(
    ("report", "info", "key", "code"),
    [
        (bytes(431), None, KEY_RAW, 3),
        (bytes(433), None, KEY_RAW, 3),
        (b"", None, KEY_RAW, 3),
        (GOOD_REPORT.to_bytes(), bytes(959), KEY_RAW, 3),
        (GOOD_REPORT.to_bytes(), bytes(961), KEY_RAW, 3),
        (GOOD_REPORT.to_bytes(), None, None, 3),
        (GOOD_REPORT.to_bytes(), None, KEY_RAW[:200], 3),
        (GOOD_REPORT.to_bytes(), None, AttKeyId(mrsigner=bytes(48)).to_bytes(), 38),
        (Report(ReportBody()).to_bytes(), None, KEY_RAW, 47),  # the fake's "MAC does not verify"
    ],
    ids=["431", "433", "empty", "info-959", "info-961", "no-key", "short-key", "other-key", "bad-mac"],
)
def test_get_quote_validation(report: bytes, info: bytes | None, key: bytes | None, code: int) -> None:
    svc, _ = ready()
    resp = svc.handle(m.GetQuoteExRequest(report, key, info, 8192))
    assert isinstance(resp, m.GetQuoteExResponse)
    assert (resp.error_code, resp.quote) == (code, None)
    assert resp.qe_report_info == info


#: aesmd's quote3_error_to_aesm_error, row by row as Intel wrote it: intel/linux-sgx
#: psw/ae/aesm_service/source/bundles/ecdsa_quote_service_bundle/ecdsa_quote_service_bundle.cpp
#: lines 99-217 (commit 90873a0c; the case's source line on the right); "default:" -> 1
AESMD_ROWS: list[tuple[QuoteLibStatus, AesmStatus]] = [
    (QuoteLibStatus.SUCCESS, AesmStatus.SUCCESS),  # 104
    (QuoteLibStatus.ERROR_UNEXPECTED, AesmStatus.UNEXPECTED_ERROR),  # 108
    (QuoteLibStatus.ERROR_INVALID_PARAMETER, AesmStatus.PARAMETER_ERROR),  # 112
    (QuoteLibStatus.ERROR_OUT_OF_MEMORY, AesmStatus.OUT_OF_MEMORY_ERROR),  # 116
    (QuoteLibStatus.ERROR_ECDSA_ID_MISMATCH, AesmStatus.ECDSA_ID_MISMATCH),  # 120
    (QuoteLibStatus.PATHNAME_BUFFER_OVERFLOW_ERROR, AesmStatus.PATHNAME_BUFFER_OVERFLOW_ERROR),  # 124
    (QuoteLibStatus.FILE_ACCESS_ERROR, AesmStatus.FILE_ACCESS_ERROR),  # 128
    (QuoteLibStatus.ERROR_STORED_KEY, AesmStatus.ERROR_STORED_KEY),  # 132
    (QuoteLibStatus.ERROR_PUB_KEY_ID_MISMATCH, AesmStatus.PUB_KEY_ID_MISMATCH),  # 136
    (QuoteLibStatus.ERROR_INVALID_PCE_SIG_SCHEME, AesmStatus.INVALID_PCE_SIG_SCHEME),  # 140
    (QuoteLibStatus.ATT_KEY_BLOB_ERROR, AesmStatus.ATT_KEY_BLOB_ERROR),  # 144
    (QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID, AesmStatus.UNSUPPORTED_ATT_KEY_ID),  # 148
    (QuoteLibStatus.UNSUPPORTED_LOADING_POLICY, AesmStatus.UNSUPPORTED_LOADING_POLICY),  # 152
    (QuoteLibStatus.INTERFACE_UNAVAILABLE, AesmStatus.INTERFACE_UNAVAILABLE),  # 156
    (QuoteLibStatus.PLATFORM_LIB_UNAVAILABLE, AesmStatus.PLATFORM_LIB_UNAVAILABLE),  # 160
    (QuoteLibStatus.ATT_KEY_NOT_INITIALIZED, AesmStatus.ATT_KEY_NOT_INITIALIZED),  # 164
    (QuoteLibStatus.ATT_KEY_CERT_DATA_INVALID, AesmStatus.ATT_KEY_CERT_DATA_INVALID),  # 168
    (QuoteLibStatus.NO_PLATFORM_CERT_DATA, AesmStatus.NO_PLATFORM_CERT_DATA),  # 172
    (QuoteLibStatus.OUT_OF_EPC, AesmStatus.OUT_OF_EPC),  # 176
    (QuoteLibStatus.ERROR_REPORT, AesmStatus.ERROR_REPORT),  # 180
    (QuoteLibStatus.ENCLAVE_LOST, AesmStatus.ENCLAVE_LOST),  # 184
    (QuoteLibStatus.INVALID_REPORT, AesmStatus.INVALID_REPORT),  # 188
    (QuoteLibStatus.ENCLAVE_LOAD_ERROR, AesmStatus.ENCLAVE_LOAD_ERROR),  # 192
    (QuoteLibStatus.UNABLE_TO_GENERATE_QE_REPORT, AesmStatus.UNABLE_TO_GENERATE_QE_REPORT),  # 196
    (QuoteLibStatus.KEY_CERTIFCATION_ERROR, AesmStatus.KEY_CERTIFICATION_ERROR),  # 200
    (QuoteLibStatus.NETWORK_ERROR, AesmStatus.NETWORK_ERROR),  # 204
    (QuoteLibStatus.MESSAGE_ERROR, AesmStatus.MSG_ERROR),  # 208
]
#: no case in aesmd's switch: "default:" (line 212) answers AESM_UNEXPECTED_ERROR
AESMD_DEFAULT = [
    QuoteLibStatus.ERROR_BUSY,
    QuoteLibStatus.NO_DEVICE,
    QuoteLibStatus.SERVICE_UNAVAILABLE,
    QuoteLibStatus.NO_QUOTE_COLLATERAL_DATA,
    QuoteLibStatus.ERROR_INVALID_PRIVILEGE,
    QuoteLibStatus.NETWORK_FAILURE,
    QuoteLibStatus(0xE0FF),
    QuoteLibStatus(0x200F),  # a raw sgx_status_t
]


@pytest.mark.parametrize(("status", "code"), AESMD_ROWS, ids=[s.name for s, _ in AESMD_ROWS])
def test_engine_errors_map_like_aesmd_row_by_row(status: QuoteLibStatus, code: AesmStatus) -> None:
    assert aesm_status_for(status) == code
    if status == QuoteLibStatus.SUCCESS:
        return
    svc, eng = ready()
    eng.fail["get_quote"] = EngineError(status)
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, 8192))
    assert resp == m.GetQuoteExResponse(code)


@pytest.mark.parametrize("status", AESMD_DEFAULT, ids=[s.name for s in AESMD_DEFAULT])
def test_codes_aesmd_does_not_list_answer_unexpected(status: QuoteLibStatus) -> None:
    assert aesm_status_for(status) == AesmStatus.UNEXPECTED_ERROR
    svc, eng = ready()
    eng.fail["quote_size"] = EngineError(status)
    assert svc.handle(m.GetQuoteSizeExRequest(KEY_RAW)) == m.GetQuoteSizeExResponse(
        AesmStatus.UNEXPECTED_ERROR
    )


def test_aesmd_table_is_complete() -> None:
    # nothing maps to a non-1 code unless aesmd lists it
    listed = {int(s) for s, _ in AESMD_ROWS}
    for status in QuoteLibStatus:
        if int(status) not in listed:
            assert aesm_status_for(status) == AesmStatus.UNEXPECTED_ERROR, status.name


def test_unavailable_engine_answers_service_unavailable() -> None:
    # aesmd's bundle answers AESM_SERVICE_UNAVAILABLE itself while not initialized
    svc, eng = ready()
    eng.fail["get_quote"] = EngineUnavailableError("closed")
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, 8192))
    assert resp == m.GetQuoteExResponse(AesmStatus.SERVICE_UNAVAILABLE)


def test_get_quote_ex_buffer_size_reaches_the_engine() -> None:
    svc, eng = ready()
    resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, FAKE_QUOTE_SIZE + 9))
    assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
    assert eng.buf_sizes == [FAKE_QUOTE_SIZE + 9]
    assert eng.calls["quote_size"] == 0


def test_engine_crash_is_unexpected_error() -> None:
    svc, eng = ready()
    eng.fail["quote_size"] = RuntimeError("bug")  # type: ignore[assignment]
    assert svc.handle(m.GetQuoteSizeExRequest(KEY_RAW)) == m.GetQuoteSizeExResponse(
        AesmStatus.UNEXPECTED_ERROR
    )


# ---- items 3-4: legacy, probe, unknown


@pytest.mark.parametrize("field", sorted(m.LEGACY_FIELDS))
def test_legacy_requests_get_their_own_response_type(field: int) -> None:
    svc, _ = service()
    assert svc.handle(m.LegacyRequest(field, b"")) == m.LegacyResponse(field, AesmStatus.SERVICE_UNAVAILABLE)


def test_empty_and_unknown_get_no_answer() -> None:
    svc, _ = service()
    assert svc.handle(m.EmptyRequest()) is None
    assert svc.handle(m.UnknownRequest((30,))) is None


def test_probe_identifies_us() -> None:
    svc, _ = service()
    assert svc.handle(m.HelperProbeRequest()) == m.HelperProbeResponse(
        AesmStatus.SUCCESS, "sgx-quote-helper", "t", 7, "i", state="serving"
    )


def test_busy_answers_keep_the_request_type() -> None:
    svc, _ = service()
    busy = AesmStatus.BUSY
    assert svc.error_response(
        m.GetQuoteExRequest(b"", None, INFO.to_bytes(), 1), busy
    ) == m.GetQuoteExResponse(AesmStatus.BUSY, None, INFO.to_bytes())
    resp = svc.error_response(m.InitQuoteExRequest(KEY_RAW, False, 999), busy)
    assert resp == m.InitQuoteExResponse(AesmStatus.BUSY, pub_key_id_size=32)
    assert svc.error_response(m.LegacyRequest(2), busy) == m.LegacyResponse(2, AesmStatus.BUSY)
    assert svc.error_response(m.EmptyRequest(), busy) is None
    assert svc.needs_engine(m.GetQuoteExRequest()) and not svc.needs_engine(
        m.GetSupportedAttKeyIDNumRequest()
    )


def test_engine_calls_are_serialised() -> None:
    svc, eng = ready()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(30):
                resp = svc.handle(m.GetQuoteExRequest(GOOD_REPORT.to_bytes(), KEY_RAW, None, 8192))
                assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert eng.calls["get_quote"] == 180 and eng.max_concurrent == 1


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=120), ready=st.booleans())
def test_fuzz_service_answers_any_request_or_closes(body: bytes, ready: bool) -> None:
    svc = AesmService(FakeEngine(initialised=ready))
    try:
        req = m.decode_request(body)
    except RemoteProtocolError:
        return
    resp = svc.handle(req)
    if resp is None:
        assert isinstance(req, m.EmptyRequest | m.UnknownRequest)
        return
    assert m.response_field(resp) == m.request_field(req)  # same envelope field, always
    m.decode_response(m.encode_response(resp))  # and it encodes
