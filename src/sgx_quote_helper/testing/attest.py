"""A loopback attestation rig for benchmarks and demos: a simulated platform, its PCCS
(``pccs serve --simulated``) and the attestation service (``attest serve``) as child processes,
and one attestation request body whose quote binds its runtime data.

``cold=True`` starts the service with ``--collateral-ttl 0``: collateral is fetched from the PCCS
for every request (the cold path); otherwise it is fetched once and reused (the warm path).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ..abi.keyid import AttKeyId
from ..attest.policy import b64url
from ..engine.simulated import SimulatedEngine
from ..errors import ConfigError
from ..sim import collateral as sim_collateral
from ..sim.platform import Platform
from ..sim.qe import QE_TARGET_INFO

RUNTIME_DATA = json.dumps({"keys": [{"kid": "bench", "kty": "EC", "crv": "P-256"}]}).encode()


def _start(args: list[str], prefix: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgx_quote_helper", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        raise ConfigError(f"{args[0]} did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0]


@dataclass
class AttestRig:
    """The running rig (use as a context manager): ``url``, ``pid`` of the service, ``body``."""

    cold: bool = False
    workdir: Path | None = None
    url: str = ""
    pid: int = 0
    body: bytes = b""
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> AttestRig:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sqh-attest-bench-")
            self.workdir = Path(self._tmp.name)
        d = self.workdir
        platform = Platform.init(d / "platform", force=True)
        engine = SimulatedEngine(platform)
        key_id = AttKeyId.ecdsa_p256_qe3()
        engine.init_quote(key_id, True)
        report = platform.ereport(
            QE_TARGET_INFO, hashlib.sha256(RUNTIME_DATA).digest(), mr_enclave=b"\x42" * 32
        )
        quote = bytes(engine.get_quote(report, key_id).quote)
        (d / "root.der").write_bytes(sim_collateral.root_ca_der(platform))
        self.body = json.dumps(
            {"quote": b64url(quote), "runtimeData": {"data": b64url(RUNTIME_DATA), "dataType": "JSON"}}
        ).encode()
        try:
            pccs, pccs_url = _start(
                ["pccs", "serve", "--simulated", "--state-dir", str(d / "platform"), "--port", "0"],
                "pccs ready at ",
            )
            self._procs.append(pccs)
            args = ["attest", "serve", "--key-dir", str(d / "keys"), "--pccs", pccs_url, "--port", "0",
                    "--root-ca", str(d / "root.der"), "--log-level", "warning",
                    "--collateral-ttl", "0" if self.cold else "1h"]  # fmt: skip
            service, self.url = _start(args, "attest ready at ")
            self._procs.append(service)
            self.pid = service.pid
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["RUNTIME_DATA", "AttestRig"]
