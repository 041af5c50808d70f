"""Quoting engines ("the quoting enclave") behind one interface, :class:`QuotingEngine`.

- ``simulated``: a software QE3 + PCE with a SIMULATED Intel PKI (real cryptography).
- ``dcap``: Intel's DCAP quote library on real SGX hardware (loaded only when selected).
- TDX (QGS): ``tdx_simulated`` (the simulated platform's TDQE) and ``tdx`` (Intel's TDX quote
  library, ``libsgx_tdx_logic``, on a TDX host).
"""

from .base import InitQuoteResult, QuoteResult, QuotingEngine

__all__ = ["InitQuoteResult", "QuoteResult", "QuotingEngine"]
