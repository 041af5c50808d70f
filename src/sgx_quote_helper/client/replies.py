"""What the client returns and how it checks the daemon's replies (shared by both clients).

Length checks follow Intel's client (``IPC/AE*Response.cpp``): a reply that is not the request's
type, or whose fields have the wrong size, is a :class:`~sgx_quote_helper.errors.BadResponseError`;
a non-zero ``errorCode`` is an :class:`~sgx_quote_helper.errors.AesmError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..abi.codes import AesmStatus
from ..abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from ..abi.quote import SGX_SIGNATURE_DATA_LEN_OFFSET, SGX_SIGNATURE_DATA_OFFSET
from ..abi.report import TargetInfo
from ..errors import AesmError, BadResponseError
from ..wire import messages as m

#: Intel's IPC_LATENCY: 15 s, also sent on the wire in milliseconds
DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRY_DEADLINE = 5.0
#: the replies we accept: the largest is a quote, well under this
MAX_RESPONSE_FRAME = 4 << 20

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class InitQuoteExResult:
    """InitQuoteEx answer: the QE's target info and the 32-byte ECDSA_ID (pub_key_id)."""

    target_info: TargetInfo
    pub_key_id_size: int
    pub_key_id: bytes | None


@dataclass(frozen=True, slots=True)
class QuoteExResult:
    """GetQuoteEx answer. ``quote`` is exactly ``buf_size`` bytes (zero padded), as aesmd sends it."""

    quote: bytes
    qe_report_info: QeReportInfo | None

    def trimmed(self) -> bytes:
        """The quote without padding (v3 layout: 436 + signature_data_len bytes)."""
        return trim_quote(self.quote)


def trim_quote(quote: bytes) -> bytes:
    """Cut the zero padding after a v3 ECDSA quote (436 + signature_data_len); else unchanged."""
    if len(quote) >= SGX_SIGNATURE_DATA_OFFSET and int.from_bytes(quote[0:2], "little") == 3:
        sig_len = quote[SGX_SIGNATURE_DATA_LEN_OFFSET:SGX_SIGNATURE_DATA_OFFSET]
        end = SGX_SIGNATURE_DATA_OFFSET + int.from_bytes(sig_len, "little")
        if end <= len(quote):
            return quote[:end]
    return quote


# ------------------------------------------------------------------ request/response checks


def _timeout_ms(timeout: float) -> int:
    return max(0, min(int(timeout * 1000), 0xFFFFFFFF))


def _ok(response: R, request: object) -> R:
    """``response`` (already of the request's own type: the connection core checks it) when its
    errorCode is 0; else the daemon's refusal as an AesmError."""
    code = int(getattr(response, "error_code", 0))
    if code != 0:
        raise AesmError(AesmStatus(code), type(request).__name__.removesuffix("Request"))
    return response


def _check_key_ids(resp: m.GetSupportedAttKeyIDsResponse, buf_size: int) -> list[AttKeyId]:
    raw = resp.att_key_ids or b""
    if len(raw) != buf_size:
        raise BadResponseError(f"GetSupportedAttKeyIDs: {len(raw)} bytes of key ids, expected {buf_size}")
    return [AttKeyId.from_bytes(raw[i : i + AttKeyId.SIZE]) for i in range(0, len(raw), AttKeyId.SIZE)]


def _check_init(resp: m.InitQuoteExResponse, want_pub_key_id: bool) -> InitQuoteExResult:
    if resp.target_info is None or len(resp.target_info) != TargetInfo.SIZE:
        raise BadResponseError("InitQuoteEx: target_info missing or not 512 bytes")
    if resp.pub_key_id_size is None:
        raise BadResponseError("InitQuoteEx: pub_key_id_size missing")
    pub = resp.pub_key_id
    if want_pub_key_id and (pub is None or len(pub) != resp.pub_key_id_size or len(pub) != 32):
        raise BadResponseError("InitQuoteEx: pub_key_id missing or not pub_key_id_size (32) bytes")
    return InitQuoteExResult(TargetInfo.from_bytes(resp.target_info), resp.pub_key_id_size, pub)


def _check_quote(resp: m.GetQuoteExResponse, buf_size: int, sent_info: bool) -> QuoteExResult:
    if resp.quote is None or len(resp.quote) > buf_size:
        raise BadResponseError(f"GetQuoteEx: quote missing or longer than buf_size {buf_size}")
    info = None
    if sent_info:
        if resp.qe_report_info is None or len(resp.qe_report_info) != QeReportInfo.SIZE:
            raise BadResponseError("GetQuoteEx: qe_report_info not echoed (960 bytes)")
        info = QeReportInfo.from_bytes(resp.qe_report_info)
    return QuoteExResult(resp.quote, info)


def _select_request(key_ids: Sequence[AttKeyId] | None, tms: int) -> m.SelectAttKeyIDRequest:
    raw = AttKeyIdList(tuple(key_ids)).to_bytes() if key_ids is not None else None
    return m.SelectAttKeyIDRequest(raw, tms)


def _check_selected(resp: m.SelectAttKeyIDResponse) -> AttKeyId:
    if resp.selected_att_key_id is None or len(resp.selected_att_key_id) != AttKeyId.SIZE:
        raise BadResponseError("SelectAttKeyID: selected id missing or not 256 bytes")
    return AttKeyId.from_bytes(resp.selected_att_key_id)


def _check_num(resp: m.GetSupportedAttKeyIDNumResponse) -> int:
    if resp.att_key_id_num is None:
        raise BadResponseError("GetSupportedAttKeyIDNum: att_key_id_num missing")
    return resp.att_key_id_num


#: connect errors worth retrying within the retry deadline: no daemon yet (refused, no socket file:
#: it is restarting), and a full listen backlog (EAGAIN from connect() on a Unix socket with a
#: timeout, i.e. in non-blocking mode: a burst of more clients than the backlog holds).
_RETRYABLE = (ConnectionRefusedError, FileNotFoundError, BlockingIOError)


class _Settings:
    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        timeout: float,
        retry_deadline: float,
        reuse_connection: bool,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.reuse_connection = reuse_connection
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.key_id = AttKeyId.ecdsa_p256_qe3()

    @property
    def tms(self) -> int:
        return _timeout_ms(self.timeout)


__all__ = ["DEFAULT_RETRY_DEADLINE", "DEFAULT_TIMEOUT", "InitQuoteExResult", "QuoteExResult", "trim_quote"]
