"""The DCAP hardware engine against a fake libsgx_qe3_logic.so built with gcc (no SGX needed).

The fake exports Intel's sgx_ql_* prototypes and serves a real quote; see tests/fake_dcap.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import QuoteLibStatus
from sgx_quote_helper.abi.keyid import AttKeyId, QeReportInfo
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Attributes, Report, ReportBody, TargetInfo
from sgx_quote_helper.engine.base import QuotingEngine
from sgx_quote_helper.engine.dcap import SGX_QL_EPHEMERAL, SGX_QL_PERSISTENT, DcapEngine
from sgx_quote_helper.engine.dcap_library import DevicePaths
from sgx_quote_helper.errors import ConfigError, EngineError
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)

KEY = AttKeyId.ecdsa_p256_qe3()


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
def engine(fake: FakeDcap) -> Iterator[DcapEngine]:
    eng = make_engine(fake)
    yield eng
    eng.close()


def app_report(mr_enclave: bytes = b"\x11" * 32) -> Report:
    body = ReportBody(mr_enclave=mr_enclave, report_data=b"\x42" * 64)
    return Report(body=body, key_id=b"\x01" * 32, mac=b"\x02" * 16)


def test_start_sets_persistent_policy_loads_qe_and_reads_key_id(fake: FakeDcap, engine: DcapEngine) -> None:
    assert isinstance(engine, QuotingEngine)
    assert engine.name == "dcap"
    assert fake.control.fake_dcap_policy() == SGX_QL_PERSISTENT
    assert fake.calls("load_qe") == 1
    assert fake.calls("keyid") == 1
    assert engine.supported_key_ids() == [KEY]
    assert engine.supported_key_ids()[0].to_bytes() == KEY.to_bytes()


def test_init_quote_size_query_then_key(fake: FakeDcap, engine: DcapEngine) -> None:
    quote = Quote.from_bytes(fake.quote)
    qe = quote.qe_report
    size_query = engine.init_quote(KEY, want_pub_key_id=False)
    assert (size_query.pub_key_id_size, size_query.target_info, size_query.pub_key_id) == (32, None, None)
    with pytest.raises(EngineError) as no_key:
        engine.quote_size(KEY)
    assert no_key.value.status == QuoteLibStatus.ATT_KEY_NOT_INITIALIZED

    init = engine.init_quote(KEY, want_pub_key_id=True)
    assert fake.control.fake_dcap_last_refresh() == 0  # aesmd never forces a new key
    assert init.pub_key_id_size == 32
    assert init.target_info is not None
    assert init.target_info.mr_enclave == qe.mr_enclave
    assert init.target_info.attributes == qe.attributes
    assert init.target_info.misc_select == qe.misc_select
    # the ECDSA_ID is SHA-256(attestation key || QE auth data) of the real quote
    sig = quote.signature_data
    assert init.pub_key_id == hashlib.sha256(sig.attestation_key + sig.qe_cert.qe_auth_data).digest()


def test_get_quote_returns_the_library_quote_exactly(fake: FakeDcap, engine: DcapEngine) -> None:
    engine.init_quote(KEY, want_pub_key_id=True)
    assert engine.quote_size(KEY) == len(fake.quote)
    result = engine.get_quote(app_report(), KEY)
    assert result.quote == fake.quote
    assert result.qe_report_info is None
    assert Quote.from_bytes(result.quote).to_bytes() == fake.quote


def test_get_quote_with_qe_report_info(fake: FakeDcap, engine: DcapEngine) -> None:
    engine.init_quote(KEY, want_pub_key_id=True)
    nonce = bytes(range(16))
    app_target = TargetInfo(mr_enclave=b"\x33" * 32, attributes=Attributes(flags=0x7, xfrm=0x3))
    sent = QeReportInfo(nonce=nonce, app_enclave_target_info=app_target)
    result = engine.get_quote(app_report(), KEY, sent)
    assert result.quote == fake.quote
    back = result.qe_report_info
    assert back is not None
    assert back.nonce == nonce
    assert back.app_enclave_target_info == app_target
    # the fake's marker report: the quote's QE report body, report_data = nonce || app MRENCLAVE
    qe_body = Quote.from_bytes(fake.quote).qe_report.to_bytes()
    expected_body = qe_body[:320] + nonce + b"\x33" * 32 + bytes(16)
    assert back.qe_report == expected_body + b"\xa5" * 32 + b"\x5a" * 16


def test_unsupported_key_id_never_reaches_the_library(fake: FakeDcap, engine: DcapEngine) -> None:
    other = AttKeyId(algorithm_id=3)
    calls = fake.calls("init")
    with pytest.raises(EngineError) as err:
        engine.init_quote(other, want_pub_key_id=True)
    assert err.value.status == QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID
    assert fake.calls("init") == calls
    # a different tail (beyond the 158-byte base) is the same key
    same = AttKeyId(reserved=b"\x01" * 80)
    assert engine.init_quote(same, want_pub_key_id=False).pub_key_id_size == 32


#: every status the quote library can return, plus codes it does not know
LIBRARY_STATUSES = [s for s in QuoteLibStatus if s != QuoteLibStatus.SUCCESS] + [0xE036, 0xE0AB, 0x0001]


@pytest.mark.parametrize("call", ["init", "size", "quote"])
def test_library_statuses_come_back_as_engine_errors(fake: FakeDcap, engine: DcapEngine, call: str) -> None:
    engine.init_quote(KEY, want_pub_key_id=True)
    for status in LIBRARY_STATUSES:
        fake.force(call, status)
        with pytest.raises(EngineError) as err:
            if call == "init":
                engine.init_quote(KEY, want_pub_key_id=True)
            elif call == "size":
                engine.quote_size(KEY)
            else:
                engine.get_quote(app_report(), KEY)
        assert int(err.value.status) == int(status)
        assert isinstance(err.value.status, QuoteLibStatus)
    fake.force(call, 0)
    assert engine.get_quote(app_report(), KEY).quote == fake.quote


def test_sgx_aesm_addr_is_unset_before_the_library_runs(
    fake: FakeDcap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SGX_AESM_ADDR", "/var/run/aesmd/aesm.socket")
    eng = make_engine(fake)
    try:
        assert "SGX_AESM_ADDR" not in os.environ
        eng.init_quote(KEY, want_pub_key_id=True)
        eng.get_quote(app_report(), KEY)
        assert fake.control.fake_dcap_saw_aesm_addr() == 0
    finally:
        eng.close()


def test_calls_are_serialised(fake: FakeDcap, engine: DcapEngine) -> None:
    engine.init_quote(KEY, want_pub_key_id=True)
    results: list[bytes] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for _ in range(3):
            results.append(engine.get_quote(app_report(), KEY).quote)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [fake.quote] * 12
    assert fake.control.fake_dcap_max_inflight() == 1


def test_close_unloads_and_refuses_further_calls(fake: FakeDcap) -> None:
    eng = make_engine(fake)
    eng.close()
    assert fake.control.fake_dcap_policy() == SGX_QL_EPHEMERAL
    eng.close()  # idempotent
    with pytest.raises(EngineError) as err:
        eng.init_quote(KEY, want_pub_key_id=False)
    assert err.value.status == QuoteLibStatus.SERVICE_UNAVAILABLE


def test_minimal_library_without_optional_symbols(fake: FakeDcap) -> None:
    eng = make_engine(fake, library=str(fake.qe3_minimal))
    try:
        assert eng.supported_key_ids() == [KEY]
        eng.init_quote(KEY, want_pub_key_id=True)
        assert eng.get_quote(app_report(), KEY).quote == fake.quote
    finally:
        eng.close()


# -- start-up refusals -----------------------------------------------------------------------


def test_missing_devices_are_named_with_the_fix(fake: FakeDcap, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_engine(fake, device_root=tmp_path)
    text = str(err.value)
    assert str(tmp_path / "sgx_enclave") in text
    assert str(tmp_path / "sgx_provision") in text
    assert "sgx.intel.com/provision" in text
    assert fake.calls("policy") == 0  # nothing was started


def test_out_of_tree_driver_device_names_are_accepted(fake: FakeDcap, tmp_path: Path) -> None:
    (tmp_path / "sgx").mkdir()
    (tmp_path / "sgx" / "enclave").write_bytes(b"")
    (tmp_path / "sgx" / "provision").write_bytes(b"")
    assert DevicePaths.find(tmp_path) == DevicePaths(tmp_path / "sgx/enclave", tmp_path / "sgx/provision")
    eng = make_engine(fake, device_root=tmp_path)
    try:
        assert fake.calls("load_qe") == 1  # it started: QE3 loaded, policy set
        assert fake.control.fake_dcap_policy() == SGX_QL_PERSISTENT
        eng.init_quote(KEY, want_pub_key_id=True)
        assert eng.get_quote(app_report(), KEY).quote == fake.quote
    finally:
        eng.close()
    # either out-of-tree device missing is named by its out-of-tree path too
    (tmp_path / "sgx" / "provision").unlink()
    with pytest.raises(ConfigError) as err:
        make_engine(fake, device_root=tmp_path)
    assert str(tmp_path / "sgx/provision") in str(err.value)
    assert str(tmp_path / "sgx/enclave") not in str(err.value)


def test_missing_library_and_device_are_reported_together(fake: FakeDcap, tmp_path: Path) -> None:
    (tmp_path / "sgx_enclave").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        make_engine(fake, library=str(tmp_path / "libsgx_qe3_logic.so"), device_root=tmp_path)
    text = str(err.value)
    assert "sgx_provision" in text
    assert "libsgx_qe3_logic.so" in text
    for package in ("libsgx-dcap-ql", "libsgx-dcap-default-qpl", "az-dcap-client"):
        assert package in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root can open any device file")
def test_unusable_device_is_a_permission_error(fake: FakeDcap, tmp_path: Path) -> None:
    for name in ("sgx_enclave", "sgx_provision"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sgx_provision").chmod(0)
    with pytest.raises(ConfigError, match=r"sgx_provision is not readable and writable.*sgx_prv"):
        make_engine(fake, device_root=tmp_path)


def test_a_library_without_the_core_calls_is_refused(fake: FakeDcap) -> None:
    with pytest.raises(ConfigError, match="does not export sgx_ql_set_enclave_load_policy"):
        make_engine(fake, library=str(fake.pce))


@pytest.mark.parametrize(
    ("call", "status", "symbol"),
    [
        ("policy", QuoteLibStatus.UNSUPPORTED_LOADING_POLICY, "sgx_ql_set_enclave_load_policy"),
        ("load_qe", QuoteLibStatus.ENCLAVE_LOAD_ERROR, "load_qe"),
        ("load_qe", QuoteLibStatus.OUT_OF_EPC, "load_qe"),
        ("keyid", QuoteLibStatus.ERROR_UNEXPECTED, "sgx_ql_get_keyid"),
    ],
)
def test_start_up_failures_are_config_errors(
    fake: FakeDcap, call: str, status: QuoteLibStatus, symbol: str
) -> None:
    fake.force(call, status)
    with pytest.raises(ConfigError) as err:
        make_engine(fake)
    assert symbol in str(err.value)
    assert status.name in str(err.value)


def test_missing_pce_library_is_named(fake: FakeDcap, tmp_path: Path) -> None:
    # in a fresh process: this one already has the fake PCE functions loaded globally
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sgx_quote_helper.engine.dcap import DcapEngine\n"
        "from sgx_quote_helper.errors import ConfigError\n"
        "try:\n"
        f"    DcapEngine(library={str(fake.qe3)!r}, pce_library={str(tmp_path / 'libsgx_pce_logic.so.1')!r},"
        f" device_root=Path({str(fake.device_root)!r}))\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "sgx_pce_get_target" in proc.stdout  # the dynamic loader's reason
    assert "PCE logic library" in proc.stdout
    assert "libsgx-dcap-ql" in proc.stdout


def test_qpl_path_is_passed_to_the_library(fake: FakeDcap) -> None:
    eng = make_engine(fake, qpl_path="/opt/azure/libdcap_quoteprov.so")
    try:
        control = fake.control
        control.fake_dcap_qpl_path.restype = ctypes.c_char_p
        assert control.fake_dcap_qpl_path() == b"/opt/azure/libdcap_quoteprov.so"
    finally:
        eng.close()
    fake.force("qpl", QuoteLibStatus.PLATFORM_LIB_UNAVAILABLE)
    with pytest.raises(ConfigError, match="PLATFORM_LIB_UNAVAILABLE"):
        make_engine(fake, qpl_path="/nope.so")
    with pytest.raises(ConfigError, match="does not export sgx_set_qpl_path"):
        make_engine(fake, library=str(fake.qe3_minimal), qpl_path="/x.so")


def test_unusable_device_message(fake: FakeDcap, monkeypatch: pytest.MonkeyPatch) -> None:
    # as root every device file is accessible: simulate the sgx_prv group check failing
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: "provision" not in str(p) and real_access(p, mode))
    with pytest.raises(ConfigError, match=r"sgx_provision is not readable and writable.*sgx_prv"):
        make_engine(fake)
    assert fake.calls("policy") == 0
