"""The DCAP engine as aesmd's ECDSA quote service behaves (issue 16), against the fake DCAP library.

- start-up refuses unless both QE3 and the PCE load (aesmd's bundle start());
- every start-up code is named (quote3_error_t, the urts's raw sgx_status_t from load_qe,
  sgx_pce_error_t) with the hint that fixes it, never ``UNKNOWN_0x...``;
- the QPL's log reaches ours through ``sgx_ql_set_logging_callback``, rate-limited;
- GetQuoteEx's buffer size goes to ``sgx_ql_get_quote`` without a second size query.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import PceStatus, QuoteLibStatus, SgxStatus, load_qe_status
from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.report import Report, ReportBody
from sgx_quote_helper.engine import qpl_log
from sgx_quote_helper.engine.dcap import SGX_QL_EPHEMERAL, DcapEngine
from sgx_quote_helper.engine.dcap_library import GENERIC_START_HINT, start_hint, status_text
from sgx_quote_helper.errors import ConfigError, EngineError
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)

KEY = AttKeyId.ecdsa_p256_qe3()
QPL_LOGGER = qpl_log.log.name


def make_engine(fake: FakeDcap, **kwargs: object) -> DcapEngine:
    args: dict[str, object] = {
        "library": str(fake.qe3),
        "pce_library": str(fake.pce),
        "device_root": fake.device_root,
    }
    args.update(kwargs)
    return DcapEngine(**args)  # type: ignore[arg-type]


@pytest.fixture
def fake(fake_dcap: FakeDcap) -> Iterator[FakeDcap]:  # noqa: F811
    fake_dcap.reset()
    yield fake_dcap
    fake_dcap.reset()


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> qpl_log.RateLimitedLog:
    """A fresh process router (its clock frozen unless a test moves it)."""
    now = [0.0]
    fresh = qpl_log.RateLimitedLog(burst=5, window=60.0, clock=lambda: now[0])
    monkeypatch.setattr(qpl_log, "ROUTER", fresh)
    return fresh


def enclave_dir(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "enclaves"
    d.mkdir()
    for name in names:
        (d / name).write_bytes(b"")
    return d


def app_report() -> Report:
    return Report(body=ReportBody(mr_enclave=b"\x11" * 32), key_id=b"\x01" * 32, mac=b"\x02" * 16)


# -- start-up: QE3 and the PCE both load, or the engine refuses ---------------------------------


def test_missing_pce_enclave_fails_start_up(
    fake: FakeDcap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_DCAP_ENCLAVE_DIR", str(enclave_dir(tmp_path, "libsgx_qe3.signed.so.1")))
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        make_engine(fake)
    text = str(err.value)
    assert "sgx_pce_get_target failed to load the PCE enclave: SGX_PCE_INTERFACE_UNAVAILABLE (0xf004)" in text
    assert "SGX_QL_INTERFACE_UNAVAILABLE (0xe00d)" in text  # what the first InitQuoteEx would say
    assert "libsgx-ae-pce" in text and "libsgx_pce.signed.so.1" in text
    assert "load_qe" not in text  # QE3 itself loaded
    assert fake.pce_control.fake_pce_calls() == 1
    assert "DCAP engine ready" not in caplog.text
    assert fake.control.fake_dcap_policy() == SGX_QL_EPHEMERAL  # what did load is released


def test_without_the_probe_the_first_init_quote_would_fail_0xe00d(fake: FakeDcap) -> None:
    # what the probe catches: a PCE that stops loading makes sgx_ql_init_quote answer 0xe00d
    engine = make_engine(fake)
    try:
        fake.pce_control.fake_pce_set_status(PceStatus.INTERFACE_UNAVAILABLE)
        with pytest.raises(EngineError) as err:
            engine.init_quote(KEY, want_pub_key_id=True)
        assert err.value.status == QuoteLibStatus.INTERFACE_UNAVAILABLE
    finally:
        engine.close()


def test_missing_qe3_enclave_is_named_not_unknown(
    fake: FakeDcap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DCAP_ENCLAVE_DIR", str(enclave_dir(tmp_path, "libsgx_pce.signed.so.1")))
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    text = str(err.value)
    assert "load_qe failed to load the QE3 enclave: SGX_ERROR_ENCLAVE_FILE_ACCESS (0x200f)" in text
    assert "UNKNOWN" not in text
    assert "libsgx-ae-qe3" in text and "libsgx_qe3.signed.so.1" in text
    assert "sgx_pce_get_target" not in text


def test_both_enclaves_missing_are_reported_together(
    fake: FakeDcap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DCAP_ENCLAVE_DIR", str(enclave_dir(tmp_path)))
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    text = str(err.value)
    assert "SGX_ERROR_ENCLAVE_FILE_ACCESS" in text and "SGX_PCE_INTERFACE_UNAVAILABLE" in text
    assert "libsgx-ae-qe3" in text and "libsgx-ae-pce" in text


def test_start_up_loads_the_pce_once_and_then_serves(fake: FakeDcap) -> None:
    engine = make_engine(fake)
    try:
        assert fake.pce_control.fake_pce_calls() == 1
        assert fake.calls("load_qe") == 1
        engine.init_quote(KEY, want_pub_key_id=True)
        assert engine.get_quote(app_report(), KEY).quote == fake.quote
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (PceStatus.OUT_OF_EPC, "not enough EPC"),
        (PceStatus.INVALID_PRIVILEGE, "sgx_prv"),
        (PceStatus.UNEXPECTED, GENERIC_START_HINT),
    ],
)
def test_pce_statuses_are_named_with_their_fix(fake: FakeDcap, status: PceStatus, hint: str) -> None:
    fake.pce_control.fake_pce_set_status(status)
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    assert f"SGX_PCE_{status.name} ({int(status):#06x})" in str(err.value)
    assert hint in str(err.value)


#: every sgx_status_t load_qe can pass through from sgx_create_enclave (OUT_OF_EPC it translates)
RAW_SGX = [s for s in SgxStatus if s not in (SgxStatus.SUCCESS, SgxStatus.OUT_OF_EPC)]


@pytest.mark.parametrize("status", RAW_SGX, ids=[s.name for s in RAW_SGX])
def test_raw_sgx_codes_from_load_qe_are_named(fake: FakeDcap, status: SgxStatus) -> None:
    fake.force("load_qe", status)
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    text = str(err.value)
    assert "UNKNOWN" not in text
    assert f"{int(status):#06x}" in text
    assert status.name in text
    assert "To fix:" in text


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (0x200F, "libsgx-ae-qe3"),  # SGX_ERROR_ENCLAVE_FILE_ACCESS
        (0x2006, "sgx.intel.com/enclave"),  # SGX_ERROR_NO_DEVICE
        (0x000A, "noexec"),  # SGX_ERROR_MEMORY_MAP_FAILURE
        (0x4004, "sgx_prv"),  # SGX_ERROR_SERVICE_INVALID_PRIVILEGE
        (0x3002, "sgx_prv"),  # SGX_ERROR_INVALID_ATTRIBUTE
        (0x200C, "flexible launch control"),  # SGX_ERROR_DEVICE_BUSY (EINIT)
        (0x2003, "reinstall"),  # SGX_ERROR_INVALID_SIGNATURE
        (0x200E, "simulation"),  # SGX_ERROR_MODE_INCOMPATIBLE
        (0xE012, "not enough EPC"),  # SGX_QL_OUT_OF_EPC (load_qe's translation of 0x2005)
        (0xE016, "libsgx-ae-qe3"),  # SGX_QL_ENCLAVE_LOAD_ERROR (no QE3 path)
    ],
)
def test_load_qe_codes_carry_the_hint_that_fixes_them(fake: FakeDcap, code: int, hint: str) -> None:
    fake.force("load_qe", code)
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    assert hint in str(err.value)


def test_status_spaces_and_names() -> None:
    assert load_qe_status(0x200F) is SgxStatus.ENCLAVE_FILE_ACCESS
    assert load_qe_status(0xE016) is QuoteLibStatus.ENCLAVE_LOAD_ERROR
    assert load_qe_status(0) == QuoteLibStatus.SUCCESS
    assert status_text(SgxStatus(0x200F)) == "SGX_ERROR_ENCLAVE_FILE_ACCESS (0x200f)"
    assert status_text(QuoteLibStatus(0xE00D)) == "SGX_QL_INTERFACE_UNAVAILABLE (0xe00d)"
    assert status_text(PceStatus(0xF004)) == "SGX_PCE_INTERFACE_UNAVAILABLE (0xf004)"
    assert status_text(SgxStatus(0x2F00)) == "UNKNOWN_0x2f00 (0x2f00)"  # unknown stays a number
    assert start_hint(SgxStatus(0x2F00)) == GENERIC_START_HINT
    # the PCE's success is 0xF000 (SGX_PCE_MK_ERROR(0)), not 0
    assert PceStatus.SUCCESS == 0xF000


# -- the QPL's log into ours --------------------------------------------------------------------


def test_qpl_log_reaches_the_operator(
    fake: FakeDcap, router: qpl_log.RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(fake, qpl_path=str(fake.qpl))
    try:
        qpl = fake.qpl_control
        assert qpl.fake_qpl_loglevel() == qpl_log.SGX_QL_LOG_ERROR  # aesmd's default level
        qpl.fake_qpl_set_status(QuoteLibStatus.NO_PLATFORM_CERT_DATA)
        with caplog.at_level(logging.INFO, logger=QPL_LOGGER), pytest.raises(EngineError) as err:
            engine.init_quote(KEY, want_pub_key_id=True)
        assert err.value.status == QuoteLibStatus.NO_PLATFORM_CERT_DATA
        lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name == QPL_LOGGER]
        assert lines == [(QPL_LOGGER, logging.ERROR, "[QPL] No certificate data for this platform.")]
        # INFO lines are not asked for at the default level
        qpl.fake_qpl_set_status(0)
        caplog.clear()
        engine.init_quote(KEY, want_pub_key_id=True)
        assert [r for r in caplog.records if r.name == QPL_LOGGER] == []
    finally:
        engine.close()


def test_qpl_info_lines_are_asked_for_when_our_log_shows_debug(
    fake: FakeDcap, router: qpl_log.RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=QPL_LOGGER):
        engine = make_engine(fake, qpl_path=str(fake.qpl))
        try:
            assert fake.qpl_control.fake_qpl_loglevel() == qpl_log.SGX_QL_LOG_INFO
            engine.init_quote(KEY, want_pub_key_id=True)
        finally:
            engine.close()
    assert (logging.INFO, "[QPL] PCK certificate data served from the cache") in [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == QPL_LOGGER
    ]


def test_qpl_log_is_rate_limited(
    fake: FakeDcap, router: qpl_log.RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(fake, qpl_path=str(fake.qpl))
    try:
        with caplog.at_level(logging.INFO, logger=QPL_LOGGER):
            for i in range(50):
                fake.qpl_control.fake_qpl_log(qpl_log.SGX_QL_LOG_ERROR, f"[QCNL] PCCS down {i}".encode())
        passed = [r.getMessage() for r in caplog.records if r.name == QPL_LOGGER]
        assert passed == [f"[QCNL] PCCS down {i}" for i in range(router.burst)]
    finally:
        engine.close()


def test_rate_limit_window_reports_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("test.qpl.window")
    limited = qpl_log.RateLimitedLog(logger, burst=2, window=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=logger.name):
        for i in range(5):
            limited.emit(logging.ERROR, f"m{i}")
        now[0] += 9.9
        limited.emit(logging.ERROR, "still held")
        now[0] += 0.1
        limited.emit(logging.INFO, "next window")
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (logging.ERROR, "m0"),
        (logging.ERROR, "m1"),
        (logging.WARNING, "[QPL] 4 more quote provider library messages were held back in 10 s"),
        (logging.INFO, "next window"),
    ]


def test_qpl_messages_are_bounded_and_never_raise(
    router: qpl_log.RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=QPL_LOGGER):
        qpl_log.qpl_message(qpl_log.SGX_QL_LOG_ERROR, b"\xff\xfe bad utf-8\n")
        qpl_log.qpl_message(qpl_log.SGX_QL_LOG_TRACE, b"x" * 100_000)
        qpl_log.qpl_message(99, b"odd level")
        qpl_log.qpl_message(qpl_log.SGX_QL_LOG_ERROR, None)
        qpl_log.qpl_message(qpl_log.SGX_QL_LOG_ERROR, b"   ")
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == QPL_LOGGER]
    assert got == [
        (logging.ERROR, "\ufffd\ufffd bad utf-8"),
        (logging.DEBUG, "x" * qpl_log.MAX_MESSAGE),
        (logging.INFO, "odd level"),
    ]


def test_qpl_callback_outlives_the_engine(
    fake: FakeDcap, router: qpl_log.RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    # the QPL keeps the pointer for the life of the process: a collected thunk would crash here
    engine = make_engine(fake, qpl_path=str(fake.qpl))
    engine.close()
    del engine
    gc.collect()
    with caplog.at_level(logging.INFO, logger=QPL_LOGGER):
        fake.qpl_control.fake_qpl_log(qpl_log.SGX_QL_LOG_ERROR, b"[QPL] after close")
    assert "[QPL] after close" in [r.getMessage() for r in caplog.records]


def test_no_quote_provider_library_is_a_warning(fake: FakeDcap, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        engine = make_engine(fake, qpl_path="/nonexistent/libdcap_quoteprov.so.1")
    engine.close()
    text = caplog.text
    assert "no quote provider library could be opened (/nonexistent/libdcap_quoteprov.so.1)" in text
    assert "libsgx-dcap-default-qpl" in text and "az-dcap-client" in text


# -- GetQuoteEx's buffer size goes straight to sgx_ql_get_quote ---------------------------------


def test_client_buffer_size_is_passed_to_get_quote(fake: FakeDcap) -> None:
    engine = make_engine(fake)
    try:
        engine.init_quote(KEY, want_pub_key_id=True)
        sizes = fake.calls("size")
        result = engine.get_quote(app_report(), KEY, buf_size=len(fake.quote) + 100)
        assert result.quote == fake.quote  # trimmed: the service pads to buf_size
        assert fake.control.fake_dcap_last_quote_size() == len(fake.quote) + 100
        assert fake.calls("size") == sizes  # no second sgx_ql_get_quote_size
        with pytest.raises(EngineError) as err:
            engine.get_quote(app_report(), KEY, buf_size=len(fake.quote) - 1)
        assert err.value.status == QuoteLibStatus.ERROR_INVALID_PARAMETER  # the library's answer
        assert fake.control.fake_dcap_last_quote_size() == len(fake.quote) - 1
        assert fake.calls("size") == sizes
        with pytest.raises(EngineError):
            engine.get_quote(app_report(), KEY, buf_size=1 << 32)
        # library callers without a buffer size: one size query, in the same locked step
        assert engine.get_quote(app_report(), KEY).quote == fake.quote
        assert fake.calls("size") == sizes + 1
        assert fake.control.fake_dcap_last_quote_size() == len(fake.quote)
    finally:
        engine.close()
