"""Verifier throughput on one quote: cold (nothing cached) and warm (caches primed).

Cold: a new :class:`~sgx_quote_helper.verify.verifier.Verifier` with no cache and a new
:class:`~sgx_quote_helper.verify.collateral.Collateral` object (fields already decoded) per call,
so every certificate, CRL and signature is checked and the TCB Info / QE Identity JSON is parsed
each time. Warm: one Verifier, same platform, caches primed: per quote only the quote parse, the
QE report data hash, the attestation-key signature, the TCB level look-up and the policy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from ..verify.chain import TrustedRoot
from ..verify.collateral import Collateral
from ..verify.policy import Policy
from ..verify.status import TcbStatus
from ..verify.verdict import Verdict
from ..verify.verifier import Verifier
from .timing import rate

#: accept any TCB status, debug enclaves and service TDs: the benchmark measures, it does not judge
MEASURE_POLICY = Policy(allow_debug=True, allow_service_td=True, allowed_statuses=frozenset(TcbStatus))


@dataclass(frozen=True, slots=True)
class VerifierRates:
    """Verifications per second cold and warm, the calls timed, and the quote's verdict."""

    cold_per_s: float
    warm_per_s: float
    cold_calls: int
    warm_calls: int
    verdict: Verdict

    def to_dict(self) -> dict[str, object]:
        """The JSON result of ``bench verify``."""
        return {
            "cold_per_s": round(self.cold_per_s, 1),
            "warm_per_s": round(self.warm_per_s, 1),
            "cold_ms": round(1e3 / self.cold_per_s, 3),
            "warm_ms": round(1e3 / self.warm_per_s, 3),
            "iterations": {"cold": self.cold_calls, "warm": self.warm_calls},
            "status": self.verdict.status.value,
            "tee": self.verdict.tee,
        }


class VerifierBench:
    """Cold and warm verification of ``quote`` against ``collateral`` at ``now``.

    The constructor verifies once (warming the cache) and raises what
    :meth:`Verifier.verify` raises if the quote does not verify: there is nothing to measure then.
    """

    def __init__(
        self, quote: bytes, collateral: Collateral, now: datetime | float, root: TrustedRoot | None = None
    ) -> None:
        self.quote = quote
        self.collateral = collateral
        self.now = now
        self.root = root
        self._fields = {f.name: getattr(collateral, f.name) for f in dataclasses.fields(Collateral)}
        self.warm_verifier = Verifier(root, policy=MEASURE_POLICY)
        self.verdict = self.warm_verifier.verify(quote, collateral, now)

    def cold(self) -> Verdict:
        """One verification from scratch (fresh verifier, fresh collateral object)."""
        fresh = Verifier(self.root, policy=MEASURE_POLICY, cache_size=0)
        return fresh.verify(self.quote, Collateral(**self._fields), self.now)

    def warm(self) -> Verdict:
        """One verification with the caches primed."""
        return self.warm_verifier.verify(self.quote, self.collateral, self.now)

    def cold_rate(self, seconds: float) -> tuple[float, int]:
        """Cold verifications per second over ``seconds`` (and how many were timed)."""
        return rate(self.cold, seconds)

    def warm_rate(self, seconds: float) -> tuple[float, int]:
        """Warm verifications per second over ``seconds`` (and how many were timed)."""
        return rate(self.warm, seconds)

    def measure(self, seconds: float) -> VerifierRates:
        """Both rates, ``seconds`` each."""
        cold, cold_n = self.cold_rate(seconds)
        warm, warm_n = self.warm_rate(seconds)
        return VerifierRates(cold, warm, cold_n, warm_n, self.verdict)


__all__ = ["MEASURE_POLICY", "VerifierBench", "VerifierRates"]
