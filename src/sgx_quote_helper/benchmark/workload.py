"""The request a quote-service benchmark sends, prepared once, and how each answer is judged.

A :class:`Workload` is one encoded AESM frame and what a correct answer to it looks like. It is
prepared over the ordinary protocol (what Intel's libsgx_quote_ex does before quoting), so it works
against our daemon and against Intel's aesmd alike:

``quote``
    InitQuoteEx, GetQuoteSizeEx, then GetQuoteEx of a valid app REPORT made for the QE's target
    info: a full quote per request. The REPORT comes from ``--state-dir`` (the simulated platform
    the daemon serves: EREPORT is simulated with its keys) or from a file (a REPORT a real enclave
    made for this QE). Every answer must be error 0 with a quote of GetQuoteSizeEx bytes.
``quote-dummy``
    GetQuoteEx of an all-zero REPORT: a live QE checks the MAC and answers INVALID_REPORT (47)
    without signing. Needs no enclave: the round trip to the QE on a real SGX node.
``size``
    GetQuoteSizeEx: the daemon and the quote library, no QE signature.
``key-ids``
    GetSupportedAttKeyIDs: the daemon's request path only.

Call sequences (what one measured request is):

``get-quote``
    the one call above (an app that already holds the QE's target info and the quote size, e.g.
    Gramine after its first quote, calls only ``sgx_get_quote_ex``);
``dcap-ql``
    what an app calling ``sgx_qe_get_target_info``, ``sgx_qe_get_quote_size`` and
    ``sgx_qe_get_quote`` through libsgx_dcap_ql in out-of-process mode sends for every quote
    (``shared/specs/aesm-protocol.md`` §7): InitQuoteEx as a size query (``b_pub_key_id`` false,
    an uninitialised ``buf_size``), InitQuoteEx with a 32-byte pub_key_id buffer, GetQuoteSizeEx,
    then the call above. Open Enclave's host sends the same four per quote.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..abi.codes import AesmStatus
from ..abi.report import Report
from ..client import QuoteClient
from ..errors import BadResponseError, ConfigError, ParseError, RemoteProtocolError
from ..sim.platform import Platform
from ..wire import messages as m
from ..wire.framing import HEADER_SIZE, encode_frame

RequestKind = Literal["quote", "quote-dummy", "size", "key-ids"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("quote", "quote-dummy", "size", "key-ids")
Sequence = Literal["get-quote", "dcap-ql"]
SEQUENCES: tuple[Sequence, ...] = ("get-quote", "dcap-ql")
#: what libsgx_dcap_ql leaves in the size query's ``buf_size`` (uninitialised; a value seen on the wire)
DCAP_QL_GARBAGE_BUF_SIZE = 140393291379042
#: what a benchmark enclave puts in its REPORT's report_data
BENCH_REPORT_DATA = b"sgx-quote-helper bench".ljust(64, b"\0")
OK = "ok"
TRANSPORT = "transport"
BAD_RESPONSE = "bad_response"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Workload:
    """One prepared request frame and the answer that counts as success.

    ``expect_code`` is the AESM errorCode of a correct answer (0, or 47 for ``quote-dummy``);
    ``expect_len`` the length of its payload (quote or key-id bytes) when it has one.
    """

    kind: RequestKind
    frame: bytes
    response_type: type
    expect_code: int
    expect_len: int | None = None
    quote_size: int | None = None
    #: calls made before ``frame`` in every measured request: (request body, judge of its reply)
    prelude: tuple[tuple[bytes, Callable[[bytes], str]], ...] = ()
    sequence: Sequence = "get-quote"

    def judge(self, body: bytes) -> str:
        """``"ok"`` for a correct answer, else a label: ``"BUSY(18)"``-style AESM codes or
        ``"bad_response"`` (undecodable, wrong message, wrong size)."""
        try:
            response = m.decode_response(body)
        except (RemoteProtocolError, ParseError):
            return BAD_RESPONSE
        if not isinstance(response, self.response_type):
            return BAD_RESPONSE
        code = int(getattr(response, "error_code", -1))
        if code != self.expect_code:
            return f"{AesmStatus(code).name}({code})"
        if self.expect_len is not None:
            payload = getattr(response, "quote", None) or getattr(response, "att_key_ids", None) or b""
            if len(payload) != self.expect_len:
                return BAD_RESPONSE
        return OK

    @property
    def body(self) -> bytes:
        """The request's protobuf body (``frame`` without its length prefix)."""
        return self.frame[HEADER_SIZE:]

    @property
    def description(self) -> str:
        """One sentence for reports."""
        return {
            "quote": "GetQuoteEx of a valid REPORT (a full quote per request)",
            "quote-dummy": "GetQuoteEx of an all-zero REPORT (answered INVALID_REPORT (47), no signing)",
            "size": "GetQuoteSizeEx",
            "key-ids": "GetSupportedAttKeyIDs",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class SetUpJudge:
    """The judge of a set-up call (picklable, for the worker processes): the matching response
    with errorCode 0."""

    response_type: type

    def __call__(self, body: bytes) -> str:
        try:
            response = m.decode_response(body)
        except (RemoteProtocolError, ParseError):
            return BAD_RESPONSE
        if not isinstance(response, self.response_type):
            return BAD_RESPONSE
        code = int(getattr(response, "error_code", -1))
        return OK if code == 0 else f"{AesmStatus(code).name}({code})"


def dcap_ql_prelude(key_id: bytes, timeout_ms: int) -> tuple[tuple[bytes, Callable[[bytes], str]], ...]:
    """The calls libsgx_dcap_ql makes before each GetQuoteEx (``sgx_qe_get_target_info``: two
    InitQuoteEx; ``sgx_qe_get_quote_size``: GetQuoteSizeEx)."""
    size_query = m.InitQuoteExRequest(key_id, False, DCAP_QL_GARBAGE_BUF_SIZE, timeout_ms)
    init = m.InitQuoteExRequest(key_id, True, 32, timeout_ms)
    size = m.GetQuoteSizeExRequest(key_id, timeout_ms)
    return (
        (m.encode_request(size_query), SetUpJudge(m.InitQuoteExResponse)),
        (m.encode_request(init), SetUpJudge(m.InitQuoteExResponse)),
        (m.encode_request(size), SetUpJudge(m.GetQuoteSizeExResponse)),
    )


def bench_report(state_dir: Path, client: QuoteClient) -> Report:
    """A valid app REPORT for the daemon's QE, made with the simulated platform in ``state_dir``."""
    platform = Platform.open(state_dir)
    target = client.init_quote_ex().target_info
    return platform.ereport(target, BENCH_REPORT_DATA, mr_enclave=b"\x42" * 32)


def prepare_workload(
    socket_path: str | os.PathLike[str],
    kind: RequestKind,
    *,
    report: Report | bytes | None = None,
    state_dir: Path | None = None,
    timeout: float = 15.0,
    retry_deadline: float = 5.0,
    sequence: Sequence = "get-quote",
) -> Workload:
    """Talk to the service as an app would and build the request frame for ``kind``.

    For ``quote`` give ``report`` (432 bytes made for this QE) or ``state_dir``; one quote is
    fetched and checked before the frame is returned, so a refused REPORT fails here, not under load.

    Raises:
        TransportError: the service is unreachable.
        AesmError: a set-up call was refused (e.g. INVALID_REPORT: a REPORT not made for this QE).
        BadResponseError: an answer that is not a valid reply.
        PlatformStateError: ``state_dir`` holds no simulated platform.
        ConfigError: ``quote`` without a REPORT, or a REPORT of the wrong size; ``dcap-ql``
            with a request other than ``quote`` or ``quote-dummy``.
    """
    workload = _prepare(socket_path, kind, report, state_dir, timeout, retry_deadline)
    if sequence == "get-quote":
        return workload
    if kind not in ("quote", "quote-dummy"):
        raise ConfigError(
            "the dcap-ql sequence ends in GetQuoteEx: use it with --request quote or quote-dummy"
        )
    key = QuoteClient(socket_path, timeout=timeout, retry_deadline=retry_deadline).key_id.to_bytes()
    prelude = dcap_ql_prelude(key, int(timeout * 1000))
    return dataclasses.replace(workload, prelude=prelude, sequence=sequence)


def _prepare(
    socket_path: str | os.PathLike[str],
    kind: RequestKind,
    report: Report | bytes | None,
    state_dir: Path | None,
    timeout: float,
    retry_deadline: float,
) -> Workload:
    client = QuoteClient(socket_path, timeout=timeout, retry_deadline=retry_deadline)
    tms = int(timeout * 1000)
    key = client.key_id.to_bytes()
    if kind == "key-ids":
        num = client.get_supported_att_key_id_num()
        request: m.Request = m.GetSupportedAttKeyIDsRequest(num * 256, tms)
        return Workload(kind, _frame(request), m.GetSupportedAttKeyIDsResponse, 0, num * 256)
    if kind == "quote" and report is None:
        if state_dir is None:
            raise ConfigError("a full quote needs a valid REPORT: give --state-dir (simulated) or --report")
        report = bench_report(state_dir, client)
    else:
        client.init_quote_ex()
    size = client.get_quote_size_ex()
    if kind == "size":
        return Workload(
            kind, _frame(m.GetQuoteSizeExRequest(key, tms)), m.GetQuoteSizeExResponse, 0, None, size
        )
    if kind == "quote-dummy":
        request = m.GetQuoteExRequest(bytes(Report.SIZE), key, None, size, tms)
        return Workload(
            kind, _frame(request), m.GetQuoteExResponse, int(AesmStatus.INVALID_REPORT), None, size
        )
    raw = report.to_bytes() if isinstance(report, Report) else bytes(report or b"")
    if len(raw) != Report.SIZE:
        raise ConfigError(f"a REPORT is {Report.SIZE} bytes, got {len(raw)}")
    got = client.get_quote_ex(raw, buf_size=size)
    if len(got.quote) != size:
        raise BadResponseError(f"GetQuoteEx: {len(got.quote)} bytes, GetQuoteSizeEx said {size}")
    request = m.GetQuoteExRequest(raw, key, None, size, tms)
    return Workload(kind, _frame(request), m.GetQuoteExResponse, 0, size, size)


def _frame(request: m.Request) -> bytes:
    return encode_frame(m.encode_request(request))


__all__ = [
    "BAD_RESPONSE",
    "OK",
    "REQUEST_KINDS",
    "SEQUENCES",
    "TIMEOUT",
    "TRANSPORT",
    "RequestKind",
    "Sequence",
    "SetUpJudge",
    "Workload",
    "bench_report",
    "dcap_ql_prelude",
    "prepare_workload",
]
