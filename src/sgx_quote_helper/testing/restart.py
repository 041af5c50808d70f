"""Restart fault harness: clients quote continuously while the daemon process is replaced.

Real ``sgx-quote-helper serve --engine simulated`` subprocesses on one socket path (one shared
platform state dir, so app reports stay valid across restarts). Two kinds of client threads:

- ``intel``: what Intel's libsgx_quote_ex does: one connection per request, connect once, no retry
  (a refused connect, a close without reply or a bad reply is a failure);
- ``ours``: :class:`~sgx_quote_helper.client.QuoteClient` with its retry within its deadline.

Every quote is parsed with :mod:`sgx_quote_helper.abi.quote`, its report body compared with the app
report that was sent (so the right report data), and its ECDSA signature checked with the
attestation key it carries: a corrupted or truncated quote cannot pass.

Restart modes: ``rolling`` (start the new process, wait until it answers our HelperProbe on the
path, then SIGTERM the old one and wait for it to exit 0) and ``sigkill`` (SIGKILL the old one,
then start the new one: a crash and a restart by the supervisor).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..abi.quote import Quote
from ..abi.report import Report
from ..client import QuoteClient
from ..errors import SgxQuoteHelperError
from ..server.socketpath import PathState, probe_path
from ..sim.platform import Platform
from ..wire import messages as m
from ..wire.framing import FrameDecoder, encode_frame

CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]
#: Intel's client gives up after this long
INTEL_TIMEOUT = 15.0


@dataclass(slots=True)
class ClientStats:
    """What one client thread saw."""

    kind: str
    ok: int = 0
    failed: int = 0
    bad_quotes: int = 0
    max_latency: float = 0.0
    max_gap: float = 0.0
    errors: list[str] = field(default_factory=list)


def check_quote(raw: bytes, report: Report, keys: dict[bytes, ec.EllipticCurvePublicKey]) -> str | None:
    """None if ``raw`` is a whole, correctly signed quote of ``report``; else what is wrong."""
    try:
        q = Quote.from_bytes(raw)
    except SgxQuoteHelperError as exc:
        return f"unparsable quote: {exc}"
    if q.body != report.body:
        return "quote body is not the app's report body (wrong report data)"
    sig = q.signature_data
    key = keys.get(sig.attestation_key)
    if key is None:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
        keys[sig.attestation_key] = key
    r, s = int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), q.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad quote signature"
    return None


class Daemons:
    """The serve subprocesses on one path (see the module doc)."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.path = root / "aesm.socket"
        self.state = root / "plat"
        self.extra_args = extra_args
        self.current: subprocess.Popen[bytes] | None = None
        self.started = 0
        self.exit_codes: list[int] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start one more daemon on the path and wait until it answers there."""
        self.started += 1
        log = open(self.root / f"daemon-{self.started}.log", "wb")  # noqa: SIM115 - the child owns it
        cmd = [*CLI, "serve", "--socket", str(self.path), "--state-dir", str(self.state), *self.extra_args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {proc.returncode}; see {self.root}/daemon-{self.started}.log"
                )
            found = probe_path(self.path, 1.0)
            if found.state is PathState.OURS and found.pid == proc.pid:
                return proc
            time.sleep(0.02)
        raise RuntimeError("the new daemon did not take the path over within 60 s")

    def start(self) -> None:
        """The first daemon."""
        self.current = self.spawn()

    def restart(self, mode: str) -> None:
        """Replace the running daemon (``rolling`` or ``sigkill``)."""
        old = self.current
        assert old is not None
        if mode == "rolling":
            self.current = self.spawn()
            old.send_signal(signal.SIGTERM)
            self.exit_codes.append(old.wait(60))
        elif mode == "sigkill":
            old.kill()
            old.wait(60)
            self.current = self.spawn()
        else:
            raise ValueError(f"unknown restart mode {mode!r}")

    def stop(self) -> None:
        """SIGTERM the running daemon and wait."""
        if self.current is not None and self.current.poll() is None:
            self.current.send_signal(signal.SIGTERM)
            self.exit_codes.append(self.current.wait(60))
        self.current = None


def _intel_request(path: Path, frame: bytes) -> bytes:
    """One request as libsgx_quote_ex makes it: connect once, send, read one reply, close."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(INTEL_TIMEOUT)
    try:
        s.connect(str(path))
        s.sendall(frame)
        dec = FrameDecoder(1 << 20)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a (complete) reply")
            frames = dec.feed(chunk)
            if frames:
                resp = m.decode_response(frames[0])
                if not isinstance(resp, m.GetQuoteExResponse) or resp.error_code != 0 or resp.quote is None:
                    raise ConnectionError(f"reply {resp!r:.120}")
                return resp.quote
    finally:
        s.close()


class Load:
    """``clients`` threads quoting until :meth:`stop` (half ``intel``, half ``ours``)."""

    def __init__(self, daemons: Daemons, clients: int, retry_deadline: float = 15.0) -> None:
        platform = Platform.open(daemons.state)
        probe = QuoteClient(daemons.path, retry_deadline=30, timeout=30)
        init = probe.init_quote_ex()
        self.size = probe.get_quote_size_ex()
        self.key = probe.key_id.to_bytes()
        self.path = daemons.path
        self.retry_deadline = retry_deadline
        self.stats = [ClientStats("intel" if i % 2 == 0 else "ours") for i in range(clients)]
        self.reports = [
            platform.ereport(init.target_info, f"restart-fault client {i}".encode().ljust(64, b"\0"))
            for i in range(clients)
        ]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        """Start the client threads."""
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop and join the client threads."""
        self._stop.set()
        for t in self._threads:
            t.join(INTEL_TIMEOUT + self.retry_deadline + 5)

    def _run(self, i: int) -> None:
        st, rep = self.stats[i], self.reports[i]
        keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        frame = encode_frame(
            m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), self.key, None, self.size, 15000))
        )
        client = QuoteClient(self.path, retry_deadline=self.retry_deadline, timeout=INTEL_TIMEOUT)
        last_ok = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if st.kind == "intel":
                    quote = _intel_request(self.path, frame)
                else:
                    quote = client.get_quote_ex(rep, buf_size=self.size).quote
            except (OSError, SgxQuoteHelperError) as exc:
                st.failed += 1
                if len(st.errors) < 5:
                    st.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.01)  # an app would report the error; do not spin
                continue
            now = time.monotonic()
            problem = check_quote(quote, rep, keys)
            if problem is not None:
                st.bad_quotes += 1
                if len(st.errors) < 5:
                    st.errors.append(problem)
                continue
            st.ok += 1
            st.max_latency = max(st.max_latency, now - t0)
            st.max_gap = max(st.max_gap, now - last_ok)
            last_ok = now


def summarize(stats: list[ClientStats]) -> dict[str, Any]:
    """Totals per client kind."""
    out: dict[str, Any] = {}
    for kind in ("intel", "ours"):
        group = [s for s in stats if s.kind == kind]
        out[kind] = {
            "clients": len(group),
            "ok": sum(s.ok for s in group),
            "failed": sum(s.failed for s in group),
            "bad_quotes": sum(s.bad_quotes for s in group),
            "max_latency_s": round(max((s.max_latency for s in group), default=0.0), 4),
            "max_gap_s": round(max((s.max_gap for s in group), default=0.0), 4),
            "errors": sorted({e for s in group for e in s.errors})[:10],
        }
    return out


def run_restarts(
    root: Path,
    mode: str,
    restarts: int,
    clients: int,
    *,
    settle: float = 0.3,
    retry_deadline: float = 15.0,
    daemon_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start a daemon, ``clients`` quoting threads, restart ``restarts`` times in ``mode`` with
    ``settle`` seconds of load between restarts; the per-kind totals, exit codes and timings.
    Each daemon's output stays in ``root/daemon-N.log``."""
    daemons = Daemons(root, daemon_args)
    daemons.start()
    load = Load(daemons, clients, retry_deadline)
    t0 = time.monotonic()
    restart_times: list[float] = []
    try:
        load.start()
        time.sleep(settle)
        for _ in range(restarts):
            r0 = time.monotonic()
            daemons.restart(mode)
            restart_times.append(time.monotonic() - r0)
            time.sleep(settle)
    finally:
        load.stop()
        daemons.stop()
    return {
        "mode": mode,
        "restarts": restarts,
        "clients": clients,
        "seconds": round(time.monotonic() - t0, 2),
        "old_exit_codes": daemons.exit_codes,
        "max_restart_s": round(max(restart_times, default=0.0), 3),
        "pid": os.getpid(),
        **summarize(load.stats),
        "per_client": [asdict(s) for s in load.stats if s.failed or s.bad_quotes],
    }


__all__ = ["ClientStats", "Daemons", "Load", "check_quote", "run_restarts", "summarize"]
