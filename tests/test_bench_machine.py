"""benchmark/machine.py: the idle-state facts a benchmark result records (read from a sysfs tree)."""

from __future__ import annotations

from pathlib import Path

from sgx_quote_helper.benchmark.machine import cpuidle, machine_line


def _sysfs(root: Path, driver: str | None, poll: str | None) -> Path:
    idle = root / "devices/system/cpu/cpuidle"
    idle.mkdir(parents=True)
    if driver is not None:
        (idle / "current_driver").write_text(driver + "\n")
        (idle / "current_governor").write_text(driver + "\n")
    if poll is not None:
        params = root / "module/haltpoll/parameters"
        params.mkdir(parents=True)
        (params / "guest_halt_poll_ns").write_text(poll + "\n")
    return root


def test_a_kvm_guest_with_halt_polling_off_says_so(tmp_path: Path) -> None:
    idle = cpuidle(_sysfs(tmp_path, "haltpoll", "0"))
    assert idle == {"driver": "haltpoll", "governor": "haltpoll", "halt_poll_ns": 0}
    line = machine_line({"nproc": 2, "cpuidle": idle})
    assert line.endswith(", cpuidle haltpoll (halt-poll 0 ns)")


def test_bare_metal_and_missing_facts(tmp_path: Path) -> None:
    idle = cpuidle(_sysfs(tmp_path, "intel_idle", None))
    assert idle == {"driver": "intel_idle", "governor": "intel_idle", "halt_poll_ns": None}
    assert machine_line({"cpuidle": idle}).endswith(", cpuidle intel_idle")
    nothing = cpuidle(tmp_path / "absent")
    assert nothing == {"driver": None, "governor": None, "halt_poll_ns": None}
    assert "cpuidle" not in machine_line({"cpuidle": nothing})


def test_an_unreadable_poll_value_is_not_guessed(tmp_path: Path) -> None:
    assert cpuidle(_sysfs(tmp_path, "haltpoll", "garbage"))["halt_poll_ns"] is None
