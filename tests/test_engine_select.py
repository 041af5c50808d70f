"""Engine selection: ``auto`` picks the hardware engine or refuses; never a silent simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_quote_helper.engine.dcap import DcapEngine
from sgx_quote_helper.engine.select import DcapOptions, select_engine
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import ConfigError, PlatformStateError
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)


def options(fake: FakeDcap) -> DcapOptions:
    return DcapOptions(library=str(fake.qe3), pce_library=str(fake.pce), device_root=fake.device_root)


def test_auto_picks_the_hardware_engine_when_present(fake_dcap: FakeDcap, tmp_path: Path) -> None:  # noqa: F811
    fake_dcap.reset()
    engine = select_engine("auto", state_dir=tmp_path / "unused", dcap=options(fake_dcap))
    try:
        assert isinstance(engine, DcapEngine)
        assert engine.name == "dcap"
        assert not (tmp_path / "unused").exists()
    finally:
        engine.close()


def test_auto_refuses_without_hardware_and_names_the_simulated_engine(tmp_path: Path) -> None:
    dcap = DcapOptions(library=str(tmp_path / "libsgx_qe3_logic.so"), device_root=tmp_path)
    with pytest.raises(ConfigError) as err:
        select_engine("auto", state_dir=tmp_path / "state", create_state=True, dcap=dcap)
    text = str(err.value)
    assert "sgx_enclave" in text and "sgx_provision" in text and "libsgx_qe3_logic.so" in text
    assert "--engine simulated" in text
    assert not (tmp_path / "state").exists()  # nothing simulated was created


def test_dcap_refuses_without_the_simulated_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        select_engine("dcap", dcap=DcapOptions(library=str(tmp_path / "nope.so"), device_root=tmp_path))
    assert "--engine simulated" not in str(err.value)
    assert "libsgx-dcap-ql" in str(err.value)


def test_simulated_needs_a_platform(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="state directory"):
        select_engine("simulated")
    with pytest.raises(PlatformStateError, match="sim init"):
        select_engine("simulated", state_dir=tmp_path / "empty")
    engine = select_engine("simulated", state_dir=tmp_path / "new", create_state=True)
    assert isinstance(engine, SimulatedEngine)
    engine.close()


@pytest.mark.parametrize("name", ["proxy", "hardware", ""])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        select_engine(name)


def test_serve_engine_auto_exits_at_once_without_hardware(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    if Path("/dev/sgx_enclave").exists():
        pytest.skip("this machine has SGX: auto would serve from the hardware engine")
    sock = tmp_path / "aesm.socket"
    result = CliRunner().invoke(cli, ["serve", "--engine", "auto", "--socket", str(sock)])
    assert result.exit_code != 0
    assert "/dev/sgx_enclave" in result.output
    assert "--engine simulated" in result.output
    assert not sock.exists()


def test_serve_passes_the_dcap_library_path(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    lib = tmp_path / "custom" / "libsgx_qe3_logic.so"
    args = ["serve", "--engine", "dcap", "--dcap-library", str(lib), "--socket", str(tmp_path / "s")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert f"cannot load {lib}" in result.output
    assert "--engine simulated" not in result.output  # dcap, unlike auto, says nothing of simulation
