"""Raw ceilings on this machine, measured in the same run as the service: one core, no I/O.

What bounds a quote service from below: the QE's two primitives (AES-128-CMAC of the app REPORT
body, ECDSA P-256 signature over header + body) and the whole simulated engine in-process
(:class:`~sgx_quote_helper.engine.simulated.SimulatedEngine` ``get_quote``: MAC check, quote
assembly, signature), which is also what an app pays with an in-process quoting library.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms

from ..engine.simulated import SimulatedEngine
from ..sim.platform import Platform
from .timing import LatencySamples, rate, timed_calls
from .workload import BENCH_REPORT_DATA

#: what the QE signs: 48-byte header + 384-byte report body
SIGNED_BYTES = 432
#: what the QE MACs: the report body
MACED_BYTES = 384


def ecdsa_sign_rate(seconds: float) -> float:
    """ECDSA P-256 / SHA-256 signatures per second over 432 bytes, one thread."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = bytes(range(256)) + bytes(SIGNED_BYTES - 256)
    algorithm = ec.ECDSA(hashes.SHA256())
    return rate(lambda: key.sign(message, algorithm), seconds)[0]


def cmac_rate(seconds: float) -> float:
    """AES-128-CMAC computations per second over 384 bytes (new context per MAC), one thread."""
    key = bytes(range(16))
    message = bytes(MACED_BYTES)

    def one() -> bytes:
        mac = cmac.CMAC(algorithms.AES(key))
        mac.update(message)
        return mac.finalize()

    return rate(one, seconds)[0]


def engine_quote_latencies(platform: Platform, seconds: float) -> LatencySamples:
    """Per-call latency of in-process ``SimulatedEngine.get_quote`` (one thread, back to back).

    The app REPORT is made by ``platform`` for the engine's QE, as an enclave's EREPORT would be.
    """
    engine = SimulatedEngine(platform)
    key_id = engine.supported_key_ids()[0]
    target = engine.init_quote(key_id, True).target_info
    assert target is not None
    report = platform.ereport(target, BENCH_REPORT_DATA, mr_enclave=b"\x42" * 32)
    return timed_calls(lambda: engine.get_quote(report, key_id), seconds)


__all__ = ["cmac_rate", "ecdsa_sign_rate", "engine_quote_latencies"]
