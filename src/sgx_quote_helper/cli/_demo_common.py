"""What ``demo`` and ``demo --tee tdx`` share: a service as a child process, and output helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ..abi.aesm import AESM_ADDR_ENV


@contextlib.contextmanager
def child_process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` as a child process (output to ``log``, without SGX_AESM_ADDR); stopped on exit."""
    env = {k: v for k, v in os.environ.items() if k != AESM_ADDR_ENV}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, and the exit status (the service must stop cleanly on it)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(10)


def yes(ok: bool) -> str:
    return "yes" if ok else "[bold red]NO[/]"


def short(data: bytes, n: int = 8) -> str:
    return data[:n].hex() + "…"


def pem_chain(pem: bytes) -> list[object]:
    from cryptography import x509

    return list(x509.load_pem_x509_certificates(pem))


def cn(cert: object) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


__all__ = ["child_process", "cn", "pem_chain", "short", "stop", "yes"]
