"""Python client of the AESM quote service: :class:`QuoteClient` (blocking), :class:`AsyncQuoteClient`.

Each call connects to the socket, sends one frame, reads one frame (as Intel's
``SocketTransporter::transact`` does); with ``reuse_connection=True`` the connection is kept for the
next call (our daemon allows it; aesmd does not). Errors are split three ways:

- :class:`~sgx_quote_helper.errors.TransportError`: connect/read/write failed or timed out, or the
  daemon closed without answering (Intel's client: SGX_ERROR_SERVICE_UNAVAILABLE / _TIMEOUT /
  _UNEXPECTED);
- :class:`~sgx_quote_helper.errors.AesmError`: the daemon answered a non-zero ``errorCode``
  (``.status`` is an :class:`~sgx_quote_helper.abi.codes.AesmStatus`, unknown codes kept);
- :class:`~sgx_quote_helper.errors.BadResponseError`: the answer is not a valid reply to the request.

Only "connection refused" and "no such socket" (the daemon restarting during a node update) are
retried, with exponential backoff, until ``retry_deadline`` seconds have passed; and a request
whose connection was lost before a single reply byte (a daemon killed with it in flight) is sent
again on a new connection within that deadline, at most 3 tries (every AESM request can be
repeated). Never a request the daemon answered. :func:`out_of_process_mode` says which quoting mode an app is in and why,
using Intel's rule (``SGX_AESM_ADDR`` set to anything, even empty, means out-of-process).

Modules: ``sync`` (QuoteClient), ``aio`` (AsyncQuoteClient), ``replies`` (result values and the
reply checks both share), ``mode`` (out_of_process_mode). Import from the package.
"""

from __future__ import annotations

from .aio import AsyncQuoteClient
from .mode import AESM_ADDR_ENV, DEFAULT_SOCKET_PATH, ModeDecision, out_of_process_mode
from .replies import DEFAULT_RETRY_DEADLINE, DEFAULT_TIMEOUT, InitQuoteExResult, QuoteExResult, trim_quote
from .sync import QuoteClient

__all__ = [
    "AESM_ADDR_ENV",
    "DEFAULT_RETRY_DEADLINE",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT",
    "AsyncQuoteClient",
    "InitQuoteExResult",
    "ModeDecision",
    "QuoteClient",
    "QuoteExResult",
    "out_of_process_mode",
    "trim_quote",
]
