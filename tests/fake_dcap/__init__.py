"""A fake Intel DCAP quote library (C, built with gcc into a temp dir) for hardware-free tests.

``fake_dcap`` (session fixture) compiles ``fake_qe3_logic.c`` (the sgx_ql_* core calls with
Intel's prototypes, answering from a REAL quote of ``../shared/testdata/real``), a minimal
variant without the optional symbols, ``fake_pce_logic.c`` and ``fake_qpl.c`` (a quote provider
library with Intel's logging callback); it skips the tests only when gcc is absent.
``FakeDcap.control`` / ``pce_control`` / ``qpl_control`` are ctypes handles on the same loaded
libraries, used to force statuses and read what the engine did (see each C file's header).
``fake_tdx`` builds ``fake_tdx_logic.c`` (the tee_att_* calls of libsgx_tdx_logic) the same way.
The enclave files the fake QE3 and PCE "load" are empty files in ``enclave_dir``
(``$FAKE_DCAP_ENCLAVE_DIR``); point the variable elsewhere to model a node without them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import real_dir

HERE = Path(__file__).resolve().parent
#: the real quote the fake library serves
QUOTE_VECTOR = "phala-sgx-v3-processor"


@dataclass(frozen=True)
class FakeDcap:
    qe3: Path  # full fake libsgx_qe3_logic.so
    qe3_minimal: Path  # without sgx_ql_get_keyid and load_qe
    pce: Path  # fake libsgx_pce_logic.so
    qpl: Path  # fake libdcap_quoteprov.so.1
    quote: bytes  # the real quote it serves
    device_root: Path  # holds sgx_enclave and sgx_provision (plain files)
    enclave_dir: Path  # holds libsgx_qe3.signed.so.1 and libsgx_pce.signed.so.1 (plain files)

    @property
    def control(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.qe3), mode=ctypes.RTLD_GLOBAL)
        lib.fake_dcap_set_status.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.fake_dcap_calls.argtypes = [ctypes.c_char_p]
        lib.fake_dcap_calls.restype = ctypes.c_uint32
        lib.fake_dcap_last_quote_size.restype = ctypes.c_uint32
        return lib

    @property
    def pce_control(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.pce), mode=ctypes.RTLD_GLOBAL)
        lib.fake_pce_set_status.argtypes = [ctypes.c_uint32]
        lib.fake_pce_calls.restype = ctypes.c_uint32
        return lib

    @property
    def qpl_control(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.qpl))
        lib.fake_qpl_set_status.argtypes = [ctypes.c_uint32]
        lib.fake_qpl_log.argtypes = [ctypes.c_int, ctypes.c_char_p]
        return lib

    def force(self, fn: str, status: int) -> None:
        assert self.control.fake_dcap_set_status(fn.encode(), status) == 0

    def calls(self, fn: str) -> int:
        return int(self.control.fake_dcap_calls(fn.encode()))

    def reset(self) -> None:
        self.control.fake_dcap_reset()
        self.pce_control.fake_pce_reset()
        self.qpl_control.fake_qpl_reset()


def _gcc(out: Path, *args: str) -> None:
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(out), *args, "-ldl"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


#: the one build of the session: every test module that imports the fixture gets its own
#: session fixture, but a second copy of these libraries in the process would be wrong (the first
#: loaded RTLD_GLOBAL copy interposes its symbols, so controls and calls would reach different
#: copies)
_BUILT: list[FakeDcap] = []


@pytest.fixture(scope="session")
def fake_dcap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDcap]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the fake DCAP library")
    if _BUILT:
        yield _BUILT[0]
        return
    quote_path = real_dir(QUOTE_VECTOR) / "quote.bin"
    out = tmp_path_factory.mktemp("fake_dcap")
    pce = out / "libfake_pce_logic.so"
    qe3 = out / "libfake_qe3_logic.so"
    minimal = out / "libfake_qe3_logic_minimal.so"
    qpl = out / "libfake_dcap_quoteprov.so.1"
    _gcc(qpl, str(HERE / "fake_qpl.c"))
    _gcc(pce, str(HERE / "fake_pce_logic.c"))
    _gcc(qe3, str(HERE / "fake_qe3_logic.c"))
    _gcc(minimal, "-DFAKE_MINIMAL", str(HERE / "fake_qe3_logic.c"))
    devices = out / "dev"
    devices.mkdir()
    for name in ("sgx_enclave", "sgx_provision"):
        (devices / name).write_bytes(b"")
    enclaves = out / "enclaves"
    enclaves.mkdir()
    for name in ("libsgx_qe3.signed.so.1", "libsgx_pce.signed.so.1"):
        (enclaves / name).write_bytes(b"")
    env = {"FAKE_DCAP_QUOTE": str(quote_path), "FAKE_DCAP_ENCLAVE_DIR": str(enclaves)}
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    # the fake QE3 logic leaves sgx_pce_get_target undefined, like Intel's: load the PCE first
    ctypes.CDLL(str(pce), mode=ctypes.RTLD_GLOBAL)
    _BUILT.append(FakeDcap(qe3, minimal, pce, qpl, quote_path.read_bytes(), devices, enclaves))
    yield _BUILT[0]
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@dataclass(frozen=True)
class FakeTdx:
    """The fake libsgx_tdx_logic.so.1 (``fake_tdx_logic.c``) and what it shares with ``FakeDcap``.

    Its QPL is ``FakeDcap.qpl`` (``$FAKE_TDX_QPL``: the same loaded copy, so ``qpl_control``
    reaches it); the TDQE it "loads" is an empty file in ``enclave_dir`` (``$FAKE_TDX_ENCLAVE_DIR``).
    """

    lib: Path  # full fake libsgx_tdx_logic.so.1
    minimal: Path  # without tee_att_set_path, tee_att_get_qpl_handle, tee_att_get_platform_info
    dcap: FakeDcap
    enclave_dir: Path

    @property
    def device_root(self) -> Path:
        return self.dcap.device_root

    @property
    def control(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.lib))
        lib.fake_tdx_set_status.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.fake_tdx_calls.argtypes = [ctypes.c_char_p]
        lib.fake_tdx_calls.restype = ctypes.c_uint32
        lib.fake_tdx_set_quote.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.fake_tdx_expect_report.argtypes = [ctypes.c_char_p]
        lib.fake_tdx_set_size.argtypes = [ctypes.c_uint32]
        lib.fake_tdx_set_pad.argtypes = [ctypes.c_uint32]
        lib.fake_tdx_last_quote_size.restype = ctypes.c_uint32
        lib.fake_tdx_last_report.argtypes = [ctypes.c_char_p]
        lib.fake_tdx_set_delay_us.argtypes = [ctypes.c_uint]
        lib.fake_tdx_set_platform.argtypes = [ctypes.c_char_p]
        return lib

    @property
    def qpl_control(self) -> ctypes.CDLL:
        lib = self.dcap.qpl_control
        lib.fake_qpl_set_blob.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.fake_qpl_set_collateral_for.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint16,
            ctypes.c_uint16,
        ]
        return lib

    def force(self, fn: str, status: int) -> None:
        assert self.control.fake_tdx_set_status(fn.encode(), status) == 0

    def calls(self, fn: str) -> int:
        return int(self.control.fake_tdx_calls(fn.encode()))

    def serve(self, quote: bytes, expect_report: bytes | None = None) -> None:
        """Serve ``quote``; with ``expect_report``, refuse any other report (INVALID_REPORT)."""
        assert self.control.fake_tdx_set_quote(quote, len(quote)) == 0
        self.control.fake_tdx_expect_report(expect_report)

    def last_report(self) -> bytes:
        buf = ctypes.create_string_buffer(1024)
        self.control.fake_tdx_last_report(buf)
        return buf.raw

    def reset(self) -> None:
        self.control.fake_tdx_reset()
        self.dcap.qpl_control.fake_qpl_reset()


_BUILT_TDX: list[FakeTdx] = []


@pytest.fixture(scope="session")
def fake_tdx(fake_dcap: FakeDcap, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTdx]:
    if _BUILT_TDX:
        yield _BUILT_TDX[0]
        return
    out = tmp_path_factory.mktemp("fake_tdx")
    lib = out / "libfake_sgx_tdx_logic.so.1"
    minimal = out / "libfake_sgx_tdx_logic_minimal.so.1"
    _gcc(lib, str(HERE / "fake_tdx_logic.c"))
    _gcc(minimal, "-DFAKE_MINIMAL", str(HERE / "fake_tdx_logic.c"))
    enclaves = out / "enclaves"
    enclaves.mkdir()
    (enclaves / "libsgx_tdqe.signed.so.1").write_bytes(b"")
    env = {"FAKE_TDX_QPL": str(fake_dcap.qpl), "FAKE_TDX_ENCLAVE_DIR": str(enclaves)}
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    _BUILT_TDX.append(FakeTdx(lib, minimal, fake_dcap, enclaves))
    yield _BUILT_TDX[0]
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
