"""A quote daemon under test in its own process: start it, time its start-up, read its memory, stop it.

:class:`DaemonProcess` runs ``python -m sgx_quote_helper serve ...`` exactly as an operator would
(so what it measures includes the interpreter, the imports and the socket set-up) and reports the
time from ``exec`` to the first answered request on its socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ..client import QuoteClient
from ..errors import AesmError, BadResponseError, TransportError
from .machine import cpu_seconds, peak_rss_kib, rss_kib


class DaemonProcess:
    """``sgx-quote-helper serve`` on ``socket_path`` with the simulated platform in ``state_dir``.

    Args:
        socket_path: where it serves.
        state_dir: an existing simulated platform (create one first: its RSA key takes seconds).
        use_uvloop: ``False`` adds ``--no-uvloop``.
        extra_args: more ``serve`` options.
        cpu_affinity: CPUs the daemon may run on (``taskset``-like), ``None`` = all.
    """

    def __init__(
        self,
        socket_path: Path,
        state_dir: Path,
        *,
        use_uvloop: bool = True,
        extra_args: Sequence[str] = (),
        cpu_affinity: frozenset[int] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.state_dir = state_dir
        self.use_uvloop = use_uvloop
        self.extra_args = tuple(extra_args)
        self.cpu_affinity = cpu_affinity
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._log: IO[bytes] | None = None
        #: stderr's tail once stopped
        self.final_log = ""

    @property
    def argv(self) -> list[str]:
        """The command line that is run."""
        argv = [sys.executable, "-m", "sgx_quote_helper", "serve", "--socket", str(self.socket_path)]
        argv += ["--state-dir", str(self.state_dir), "-q"]
        if not self.use_uvloop:
            argv.append("--no-uvloop")
        return argv + list(self.extra_args)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the daemon is not running")
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until the socket answers a request; returns the seconds that took.

        Raises:
            RuntimeError: the daemon exited or did not answer within ``timeout``.
        """
        affinity = self.cpu_affinity

        def pin() -> None:  # pragma: no cover - runs in the child
            if affinity and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, affinity)

        t0 = time.perf_counter()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(self.argv, preexec_fn=pin, stderr=self._log)
        deadline = t0 + timeout
        client = QuoteClient(self.socket_path, timeout=5, retry_deadline=0, backoff=0.001)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                client.get_supported_att_key_id_num()
                break
            except TransportError:
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the daemon did not answer on {self.socket_path} within {timeout:g} s"
                    ) from None
                time.sleep(0.001)
            except (AesmError, BadResponseError) as exc:
                self.stop()
                raise RuntimeError(f"the daemon answered badly: {exc}") from exc
        self.startup_s = time.perf_counter() - t0
        return self.startup_s

    def rss_kib(self) -> int | None:
        """Current resident memory (VmRSS) in KiB."""
        return rss_kib(self.pid)

    def peak_rss_kib(self) -> int | None:
        """Peak resident memory (VmHWM) in KiB."""
        return peak_rss_kib(self.pid)

    def cpu_seconds(self) -> float | None:
        """CPU time used so far (all threads)."""
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT (graceful, at once: no successor is coming, so no handover window), then SIGKILL
        after ``timeout``; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self.final_log = self.log_tail()
            self._log.close()
            self._log = None
        return proc.returncode

    def log_tail(self, limit: int = 2000) -> str:
        """The end of what the daemon wrote to stderr."""
        if self._log is None:
            return self.final_log
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-limit:]

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DaemonProcess"]
