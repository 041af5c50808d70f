"""What a benchmark ran on, and what a process costs: machine description and ``/proc`` readers.

Numbers without the machine are meaningless, so every result carries :func:`describe_machine`
(CPU count and model, memory, Python, library versions, uvloop and the protobuf backend, load
average). :func:`rss_kib`, :func:`peak_rss_kib` and :func:`cpu_seconds` read a process's
``/proc/PID/status`` and ``/proc/PID/stat`` (Linux); they return ``None`` where there is no ``/proc``.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

#: the distributions whose versions go into a result
LIBRARIES = ("sgx-quote-helper", "cryptography", "protobuf", "uvloop", "grpcio", "dcap-qvl", "rich", "click")


def protobuf_backend() -> str:
    """The protobuf runtime in use ("upb" is the fast one, "python" ~15x slower)."""
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


def uvloop_version() -> str | None:
    """uvloop's version when it can be imported, else ``None``."""
    try:
        import uvloop
    except ImportError:
        return None
    return str(getattr(uvloop, "__version__", "?"))


def _proc_field(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    return _proc_field(Path("/proc/cpuinfo"), "model name") or platform.processor() or "unknown"


def memory_mib() -> int | None:
    """Total memory in MiB (MemTotal)."""
    total = _proc_field(Path("/proc/meminfo"), "MemTotal")
    return int(total.split()[0]) // 1024 if total else None


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _status_kib(pid: int, key: str) -> int | None:
    value = _proc_field(Path(f"/proc/{pid}/status"), key)
    return int(value.split()[0]) if value else None


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), ``None`` if unknown."""
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident set size of ``pid`` in KiB (VmHWM), ``None`` if unknown."""
    return _status_kib(pid, "VmHWM:")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads) in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs have spent busy (not idle/iowait) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(
    threshold_cores: float, max_wait: float, sample: float = 1.0
) -> tuple[bool, float, float]:
    """Wait until the whole machine uses at most ``threshold_cores`` over one ``sample`` window
    (call it while your own processes are idle), for at most ``max_wait`` seconds.

    Returns ``(quiet, seconds_waited, busy_cores_in_last_window)``.
    """
    start = time.monotonic()
    busy = math.inf
    while True:
        before = system_busy_seconds()
        time.sleep(sample)
        after = system_busy_seconds()
        if before is None or after is None:
            return False, time.monotonic() - start, math.nan
        busy = (after - before) / sample
        waited = time.monotonic() - start
        if busy <= threshold_cores or waited >= max_wait:
            return busy <= threshold_cores, waited, busy


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter for the numbers (``None`` = absent)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        out["openssl (cryptography)"] = str(backend.openssl_version_text())
    except Exception:  # pragma: no cover - backend layout differs across cryptography versions
        out["openssl (cryptography)"] = None
    return out


#: the KVM guest's halt-polling limit (cpuidle-haltpoll): how long an idle vCPU spins before it halts
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpuidle(sysfs: Path = Path("/sys")) -> dict[str, Any]:
    """The idle driver and governor, and the guest halt-poll limit in ns (``None`` where absent).

    On a VM this decides what waking an idle CPU costs: a halted vCPU needs an interrupt through
    the hypervisor, one still polling does not. Cross-CPU wake-ups are one per reply for a
    quote service, so results of machines that differ here are not comparable.
    """
    base = sysfs / "devices/system/cpu/cpuidle"
    poll = _read_text(sysfs / HALT_POLL_NS.relative_to("/sys"))
    return {
        "driver": _read_text(base / "current_driver"),
        "governor": _read_text(base / "current_governor"),
        "halt_poll_ns": int(poll) if poll is not None and poll.isdigit() else None,
    }


def describe_machine() -> dict[str, Any]:
    """Everything a reader needs to compare a result with another machine's."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_mib": memory_mib(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": library_versions(),
        "uvloop": uvloop_version(),
        "protobuf_backend": protobuf_backend(),
        "load_average": load_average(),
        "cpuidle": cpuidle(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line for a table caption: "2 x Intel Xeon ..., 23 GiB, CPython 3.11.7, ..."."""
    libs = machine.get("libraries", {})
    mem = machine.get("memory_mib")
    mem_text = f"{mem / 1024:.0f} GiB" if mem else "? GiB"
    return (
        f"{machine.get('nproc')} CPUs ({machine.get('cpu_model')}), {mem_text} RAM, "
        f"{machine.get('python')}, cryptography {libs.get('cryptography')}, protobuf "
        f"{libs.get('protobuf')} ({machine.get('protobuf_backend')}), uvloop {machine.get('uvloop')}"
        + (f", cpuidle {idle}" if (idle := cpuidle_text(machine.get("cpuidle"))) else "")
    )


def cpuidle_text(idle: dict[str, Any] | None) -> str:
    """What :func:`cpuidle` found, for a caption: "haltpoll (halt-poll 0 ns)"; "" if nothing."""
    if not idle or not idle.get("driver"):
        return ""
    poll = idle.get("halt_poll_ns")
    return str(idle["driver"]) + (f" (halt-poll {poll} ns)" if poll is not None else "")


__all__ = [
    "HALT_POLL_NS",
    "cpu_model",
    "cpu_seconds",
    "cpuidle",
    "cpuidle_text",
    "describe_machine",
    "library_versions",
    "load_average",
    "machine_line",
    "memory_mib",
    "peak_rss_kib",
    "protobuf_backend",
    "rss_kib",
    "system_busy_seconds",
    "uvloop_version",
    "wait_until_quiet",
]
