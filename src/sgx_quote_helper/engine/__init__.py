"""Quoting engines ("the quoting enclave") behind one interface, :class:`QuotingEngine`.

- ``simulated``: a software QE3 + PCE with a SIMULATED Intel PKI (real cryptography).
- ``dcap``: Intel's DCAP quote library on real SGX hardware (loaded only when selected).
"""

from .base import InitQuoteResult, QuoteResult, QuotingEngine

__all__ = ["InitQuoteResult", "QuoteResult", "QuotingEngine"]
