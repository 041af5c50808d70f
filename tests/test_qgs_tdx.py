"""QGS with the ``tdx`` engine: every tee_att_error_t answered as Intel's QGS answers it, parallel
requests over the server's workers, and ``qgs serve --engine tdx`` end to end (fake
libsgx_tdx_logic, tests/fake_dcap/fake_tdx_logic.c; the quote it serves is the simulated TDQE's
quote of the TDREPORT sent, so dcap-qvl judges it against the simulated platform's collateral).

Intel's mapping (intel/SGXDataCenterAttestationPrimitives a46ee8ab,
QuoteGeneration/quote_wrapper/qgs/qgs_ql_logic.cpp ``get_resp``): each failed tee_att_* call sets
``resp_error_code = QGS_MSG_ERROR_UNEXPECTED`` whatever its code (GET_QUOTE: lines 175-177 for
tee_att_get_quote_size, 187-189 for tee_att_get_quote, then line 201
``qgs_msg_gen_error_resp(resp_error_code, GET_QUOTE_RESP, ...)``; GET_PLATFORM_INFO: lines
292-295 and 308; GET_COLLATERAL: lines 244-248 and 274). ``get_raw_resp`` returns an empty buffer
(lines 422-425, 432), which ``qgs_server.cpp`` ``handle_raw_request`` answers by closing the
connection with nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.abi.codes import TeeAttStatus
from sgx_quote_helper.cli import cli
from sgx_quote_helper.client.qgs import QgsClient
from sgx_quote_helper.engine.tdx import TdxLibraryEngine
from sgx_quote_helper.errors import BadResponseError, TransportError
from sgx_quote_helper.qgs_service import QgsService
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdqe import Tdqe
from sgx_quote_helper.sim.tdx_module import TdIdentity, TdxModule
from tests.fake_dcap import FakeTdx, fake_dcap, fake_tdx  # noqa: F401  (fixtures)

from .test_qgs_service import judge, serving

TD = TdIdentity(mr_td=b"\x3c" * 48, rtmr1=b"\x02" * 48)
FAILURES = [status for status in TeeAttStatus if status != TeeAttStatus.SUCCESS]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("qgs-tdx") / "p")


@pytest.fixture(scope="module")
def report_and_quote(platform: Platform) -> tuple[bytes, bytes]:
    module = TdxModule.open(platform)
    report = module.report(b"qgs --engine tdx", TD).to_bytes()
    return report, Tdqe.for_platform(module).quote(report)


@pytest.fixture(scope="module")
def engine(fake_tdx: FakeTdx) -> Iterator[TdxLibraryEngine]:  # noqa: F811
    fake_tdx.reset()
    eng = TdxLibraryEngine(library=str(fake_tdx.lib), device_root=fake_tdx.device_root, contexts=2)
    yield eng
    eng.close()


@pytest.fixture
def fake(fake_tdx: FakeTdx, report_and_quote: tuple[bytes, bytes]) -> Iterator[FakeTdx]:  # noqa: F811
    fake_tdx.reset()
    report, quote = report_and_quote
    fake_tdx.serve(quote, expect_report=report)
    yield fake_tdx
    fake_tdx.reset()


def test_get_quote_success_is_the_librarys_quote(
    fake: FakeTdx, engine: TdxLibraryEngine, report_and_quote: tuple[bytes, bytes]
) -> None:
    report, quote = report_and_quote
    resp = QgsService(engine).answer(q.GetQuoteRequest(report))
    assert isinstance(resp, q.GetQuoteResponse)
    assert (resp.error_code, resp.quote) == (q.MsgError.SUCCESS, quote)


@pytest.mark.parametrize("status", FAILURES, ids=lambda s: s.name)
@pytest.mark.parametrize("call", ["size", "quote"])
def test_get_quote_failure_is_0x12001(
    fake: FakeTdx,
    engine: TdxLibraryEngine,
    report_and_quote: tuple[bytes, bytes],
    call: str,
    status: TeeAttStatus,
) -> None:
    # qgs_ql_logic.cpp 175-177 / 187-189: resp_error_code = QGS_MSG_ERROR_UNEXPECTED; 201: error resp
    fake.force(call, status)
    resp = QgsService(engine).answer(q.GetQuoteRequest(report_and_quote[0]))
    assert isinstance(resp, q.GetQuoteResponse)
    assert resp.error_code == q.MsgError.UNEXPECTED == 0x12001
    assert resp.quote == b""
    # 195-196: only TEE_ATT_ATT_KEY_NOT_INITIALIZED is retried, once, after a key refresh
    retried = status == TeeAttStatus.ATT_KEY_NOT_INITIALIZED
    assert fake.calls(call) == (2 if retried else 1)
    assert fake.control.fake_tdx_last_refresh() == (1 if retried else -1)


@pytest.mark.parametrize("status", FAILURES, ids=lambda s: s.name)
def test_get_platform_info_failure_is_0x12001(
    fake: FakeTdx, engine: TdxLibraryEngine, status: TeeAttStatus
) -> None:
    # qgs_ql_logic.cpp 292-295: resp_error_code = QGS_MSG_ERROR_UNEXPECTED; 308: error resp
    fake.force("platform", status)
    resp = QgsService(engine).answer(q.GetPlatformInfoRequest())
    assert isinstance(resp, q.GetPlatformInfoResponse)
    assert resp.error_code == 0x12001


@pytest.mark.parametrize("status", [TeeAttStatus.INVALID_REPORT, TeeAttStatus.ERROR_UNEXPECTED])
def test_raw_mode_failure_closes_without_a_reply(
    fake: FakeTdx, engine: TdxLibraryEngine, report_and_quote: tuple[bytes, bytes], status: TeeAttStatus
) -> None:
    # qgs_ql_logic.cpp 422-425, 432: an empty response; qgs_server.cpp: closed, nothing written
    report, quote = report_and_quote
    service = QgsService(engine)
    assert service.raw_quote(report) == quote
    fake.force("quote", status)
    assert service.raw_quote(report) is None


def test_get_collateral_refused_by_the_qpl_is_0x12001(fake: FakeTdx, engine: TdxLibraryEngine) -> None:
    # qgs_ql_logic.cpp 244-248: the QPL's failure -> QGS_MSG_ERROR_UNEXPECTED; 274: error resp
    fake.qpl_control.fake_qpl_set_collateral_for(b"\x11" * 6, b"processor", 3, 1)
    resp = QgsService(engine).answer(q.GetCollateralRequest(b"\x22" * 6, b"processor\0"))
    assert isinstance(resp, q.GetCollateralResponse) and resp.error_code == 0x12001


# -- over the socket ----------------------------------------------------------------------------


def test_parallel_clients_over_the_workers_contexts(
    fake: FakeTdx, platform: Platform, report_and_quote: tuple[bytes, bytes], tmp_path: Path
) -> None:
    report, quote = report_and_quote
    fake.control.fake_tdx_set_delay_us(100_000)
    eng = TdxLibraryEngine(library=str(fake.lib), device_root=fake.device_root, contexts=3)
    sock = tmp_path / "qgs.socket"
    try:
        with serving(platform, sock, engine=eng, workers=3), ThreadPoolExecutor(6) as pool:
            quotes = list(pool.map(lambda _: QgsClient(sock).get_quote(report), range(12)))
    finally:
        eng.close()
    assert quotes == [quote] * 12
    assert fake.control.fake_tdx_context_overlaps() == 0
    assert 2 <= fake.control.fake_tdx_max_inflight() <= 3


def test_cli_serve_engine_tdx_end_to_end(
    fake: FakeTdx, platform: Platform, report_and_quote: tuple[bytes, bytes], tmp_path: Path
) -> None:
    report, quote = report_and_quote
    (tmp_path / "quote.bin").write_bytes(quote)
    (tmp_path / "report.bin").write_bytes(report)
    sock = tmp_path / "qgs.socket"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FAKE_TDX_QUOTE": str(tmp_path / "quote.bin"),
        "FAKE_TDX_EXPECT_REPORT": str(tmp_path / "report.bin"),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "sgx-quote-helper"),
            "qgs",
            "serve",
            "--engine",
            "tdx",
            "--tdx-library",
            str(fake.lib),
            "--device-root",
            str(fake.device_root),
            "--workers",
            "2",
            "--socket",
            str(sock),
            *("--handover-window", "0"),  # no successor is coming: stop at once
        ],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert b"QGS ready" in line, line + proc.stderr.read()
        client = QgsClient(sock)
        got = client.get_quote(report)
        assert got == quote
        assert judge(platform, got) == "UpToDate"
        other = TdxModule.open(platform).report(b"not the one", TD).to_bytes()
        with pytest.raises(BadResponseError, match="0x12001"):
            client.get_quote(other)  # the TDQE refused it: TEE_ATT_INVALID_REPORT -> 0x12001
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0 and not sock.exists()


@pytest.mark.parametrize("engine_name", ["tdx", "auto"])
def test_cli_refuses_to_start_naming_what_is_missing(
    fake_tdx: FakeTdx,  # noqa: F811
    tmp_path: Path,
    engine_name: str,
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "qgs",
            "serve",
            "--engine",
            engine_name,
            "--tdx-library",
            str(tmp_path / "libsgx_tdx_logic.so.1"),
            "--device-root",
            str(tmp_path),
            "--socket",
            str(tmp_path / "qgs.socket"),
        ],
    )
    assert result.exit_code == 2
    err = result.stderr
    assert err.startswith("error: the TDX quote engine cannot start:")
    assert "sgx_enclave" in err and "sgx_provision" in err and "libsgx_tdx_logic.so.1" in err
    assert "apt-get install libsgx-tdx-logic" in err
    assert ("never serves simulated quotes" in err) == (engine_name == "auto")
    assert not (tmp_path / "qgs.socket").exists()


def test_cli_start_up_failure_of_the_library(fake_tdx: FakeTdx, tmp_path: Path) -> None:  # noqa: F811
    fake_tdx.reset()
    fake_tdx.force("init", TeeAttStatus.OUT_OF_EPC)
    try:
        result = CliRunner().invoke(
            cli,
            [
                "qgs",
                "serve",
                "--engine",
                "tdx",
                "--tdx-library",
                str(fake_tdx.lib),
                "--device-root",
                str(fake_tdx.device_root),
                "--socket",
                str(tmp_path / "qgs.socket"),
            ],
        )
    finally:
        fake_tdx.reset()
    assert result.exit_code == 2
    assert "tee_att_init_quote failed" in result.stderr and "TEE_ATT_OUT_OF_EPC (0x11012)" in result.stderr


def test_cli_client_sees_a_closed_connection_for_a_refused_raw_report(
    fake: FakeTdx, platform: Platform, engine: TdxLibraryEngine, tmp_path: Path
) -> None:
    sock = tmp_path / "raw.socket"
    with serving(platform, sock, engine=engine):
        import socket as socketlib

        with socketlib.socket(socketlib.AF_UNIX) as s:
            s.settimeout(20)
            s.connect(str(sock))
            s.sendall(TdxModule.open(platform).report(b"unexpected", TD).to_bytes())
            assert s.recv(65536) == b""  # INVALID_REPORT: closed, nothing written
    with pytest.raises(TransportError):
        QgsClient(sock).get_quote(bytes(1024))  # the server is gone
