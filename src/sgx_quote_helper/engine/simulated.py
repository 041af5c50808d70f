"""``SimulatedEngine``: the :class:`~sgx_quote_helper.engine.base.QuotingEngine` of a simulated platform.

It behaves like DCAP's ``sgx_ql_init_quote`` / ``sgx_ql_get_quote_size`` / ``sgx_ql_get_quote``
with QE3 and the PCE (``shared/specs/aesm-protocol.md`` §6):

- one key id, ECDSA-P256 QE3 (matched by its 158-byte base; others raise UNSUPPORTED_ATT_KEY_ID);
- ``init_quote(want_pub_key_id=False)`` is a size query (32, no target info);
  ``init_quote(want_pub_key_id=True)`` loads the stored attestation key or creates one, certifies it
  and returns the QE's target info and the ECDSA_ID;
- a platform whose attestation key was stored by an earlier run quotes at once (QE3's sealed blob);
- ``get_quote`` checks the app report's MAC as QE3 would (INVALID_REPORT if it was not made for the
  QE's target info), signs header || body with the attestation key, and answers the app's
  ``QeReportInfo`` with a QE report MAC'd for the app.

Thread-safe: quotes are serialised by one lock (real QE3 quotes one at a time too).
"""

from __future__ import annotations

import hashlib
import threading

from ..abi.codes import QuoteLibStatus
from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.report import Report
from ..errors import EngineError
from ..sim.platform import Platform
from ..sim.qe import QE_TARGET_INFO, CertifiedKey, qe_report_body
from ..sim.report_key import ReportVerifier
from .base import InitQuoteResult, QuoteResult

#: sizeof(sgx_sha256_hash_t): the ECDSA_ID
PUB_KEY_ID_SIZE = 32


_new = object.__new__
#: QuoteResult's slot setters: built field by field (as its __init__ does, without the per-field
#: object.__setattr__ lookups), one per quote
_set_quote = vars(QuoteResult)["quote"].__set__
_set_info = vars(QuoteResult)["qe_report_info"].__set__


class SimulatedEngine:
    """Quoting engine backed by a :class:`Platform` (real signatures, simulated trust anchor)."""

    name = "simulated"
    #: CPU only (~0.1 ms a quote), never waits: the server runs it on its event loop
    blocking = False

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._key_id = AttKeyId.ecdsa_p256_qe3()
        self._base = self._key_id.base
        self._lock = threading.Lock()
        stored = platform.attestation_key()
        self._certified: CertifiedKey | None = CertifiedKey.certify(platform, stored) if stored else None
        # QE3's sgx_verify_report, set up once for the QE's identity on this platform's CPUSVN
        self._verifier_svn = platform.identity.cpusvn
        self._verifier: ReportVerifier = platform.report_verifier(QE_TARGET_INFO)

    def supported_key_ids(self) -> list[AttKeyId]:
        """The single ECDSA-P256 QE3 key id."""
        return [self._key_id]

    def _check_key_id(self, key_id: AttKeyId) -> None:
        if key_id is not self._key_id and key_id.base != self._base:  # the service passes ours back
            raise EngineError(
                QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID, "only the ECDSA-P256 QE3 key id is supported"
            )

    def _ready(self) -> CertifiedKey:
        certified = self._certified
        if certified is None:
            raise EngineError(
                QuoteLibStatus.ATT_KEY_NOT_INITIALIZED,
                "no attestation key yet: call InitQuoteEx with a pub key id",
            )
        return certified

    def init_quote(self, key_id: AttKeyId, want_pub_key_id: bool) -> InitQuoteResult:
        """Size query, or load/create + certify the attestation key and return QE target info + ECDSA_ID."""
        self._check_key_id(key_id)
        if not want_pub_key_id:
            return InitQuoteResult(PUB_KEY_ID_SIZE)
        with self._lock:
            if self._certified is None:
                self._certified = CertifiedKey.certify(self.platform, self.platform.ensure_attestation_key())
            certified = self._certified
        return InitQuoteResult(PUB_KEY_ID_SIZE, QE_TARGET_INFO, certified.ecdsa_id)

    def quote_size(self, key_id: AttKeyId) -> int:
        """The exact length :meth:`get_quote` returns."""
        self._check_key_id(key_id)
        return self._ready().quote_size

    def get_quote(
        self,
        report: Report,
        key_id: AttKeyId,
        qe_report_info: QeReportInfo | None = None,
        buf_size: int | None = None,
    ) -> QuoteResult:
        """Verify the app's report MAC, then build and sign the v3 quote (and the QE report if asked)."""
        self._check_key_id(key_id)
        certified = self._ready()
        if buf_size is not None and buf_size < certified.quote_size:
            raise EngineError(
                QuoteLibStatus.ERROR_INVALID_PARAMETER,
                f"quote buffer of {buf_size} bytes is smaller than the {certified.quote_size}-byte quote",
            )
        quote = self._quote(certified, report.body.to_bytes(), report.key_id, report.mac)
        if qe_report_info is None:
            return QuoteResult(quote)
        digest = hashlib.sha256(qe_report_info.nonce + quote).digest()
        body = qe_report_body(self.platform, digest + bytes(32))
        qe_report = self.platform.report_for(qe_report_info.app_enclave_target_info, body)
        return QuoteResult(quote, qe_report_info.with_qe_report(qe_report))

    def get_quote_raw(self, report: bytes, key_id: AttKeyId, buf_size: int | None = None) -> QuoteResult:
        """:meth:`get_quote` of the 432 bytes of a REPORT, without a QE report (the service's fast
        path: the body is signed as it came, never parsed and re-serialised)."""
        self._check_key_id(key_id)
        certified = self._ready()
        if len(report) != Report.SIZE:
            raise EngineError(QuoteLibStatus.ERROR_INVALID_PARAMETER, f"a REPORT is {Report.SIZE} bytes")
        if buf_size is not None and buf_size < certified.quote_size:
            raise EngineError(
                QuoteLibStatus.ERROR_INVALID_PARAMETER,
                f"quote buffer of {buf_size} bytes is smaller than the {certified.quote_size}-byte quote",
            )
        result = _new(QuoteResult)  # QuoteResult(quote), its frozen fields set as __init__ would
        _set_quote(result, self._quote(certified, report[:384], report[384:416], report[416:432]))
        _set_info(result, None)
        return result

    def _quote(self, certified: CertifiedKey, raw_body: bytes, key_id: bytes, mac: bytes) -> bytes:
        """Check the report MAC (QE3's sgx_verify_report), then sign header || body."""
        with self._lock:
            verifier = self._verifier
            if self.platform.identity.cpusvn != self._verifier_svn:
                verifier = self._report_verifier()
            if not verifier.verify(raw_body, key_id, mac):
                raise EngineError(
                    QuoteLibStatus.INVALID_REPORT,
                    "report MAC does not verify: it was not made for the QE's target info",
                )
            return certified.quote(raw_body)

    def _report_verifier(self) -> ReportVerifier:
        """The QE's report verifier (rebuilt if the platform's CPUSVN changed). Under the lock."""
        svn = self.platform.identity.cpusvn
        if svn != self._verifier_svn:
            self._verifier_svn, self._verifier = svn, self.platform.report_verifier(QE_TARGET_INFO)
        return self._verifier

    def close(self) -> None:
        """Nothing to release (keys live in memory and on disk). Idempotent."""


__all__ = ["PUB_KEY_ID_SIZE", "SimulatedEngine"]
