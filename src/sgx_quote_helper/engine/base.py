"""The quoting-engine interface every engine implements.

The service layer (``service.py``) turns AESM requests into these calls and maps
:class:`~sgx_quote_helper.errors.EngineError` statuses (``QuoteLibStatus``) to AESM error codes,
as Intel's ECDSA quote service bundle does. Engines are synchronous and may be slow (hardware:
milliseconds per quote); the server runs them off the event loop, one quote at a time per engine.

Semantics follow DCAP's ``sgx_ql_init_quote`` / ``sgx_ql_get_quote_size`` / ``sgx_ql_get_quote``
(``shared/specs/aesm-protocol.md`` §6):

- key ids are matched by their 158-byte base; an unknown one raises
  ``EngineError(QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID)``;
- ``init_quote(key_id, want_pub_key_id=False)`` is the size query: it succeeds without a target
  info; with ``want_pub_key_id=True`` it (re)creates or loads the attestation key and returns the
  QE target info and the 32-byte ECDSA_ID = SHA-256(attestation public key || QE auth data);
- ``quote_size``/``get_quote`` before any key is ready raise ``ATT_KEY_NOT_INITIALIZED``;
- ``get_quote`` refuses a report whose MAC does not verify with ``INVALID_REPORT``; with a
  ``qe_report_info`` it returns the same structure with ``qe_report`` filled (report_data =
  SHA-256(nonce || quote) || 32 zero bytes, targeted at the app's target info).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.report import Report, TargetInfo


@dataclass(frozen=True, slots=True)
class InitQuoteResult:
    """Answer of :meth:`QuotingEngine.init_quote`.

    ``target_info`` is ``None`` for a size query; ``pub_key_id`` is the 32-byte ECDSA_ID when asked.
    """

    pub_key_id_size: int
    target_info: TargetInfo | None = None
    pub_key_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class QuoteResult:
    """Answer of :meth:`QuotingEngine.get_quote`: the quote (exact length, no padding)."""

    quote: bytes
    qe_report_info: QeReportInfo | None = None


@runtime_checkable
class QuotingEngine(Protocol):
    """What the service needs from a quoting engine. Errors: ``EngineError(QuoteLibStatus...)``.

    An engine may also say ``blocking = False`` (a class attribute): it only computes, for well under
    a millisecond, and never waits on a device, a file or the network; the server then runs it on its
    event loop instead of hopping to the engine thread. Engines without the attribute block.

    An engine may also offer ``get_quote_raw(report, key_id, buf_size)``: :meth:`get_quote` of
    ``Report.from_bytes(report)`` (432 bytes) with no ``qe_report_info``, same result and errors,
    for an engine that needs only the report's bytes (the service then skips parsing it).
    """

    #: short name shown in logs and metrics ("simulated", "dcap", "proxy"...)
    name: str

    def supported_key_ids(self) -> list[AttKeyId]:
        """The attestation key ids this engine offers (ECDSA-P256 QE3: exactly one)."""
        ...

    def init_quote(self, key_id: AttKeyId, want_pub_key_id: bool) -> InitQuoteResult:
        """``sgx_ql_init_quote``: size query, or certify/load the key and return QE target info."""
        ...

    def quote_size(self, key_id: AttKeyId) -> int:
        """``sgx_ql_get_quote_size``: the exact size ``get_quote`` will produce."""
        ...

    def get_quote(
        self,
        report: Report,
        key_id: AttKeyId,
        qe_report_info: QeReportInfo | None = None,
        buf_size: int | None = None,
    ) -> QuoteResult:
        """``sgx_ql_get_quote``: verify the app's REPORT, build and sign the quote.

        ``buf_size`` is the caller's quote buffer (aesmd passes GetQuoteEx's ``buf_size`` to the
        library): a quote that does not fit raises ``ERROR_INVALID_PARAMETER``; ``None`` = any.
        """
        ...

    def close(self) -> None:
        """Release resources (enclaves, files). Idempotent."""
        ...


__all__ = ["InitQuoteResult", "QuoteResult", "QuotingEngine"]
