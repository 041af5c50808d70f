"""The ``tdx`` QGS engine against a fake libsgx_tdx_logic.so.1 built with gcc (no TDX host needed).

The fake exports Intel's tee_att_* prototypes (td_ql_wrapper.h) and serves the quote the test
gives it: the simulated TDQE's quote of the very TDREPORT sent, or a real vector; see
tests/fake_dcap/fake_tdx_logic.c.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import TeeAttStatus
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.engine import qpl_log
from sgx_quote_helper.engine.select import QGS_AUTO_REFUSAL_HINT, TdxOptions, select_qgs_engine
from sgx_quote_helper.engine.tdx import MAX_QUOTE_SIZE, TdxLibraryEngine
from sgx_quote_helper.engine.tdx_library import (
    INSTALL_TDX_LIBRARY_HINT,
    PCE_HINT,
    PROVISION_HINT,
    QPL_HINT,
    TDQE_ENCLAVE_HINT,
    status_text,
)
from sgx_quote_helper.engine.tdx_simulated import SimulatedTdxEngine
from sgx_quote_helper.errors import ConfigError, EngineError, EngineUnavailableError
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdqe import Tdqe
from sgx_quote_helper.sim.tdx_module import TdIdentity, TdxModule
from tests.conftest import real_dir
from tests.fake_dcap import FakeTdx, fake_dcap, fake_tdx  # noqa: F401  (fixtures)

TD = TdIdentity(mr_td=b"\x7d" * 48)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("tdx-engine") / "p")


@pytest.fixture(scope="module")
def td(platform: Platform) -> tuple[TdxModule, Tdqe]:
    module = TdxModule.open(platform)
    return module, Tdqe.for_platform(module)


@pytest.fixture
def fake(fake_tdx: FakeTdx) -> Iterator[FakeTdx]:  # noqa: F811
    fake_tdx.reset()
    yield fake_tdx
    fake_tdx.reset()


def make_engine(fake: FakeTdx, **kwargs: object) -> TdxLibraryEngine:
    args: dict[str, object] = {"library": str(fake.lib), "device_root": fake.device_root}
    args.update(kwargs)
    return TdxLibraryEngine(**args)  # type: ignore[arg-type]


@pytest.fixture
def engine(fake: FakeTdx) -> Iterator[TdxLibraryEngine]:
    eng = make_engine(fake, contexts=2)
    yield eng
    eng.close()


def quoted(td: tuple[TdxModule, Tdqe], data: bytes, *, version: int = 0) -> tuple[bytes, bytes]:
    """A simulated TDREPORT and the simulated TDQE's quote of it."""
    module, tdqe = td
    report = module.report(data, TD, version=version).to_bytes()
    return report, tdqe.quote(report)


# -- start-up -----------------------------------------------------------------------------------


def test_start_creates_and_initialises_one_context_per_worker(fake: FakeTdx) -> None:
    live = fake.control.fake_tdx_live_contexts()
    eng = make_engine(fake, contexts=3)
    try:
        assert eng.name == "tdx" and eng.contexts == 3
        assert fake.control.fake_tdx_live_contexts() == live + 3
        assert fake.calls("create") == 3
        assert fake.calls("init") == 3  # QGS's first use of a context: init_quote(refresh=false)
        assert fake.control.fake_tdx_last_refresh() == 0
        # QGS hands the QPL its logging callback at SGX_QL_LOG_ERROR
        assert fake.dcap.qpl_control.fake_qpl_loglevel() == qpl_log.SGX_QL_LOG_ERROR
    finally:
        eng.close()
    assert fake.control.fake_tdx_live_contexts() == live
    assert fake.calls("free") == 3
    eng.close()  # idempotent
    assert fake.calls("free") == 3


def test_missing_library_and_devices_are_named_together(fake: FakeTdx, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        TdxLibraryEngine(library=str(tmp_path / "libsgx_tdx_logic.so.1"), device_root=tmp_path)
    text = str(exc.value)
    assert text.startswith("the TDX quote engine cannot start:")
    assert f"no SGX device {tmp_path / 'sgx_enclave'}" in text
    assert f"no SGX device {tmp_path / 'sgx_provision'}" in text
    assert f"cannot load {tmp_path / 'libsgx_tdx_logic.so.1'}" in text
    assert INSTALL_TDX_LIBRARY_HINT in text and "sgx.intel.com/enclave" in text


def test_missing_device_alone(fake: FakeTdx, tmp_path: Path) -> None:
    (tmp_path / "sgx_enclave").write_bytes(b"")
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, device_root=tmp_path)
    text = str(exc.value)
    assert f"no SGX device {tmp_path / 'sgx_provision'}" in text and "sgx_enclave (nor" not in text
    assert "cannot load" not in text
    assert fake.calls("create") == 0  # nothing is loaded on a node that cannot quote


def test_a_library_without_the_tee_att_calls_is_not_intels(fake: FakeTdx) -> None:
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, library=str(fake.dcap.qpl))
    assert "does not export tee_att_create_context" in str(exc.value)
    assert INSTALL_TDX_LIBRARY_HINT in str(exc.value)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (TeeAttStatus.ENCLAVE_LOAD_ERROR, TDQE_ENCLAVE_HINT),
        (TeeAttStatus.INTERFACE_UNAVAILABLE, PCE_HINT),
        (TeeAttStatus.ERROR_INVALID_PRIVILEGE, PROVISION_HINT),
        (TeeAttStatus.NO_PLATFORM_CERT_DATA, QPL_HINT),
        (TeeAttStatus.OUT_OF_EPC, "EPC"),
        (TeeAttStatus.NETWORK_ERROR, "PCCS"),
        (TeeAttStatus(0x110AB), "check that libsgx-tdx-logic"),
    ],
)
def test_init_failure_at_start_names_the_code_and_fix_and_frees(
    fake: FakeTdx, status: TeeAttStatus, hint: str
) -> None:
    live = fake.control.fake_tdx_live_contexts()
    fake.force("init", status)
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, contexts=2)
    text = str(exc.value)
    assert "tee_att_init_quote failed to load the TDQE and its attestation key (context 0)" in text
    assert status_text(status) in text and hint in text
    assert fake.control.fake_tdx_live_contexts() == live  # what was created is released


def test_status_text_names_intels_constants() -> None:
    assert status_text(0x1100F) == "TEE_ATT_ATT_KEY_NOT_INITIALIZED (0x1100f)"
    assert status_text(0x11001) == "TEE_ATT_ERROR_UNEXPECTED (0x11001)"
    assert status_text(0x110AB) == "UNKNOWN_0x110ab (0x110ab)"


def test_create_context_failure_is_named(fake: FakeTdx) -> None:
    fake.force("create", TeeAttStatus.ERROR_OUT_OF_MEMORY)
    with pytest.raises(ConfigError) as exc:
        make_engine(fake)
    assert "tee_att_create_context failed to create context 0: TEE_ATT_ERROR_OUT_OF_MEMORY (0x11003)" in str(
        exc.value
    )


def test_missing_tdqe_enclave_fails_start_up(
    fake: FakeTdx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TDX_ENCLAVE_DIR", str(tmp_path))  # no libsgx_tdqe.signed.so.1 there
    with pytest.raises(ConfigError) as exc:
        make_engine(fake)
    assert "TEE_ATT_ENCLAVE_LOAD_ERROR (0x11016)" in str(exc.value)
    assert "libsgx-ae-tdqe" in str(exc.value)


def test_tdqe_and_qpl_paths_are_set_on_every_context(fake: FakeTdx, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, tdqe_path=str(tmp_path / "missing.signed.so"))
    assert "TEE_ATT_ENCLAVE_LOAD_ERROR" in str(exc.value)
    fake.reset()
    tdqe = tmp_path / "tdqe.signed.so"
    tdqe.write_bytes(b"")
    eng = make_engine(fake, contexts=2, tdqe_path=str(tdqe), qpl_path=str(fake.dcap.qpl))
    eng.close()
    assert fake.calls("path") == 4  # TDQE and QPL, on both contexts


def test_set_path_refusal_is_named(fake: FakeTdx) -> None:
    fake.force("path", TeeAttStatus.ERROR_INVALID_PARAMETER)
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, qpl_path="/nowhere/libdcap_quoteprov.so.1")
    assert "tee_att_set_path failed to set the QPL path /nowhere/libdcap_quoteprov.so.1" in str(exc.value)


def test_paths_need_tee_att_set_path(fake: FakeTdx) -> None:
    with pytest.raises(ConfigError) as exc:
        make_engine(fake, library=str(fake.minimal), qpl_path="/x/libdcap_quoteprov.so.1")
    assert "does not export tee_att_set_path" in str(exc.value)


def test_no_quote_provider_library_is_a_warning(
    fake: FakeTdx, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eng = make_engine(fake, qpl_path=str(tmp_path / "libdcap_quoteprov.so.1"))
    eng.close()
    assert "no quote provider library could be opened" in caplog.text


def test_at_least_one_context(fake: FakeTdx) -> None:
    with pytest.raises(ConfigError, match="at least one context"):
        make_engine(fake, contexts=0)


def test_auto_never_falls_back_to_simulation(fake: FakeTdx, tmp_path: Path) -> None:
    options = TdxOptions(library=str(fake.lib), device_root=tmp_path)
    with pytest.raises(ConfigError) as exc:
        select_qgs_engine("auto", state_dir=tmp_path / "p", create_state=True, tdx=options)
    assert "no SGX device" in str(exc.value) and QGS_AUTO_REFUSAL_HINT in str(exc.value)
    assert not (tmp_path / "p").exists()  # no simulated platform was made


def test_select_builds_each_engine(fake: FakeTdx, tmp_path: Path) -> None:
    options = TdxOptions(library=str(fake.lib), device_root=fake.device_root)
    for name in ("auto", "tdx"):
        eng = select_qgs_engine(name, contexts=2, tdx=options)
        assert isinstance(eng, TdxLibraryEngine) and eng.contexts == 2
        eng.close()
    sim = select_qgs_engine("simulated", state_dir=tmp_path / "p", create_state=True)
    assert isinstance(sim, SimulatedTdxEngine)
    with pytest.raises(ConfigError, match="needs a platform state directory"):
        select_qgs_engine("simulated")
    with pytest.raises(ConfigError, match="unknown QGS engine 'dcap'"):
        select_qgs_engine("dcap")


# -- quotes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_quote_is_the_librarys_for_the_report_sent(
    fake: FakeTdx, engine: TdxLibraryEngine, td: tuple[TdxModule, Tdqe], version: int
) -> None:
    report, quote = quoted(td, b"engine", version=version)
    fake.serve(quote, expect_report=report)
    assert engine.get_quote(report) == quote
    assert fake.last_report() == report  # the TDREPORT reached the library byte for byte
    assert fake.control.fake_tdx_last_quote_size() == len(quote)  # the buffer get_quote_size asked for
    assert (fake.calls("size"), fake.calls("quote")) == (1, 1)
    assert Quote.from_bytes(engine.get_quote(report)).header.version == 4 + version


def test_another_report_is_refused_by_the_tdqe(
    fake: FakeTdx, engine: TdxLibraryEngine, td: tuple[TdxModule, Tdqe]
) -> None:
    report, quote = quoted(td, b"expected")
    other, _ = quoted(td, b"other")
    fake.serve(quote, expect_report=report)
    with pytest.raises(EngineError) as exc:
        engine.get_quote(other)
    assert exc.value.status == TeeAttStatus.INVALID_REPORT


@pytest.mark.parametrize("version", [0, 1])
def test_the_whole_buffer_is_the_answer_as_qgs_sends_it(
    fake: FakeTdx, engine: TdxLibraryEngine, td: tuple[TdxModule, Tdqe], version: int
) -> None:
    # qgs_ql_logic.cpp: quote_buf.resize(size) ... qgs_msg_gen_get_quote_resp(NULL, 0,
    # quote_buf.data(), size, ...): all get_quote_size bytes, zero tail included
    report, quote = quoted(td, b"padded", version=version)
    fake.serve(quote)
    fake.control.fake_tdx_set_pad(700)
    got = engine.get_quote(report)
    assert got == quote + bytes(700)
    assert fake.control.fake_tdx_last_quote_size() == len(quote) + 700
    assert Quote.from_bytes(got).trailing == bytes(700)


def test_a_real_qgs_quote_with_its_zero_tail_passes_through_unchanged(
    fake: FakeTdx, engine: TdxLibraryEngine
) -> None:
    real = (real_dir("tdx/phala-tdx-v4") / "quote.bin").read_bytes()
    parsed = Quote.from_bytes(real)
    assert parsed.header.tee_type == 0x81 and parsed.trailing == bytes(70)  # a real QGS's tail
    fake.serve(real)
    assert engine.get_quote(bytes(1024)) == real


def test_a_size_too_small_for_the_quote_is_the_librarys_invalid_parameter(
    fake: FakeTdx, engine: TdxLibraryEngine, td: tuple[TdxModule, Tdqe]
) -> None:
    report, quote = quoted(td, b"short")
    fake.serve(quote)
    fake.control.fake_tdx_set_size(len(quote) - 1)
    with pytest.raises(EngineError) as exc:
        engine.get_quote(report)
    assert exc.value.status == TeeAttStatus.ERROR_INVALID_PARAMETER
    assert fake.control.fake_tdx_last_quote_size() == len(quote) - 1


@pytest.mark.parametrize("size", [0, MAX_QUOTE_SIZE + 1, 0xFFFFFFFF])
def test_an_absurd_quote_size_is_refused_before_allocating(
    fake: FakeTdx, engine: TdxLibraryEngine, size: int
) -> None:
    fake.serve(b"\x04" * 5000)
    fake.control.fake_tdx_set_size(size)
    with pytest.raises(EngineError) as exc:
        engine.get_quote(bytes(1024))
    assert exc.value.status == TeeAttStatus.ERROR_UNEXPECTED and str(size) in str(exc.value)
    assert fake.calls("quote") == 0


@pytest.mark.parametrize("length", [0, 1023, 1025])
def test_a_report_that_is_not_1024_bytes_is_the_librarys_invalid_parameter(
    fake: FakeTdx, engine: TdxLibraryEngine, length: int
) -> None:
    fake.serve(b"\x04" * 5000)
    with pytest.raises(EngineError) as exc:
        engine.get_quote(b"\x81" * length)
    assert exc.value.status == TeeAttStatus.ERROR_INVALID_PARAMETER


@pytest.mark.parametrize("where", ["size", "quote"])
def test_a_lost_key_is_refreshed_once_as_qgs_does(
    fake: FakeTdx, engine: TdxLibraryEngine, td: tuple[TdxModule, Tdqe], where: str
) -> None:
    report, quote = quoted(td, b"refresh")
    fake.serve(quote)
    if where == "size":
        fake.control.fake_tdx_drop_keys()  # get_quote_size answers NOT_INITIALIZED
    else:
        fake.force("quote", TeeAttStatus.ATT_KEY_NOT_INITIALIZED)
    init_before = fake.calls("init")
    if where == "quote":
        with pytest.raises(EngineError) as exc:
            engine.get_quote(report)
        assert exc.value.status == TeeAttStatus.ATT_KEY_NOT_INITIALIZED
        assert fake.calls("quote") == 2  # QGS retries once, then gives up
    else:
        assert engine.get_quote(report) == quote
        assert (fake.calls("size"), fake.calls("quote")) == (2, 1)
    assert fake.calls("init") == init_before + 1
    assert fake.control.fake_tdx_last_refresh() == 1  # tee_att_init_quote(refresh_att_key=true)


def test_a_failed_refresh_is_the_error(fake: FakeTdx, engine: TdxLibraryEngine) -> None:
    fake.serve(b"\x04" * 5000)
    fake.control.fake_tdx_drop_keys()
    fake.force("init", TeeAttStatus.ENCLAVE_LOST)
    with pytest.raises(EngineError) as exc:
        engine.get_quote(bytes(1024))
    assert exc.value.status == TeeAttStatus.ENCLAVE_LOST and "refresh" in str(exc.value)


def test_closed_engine_refuses(fake: FakeTdx) -> None:
    eng = make_engine(fake)
    eng.close()
    with pytest.raises(EngineUnavailableError):
        eng.get_quote(bytes(1024))


# -- parallel quoting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("contexts", "callers"), [(4, 4), (2, 6), (1, 3)])
def test_contexts_quote_in_parallel_never_two_threads_on_one(
    fake: FakeTdx, td: tuple[TdxModule, Tdqe], contexts: int, callers: int
) -> None:
    report, quote = quoted(td, b"parallel")
    fake.serve(quote)
    fake.control.fake_tdx_set_delay_us(150_000)
    eng = make_engine(fake, contexts=contexts)
    start = threading.Barrier(callers)

    def one(_: int) -> bytes:
        start.wait(30)
        return eng.get_quote(report)

    try:
        with ThreadPoolExecutor(callers) as pool:
            results = list(pool.map(one, range(callers * 2)))
    finally:
        eng.close()
    assert results == [quote] * (callers * 2)
    assert fake.control.fake_tdx_context_overlaps() == 0  # each context used by one thread at a time
    most = fake.control.fake_tdx_max_inflight()
    assert most <= contexts  # more callers than contexts wait for one
    if contexts > 1:
        assert most >= 2  # and with several, quotes really run at once
    else:
        assert most == 1  # one context: serialised


# -- platform info and collateral ---------------------------------------------------------------------


def test_platform_info(fake: FakeTdx, engine: TdxLibraryEngine) -> None:
    info = (
        bytes(range(16)) + bytes(range(0x40, 0x50)) + (7).to_bytes(2, "little") + (13).to_bytes(2, "little")
    )
    fake.control.fake_tdx_set_platform(info)
    got = engine.platform_info()
    assert (got.platform_id, got.cpusvn, got.tdqe_isvsvn, got.pce_isvsvn) == (
        bytes(range(16)),
        bytes(range(0x40, 0x50)),
        7,
        13,
    )
    fake.force("platform", TeeAttStatus.ERROR_UNEXPECTED)
    with pytest.raises(EngineError) as exc:
        engine.platform_info()
    assert exc.value.status == TeeAttStatus.ERROR_UNEXPECTED


def test_platform_info_needs_the_call(fake: FakeTdx) -> None:
    eng = make_engine(fake, library=str(fake.minimal))
    try:
        with pytest.raises(EngineError, match="no tee_att_get_platform_info"):
            eng.platform_info()
        with pytest.raises(EngineError) as exc:
            eng.collateral(b"\x00\x90\x6e\xa1\x00\x00", "processor")
        assert exc.value.status == TeeAttStatus.PLATFORM_LIB_UNAVAILABLE
    finally:
        eng.close()


def test_collateral_comes_from_the_qpl_and_is_freed(fake: FakeTdx, engine: TdxLibraryEngine) -> None:
    qpl = fake.qpl_control
    fmspc = bytes.fromhex("00906EA10000")
    blobs = [f"blob {i}".encode() + b"\0" for i in range(7)]
    blobs[1] = b"\x30\x82\x01\x00" + bytes(252)  # raw DER (version 3.1)
    for i, blob in enumerate(blobs):
        assert qpl.fake_qpl_set_blob(i, blob, len(blob)) == 0
    qpl.fake_qpl_set_collateral_for(fmspc, b"processor", 3, 1)
    frees = qpl.fake_qpl_collateral_frees()
    version, got = engine.collateral(fmspc, "processor")
    assert version == (3, 1) and list(got) == blobs
    assert qpl.fake_qpl_collateral_frees() == frees + 1
    with pytest.raises(EngineError, match="0xe01b"):
        engine.collateral(fmspc, "platform")
    with pytest.raises(EngineError):
        engine.collateral(b"\x00" * 0xFFFF, "processor")
