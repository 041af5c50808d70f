"""The one exception tree of sgx-quote-helper.

Every error this package raises on purpose is a subclass of :class:`SgxQuoteHelperError`.
Callers branch on the type and its attributes, never on the message text.

::

    SgxQuoteHelperError
    ├── ParseError(structure, offset)       bytes do not form the named structure
    ├── ProtocolError                       (abstract)
    │   ├── LocalProtocolError              we were asked to send something invalid
    │   └── RemoteProtocolError(fault)      the peer broke the protocol; ``fault`` names how
    │       └── BadResponseError            ... seen by a client: the reply is not a valid answer
    ├── EngineError(status)                 a quoting engine refused (status: QuoteLibStatus)
    │   └── EngineUnavailableError          the engine is not started or closed (AESM 30)
    ├── AesmError(status)                   the daemon answered a non-zero errorCode (client side)
    ├── TransportError                      connect/read/write/timeout failed (client side)
    │   └── UpstreamFailure                 the proxy's upstream gave no usable reply
    ├── VerificationError(step, reason)     a numbered verification check failed
    ├── CollateralError                     collateral is missing, malformed or unavailable
    ├── PlatformStateError                  a simulated platform state directory is unusable
    ├── ConfigError                         bad settings or environment (missing device, library...)
    └── SelfCheckError                      a built-in self-check (demo) saw a result that is wrong
"""

from __future__ import annotations

from typing import Any


class SgxQuoteHelperError(Exception):
    """Base class of every error raised on purpose by this package."""


class ParseError(SgxQuoteHelperError, ValueError):
    """Bytes do not form the named structure.

    Attributes:
        structure: name of the structure being parsed (``"Report"``, ``"QuoteV3"``...).
        offset: byte offset (within the outermost input) where the problem was found.
        reason: short human explanation.
    """

    def __init__(self, structure: str, offset: int, reason: str) -> None:
        self.structure = structure
        self.offset = offset
        self.reason = reason
        super().__init__(f"{structure} at offset {offset}: {reason}")


class ProtocolError(SgxQuoteHelperError):
    """A violation of the AESM wire protocol. Abstract: raise a subclass."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ProtocolError:
        if cls is ProtocolError:
            raise TypeError("ProtocolError is abstract; use LocalProtocolError or RemoteProtocolError")
        return super().__new__(cls, *args, **kwargs)


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class Fault:
    """How a peer broke the protocol (``RemoteProtocolError.fault``): one name per kind of fault, the
    same whichever side sees it (the daemon reading a request, a client reading a reply)."""

    OVERSIZED = "oversized"  #: a length prefix above the frame limit
    TRUNCATED = "truncated"  #: the peer closed inside a frame
    MALFORMED = "malformed"  #: a body that is not a valid protobuf envelope (or lacks errorCode)
    UNEXPECTED = "unexpected"  #: an envelope with no known message, or not the awaited reply type
    INVALID = "invalid"  #: a message whose fields break the protocol (sizes, missing fields)
    FRAME_TIMEOUT = "frame_timeout"  #: a frame begun and not finished in time (slow peer)
    IDLE_TIMEOUT = "idle_timeout"  #: connected and sent nothing in time
    REPLY_TIMEOUT = "reply_timeout"  #: a peer that has not read its reply in time (write-blocked)


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (framing, protobuf, field sizes).

    Attributes:
        fault: a :class:`Fault` name (``"truncated"``...), the same on the server and client side.
    """

    def __init__(self, reason: str = "", fault: str = Fault.MALFORMED) -> None:
        self.fault = fault
        super().__init__(reason)


class EngineError(SgxQuoteHelperError):
    """A quoting engine refused a request.

    Attributes:
        status: a ``QuoteLibStatus`` (quote3_error_t) value; ``service`` maps it to an AESM code.
            The TDX library engine raises ``TeeAttStatus`` (tee_att_error_t) values instead.
    """

    def __init__(self, status: int, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        name = getattr(status, "name", None) or hex(int(status))
        super().__init__(f"{name}: {reason}" if reason else str(name))


class EngineUnavailableError(EngineError):
    """The engine is closed or not started: aesmd's ECDSA bundle answers AESM_SERVICE_UNAVAILABLE
    (30) itself then, before any library call (``ecdsa_quote_service_bundle.cpp``, ``initialized``).
    """

    #: ``status`` of every instance: quote3_error_t SGX_QL_SERVICE_UNAVAILABLE (abi.codes names it)
    STATUS = 0xE040

    def __init__(self, reason: str = "") -> None:
        super().__init__(self.STATUS, reason)
        self.args = (f"SERVICE_UNAVAILABLE: {reason}" if reason else "SERVICE_UNAVAILABLE",)


class AesmError(SgxQuoteHelperError):
    """The AESM daemon answered with a non-zero errorCode.

    Attributes:
        status: an ``AesmStatus`` (unknown codes are kept as their number).
    """

    def __init__(self, status: int, request: str = "") -> None:
        self.status = status
        self.request = request
        name = getattr(status, "name", None) or str(int(status))
        where = f" to {request}" if request else ""
        super().__init__(f"daemon answered {name} ({int(status)}){where}")


class TransportError(SgxQuoteHelperError):
    """Connecting to, writing to or reading from the daemon failed (or timed out)."""


class BadResponseError(RemoteProtocolError):
    """The daemon's reply is not a valid answer to the request that was sent (a client's view of a
    :class:`RemoteProtocolError`; ``fault`` says which kind)."""

    def __init__(self, reason: str = "", fault: str = Fault.INVALID) -> None:
        super().__init__(reason, fault)


class UpstreamFailure(TransportError):
    """The proxy's upstream AESM gave no usable reply (connect, send, timeout, truncated or oversized
    reply); the proxy answers its client SERVICE_UNAVAILABLE (30)."""


class VerificationError(SgxQuoteHelperError):
    """A numbered verification step failed.

    Attributes:
        step: the step number (see ``verify.steps``).
        reason: short machine-friendly reason (``"pck-chain-untrusted"``...); no secret material.
        detail: optional human explanation.
    """

    def __init__(self, step: int, reason: str, detail: str = "") -> None:
        self.step = step
        self.reason = reason
        self.detail = detail
        text = f"step {step}: {reason}"
        super().__init__(f"{text}: {detail}" if detail else text)


class CollateralError(SgxQuoteHelperError):
    """Collateral is missing, malformed, or could not be obtained."""


class PlatformStateError(SgxQuoteHelperError):
    """A simulated platform's state directory is missing, partial, corrupt or unwritable."""


class QgsMessageError(ParseError):
    """Bytes are not a valid QGS message; ``code`` is the ``qgs_msg_error_t`` Intel's inflater
    returns for the same bytes (0x12003 INVALID_PARAMETER ... 0x12007 INVALID_CODE)."""

    def __init__(self, structure: str, offset: int, reason: str, code: int) -> None:
        self.code = code
        super().__init__(structure, offset, f"{reason} ({code:#x})")


class ConfigError(SgxQuoteHelperError):
    """Settings or environment are unusable (bad option, missing device or library...)."""


class SelfCheckError(SgxQuoteHelperError):
    """A built-in self-check (``demo``) got a result that must not happen (a bug or a broken setup)."""


class PolicyError(ConfigError):
    """An attestation policy text that does not parse or cannot be evaluated.

    Attributes: ``line`` and ``column`` (1-based; 0 when the error has no position).
    """

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        super().__init__(f"policy line {line}, column {column}: {message}" if line else f"policy: {message}")


class AttestationError(SgxQuoteHelperError):
    """A request the attestation service refuses, in MAA's error shape.

    Attributes: ``code`` (MAA-style error code), ``message``, ``status`` (the HTTP status).
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


__all__ = [
    "AesmError",
    "AttestationError",
    "BadResponseError",
    "CollateralError",
    "ConfigError",
    "EngineError",
    "EngineUnavailableError",
    "Fault",
    "LocalProtocolError",
    "ParseError",
    "PlatformStateError",
    "PolicyError",
    "ProtocolError",
    "QgsMessageError",
    "RemoteProtocolError",
    "SelfCheckError",
    "SgxQuoteHelperError",
    "TransportError",
    "UpstreamFailure",
    "VerificationError",
]
