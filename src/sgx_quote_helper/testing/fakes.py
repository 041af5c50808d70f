"""Test doubles shipped with the product: :class:`FakeEngine`, a QuotingEngine with canned answers,
and :class:`FakePccs`, a collateral getter answering from a dict (go-tdx-guest's ``testing``
``Getter``: inject it into :class:`~sgx_quote_helper.verify.fetch.CollateralFetcher`).

It lets the service, the server and the client be exercised (by our tests and by users' tests)
without a simulated platform: no keys, no signatures, deterministic bytes. What it does model is
the engine *contract* (``engine/base.py``): key ids matched by base, the size query, "no key
before init_quote" (ATT_KEY_NOT_INITIALIZED), a report check hook (INVALID_REPORT), and the QE
report back in ``qe_report_info`` with report_data = SHA-256(nonce || quote) || 32 zero bytes.

Knobs for tests: ``fail`` (method name -> EngineError to raise), ``gate`` (a threading.Event
``get_quote`` waits on, to hold a request in flight), ``calls`` (per-method counters), ``threads``
(calls per thread name) and ``max_concurrent`` (the highest number of overlapping engine calls).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from ..abi.codes import QuoteLibStatus
from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.report import Report, ReportBody, TargetInfo
from ..engine.base import InitQuoteResult, QuoteResult
from ..errors import EngineError
from ..verify.fetch import HttpResponse

#: the canned QE identity (a recognisable MRENCLAVE)
FAKE_QE_MRENCLAVE = bytes.fromhex("fa4e" * 16)
FAKE_QUOTE_SIZE = 1456


def fake_quote(report: Report, size: int = FAKE_QUOTE_SIZE) -> bytes:
    """Deterministic quote-shaped bytes: a v3 header stub, the report body, a filler tail."""
    header = (3).to_bytes(2, "little") + (2).to_bytes(2, "little") + bytes(44)
    body = report.body.to_bytes()
    tail_len = size - len(header) - len(body)
    seed = hashlib.sha256(body).digest()
    tail = (seed * (tail_len // 32 + 1))[:tail_len]
    return header + body + tail


class FakeEngine:
    """A :class:`~sgx_quote_helper.engine.base.QuotingEngine` with canned answers (see module doc).

    Args:
        key_ids: the supported key ids (default: the ECDSA-P256 QE3 id).
        quote_size: the size of every quote.
        initialised: start with the attestation key ready (skips the need for init_quote).
        accept_report: report check; False raises INVALID_REPORT (default: mac must not be all zero).
        gate: if set, ``get_quote`` waits for it (up to ``gate_timeout`` seconds).
    """

    name = "fake"

    def __init__(
        self,
        key_ids: list[AttKeyId] | None = None,
        *,
        quote_size: int = FAKE_QUOTE_SIZE,
        initialised: bool = False,
        accept_report: Callable[[Report], bool] | None = None,
        gate: threading.Event | None = None,
        gate_timeout: float = 10.0,
    ) -> None:
        self.key_ids = list(key_ids) if key_ids is not None else [AttKeyId.ecdsa_p256_qe3()]
        self.quote_size_value = quote_size
        self.initialised = initialised
        self.accept_report = accept_report or (lambda r: r.mac != bytes(16))
        self.gate = gate
        self.gate_timeout = gate_timeout
        self.target_info = TargetInfo(mr_enclave=FAKE_QE_MRENCLAVE)
        self.pub_key_id = hashlib.sha256(b"fake attestation key").digest()
        self.fail: dict[str, EngineError] = {}
        self.calls: Counter[str] = Counter()
        self.threads: Counter[str] = Counter()  # name of the thread each engine call ran on
        self.max_concurrent = 0
        self.closed = False
        self.buf_sizes: list[int | None] = []  # the buf_size of each get_quote call
        self._active = 0
        self._mutex = threading.Lock()

    # -- helpers
    def _enter(self, what: str) -> None:
        with self._mutex:
            self.calls[what] += 1
            self.threads[threading.current_thread().name] += 1
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        if what in self.fail:
            self._leave()
            raise self.fail[what]

    def _leave(self) -> None:
        with self._mutex:
            self._active -= 1

    def _check(self, key_id: AttKeyId) -> None:
        if key_id.base not in {k.base for k in self.key_ids}:
            raise EngineError(QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID, "fake engine: unknown key id")

    # -- QuotingEngine
    def supported_key_ids(self) -> list[AttKeyId]:
        """The configured key ids."""
        return list(self.key_ids)

    def init_quote(self, key_id: AttKeyId, want_pub_key_id: bool) -> InitQuoteResult:
        """Size query, or mark the key ready and return the canned target info and ECDSA_ID."""
        self._enter("init_quote")
        try:
            self._check(key_id)
            if not want_pub_key_id:
                return InitQuoteResult(pub_key_id_size=32)
            self.initialised = True
            return InitQuoteResult(32, self.target_info, self.pub_key_id)
        finally:
            self._leave()

    def quote_size(self, key_id: AttKeyId) -> int:
        """The configured size (ATT_KEY_NOT_INITIALIZED before init_quote)."""
        self._enter("quote_size")
        try:
            self._check(key_id)
            if not self.initialised:
                raise EngineError(QuoteLibStatus.ATT_KEY_NOT_INITIALIZED)
            return self.quote_size_value
        finally:
            self._leave()

    def get_quote(
        self,
        report: Report,
        key_id: AttKeyId,
        qe_report_info: QeReportInfo | None = None,
        buf_size: int | None = None,
    ) -> QuoteResult:
        """A deterministic quote of the report; fills qe_report_info's QE report when given."""
        self._enter("get_quote")
        try:
            if self.gate is not None and not self.gate.wait(self.gate_timeout):
                raise EngineError(QuoteLibStatus.ERROR_UNEXPECTED, "fake engine: gate never opened")
            self._check(key_id)
            if not self.initialised:
                raise EngineError(QuoteLibStatus.ATT_KEY_NOT_INITIALIZED)
            if not self.accept_report(report):
                raise EngineError(QuoteLibStatus.INVALID_REPORT)
            self.buf_sizes.append(buf_size)
            if buf_size is not None and buf_size < self.quote_size_value:
                raise EngineError(QuoteLibStatus.ERROR_INVALID_PARAMETER, "fake engine: buffer too small")
            quote = fake_quote(report, self.quote_size_value)
            info = None
            if qe_report_info is not None:
                data = hashlib.sha256(qe_report_info.nonce + quote).digest() + bytes(32)
                body = replace(ReportBody(mr_enclave=FAKE_QE_MRENCLAVE), report_data=data)
                qe_report = Report(body, key_id=bytes(32), mac=hashlib.sha256(body.to_bytes()).digest()[:16])
                info = qe_report_info.with_qe_report(qe_report)
            return QuoteResult(quote, info)
        finally:
            self._leave()

    def close(self) -> None:
        """Mark closed (idempotent)."""
        self.closed = True


#: one canned answer: HTTP status, body, headers
Route = tuple[int, bytes, Mapping[str, str]]


class FakePccs:
    """A PCCS as a :data:`~sgx_quote_helper.verify.fetch.Getter`: answers from ``routes``.

    ``routes`` maps ``path?query`` (exact, as the fetcher builds it) or a bare ``path`` (any
    query: ``/sgx/certification/v4/pckcert`` answers every pckcert look-up) to ``(status, body,
    headers)``; anything else is a 404. The host is ignored. Every requested ``path?query`` is
    recorded in :attr:`requests`, in order. Example::

        pccs = FakePccs({"/sgx/certification/v4/rootcacrl": (200, crl_hex, {})})
        CollateralFetcher("http://pccs.invalid", pccs).fetch(quote)
        assert pccs.requests[-1].endswith("/rootcacrl")
    """

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes: dict[str, Route] = dict(routes)
        self.requests: list[str] = []

    def __call__(self, url: str) -> HttpResponse:
        parts = urlsplit(url)
        key = parts.path + (f"?{parts.query}" if parts.query else "")
        self.requests.append(key)
        status, body, headers = self.routes.get(key) or self.routes.get(parts.path) or (404, b"not found", {})
        return HttpResponse(status, body, dict(headers))


__all__ = ["FAKE_QE_MRENCLAVE", "FAKE_QUOTE_SIZE", "FakeEngine", "FakePccs", "Route", "fake_quote"]
