"""What QEMU's TDX quote generator does with a TD's GetQuote, sans-I/O (``tdx-qgs.md`` §1.5, §2.8).

On a TDX host the guest kernel (configfs-tsm) puts the TD's 1024-byte TDREPORT **raw** into a
shared buffer and issues TDG.VP.VMCALL<GetQuote>; QEMU (``target/i386/kvm/tdx-quote-generator.c``,
upstream 05caf269) **wraps** it as ``[BE length][GET_QUOTE_REQ v1.1, id_list_size 0]``, opens one
connection to the QGS per request, writes the message, reads the reply and checks it before it
copies the quote back to the guest. :class:`QemuGetQuote` is that exchange with the I/O left out:

- :meth:`QemuGetQuote.send`: the bytes QEMU writes (a :class:`~.qgs.QgsClientConnection` request);
- :meth:`QemuGetQuote.receive_data` (``b""`` = the QGS closed), :meth:`QemuGetQuote.next_event`:
  :class:`QuoteForwarded` (the quote the guest gets) or :data:`~.qgs.NEED_DATA`. QEMU stops reading
  once it holds the length prefix's worth of bytes; later bytes are ignored.

A reply QEMU refuses raises :class:`RemoteProtocolError` with QEMU's reason, in QEMU's order: the QGS
closed first (the guest sees ``0x8000000000000001``, service unavailable), a length of 0 or over the
guest's buffer, then version exactly 1.1, type GET_QUOTE_RESP, ``size`` within the buffer,
error code 0, ``selected_id_size`` 0 and ``quote_size`` = message length - 24 (the guest sees
``0x8000000000000000``, error). QEMU never compares ``size`` with the length prefix, and neither
does this class (§2.8).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..abi.qgs import HEADER_SIZE, MAJOR_VERSION, MINOR_VERSION, GetQuoteRequest, MsgType
from ..errors import LocalProtocolError, RemoteProtocolError
from .qgs import NEED_DATA, PREFIX_SIZE, QgsClientConnection, _NeedData

#: QEMU's GetQuote header in the guest's shared buffer: version, error code, in_len, out_len
TDX_GET_QUOTE_HEADER = 24
#: Linux's tdx-guest driver shares an 8 KiB buffer; the payload is what follows QEMU's header
LINUX_GUEST_PAYLOAD: Final = 8192 - TDX_GET_QUOTE_HEADER
#: the GET_QUOTE_RESP fields before the quote: header + selected_id_size + quote_size
_RESP_FIXED = HEADER_SIZE + 8
#: what the guest's status word says when QEMU gives up (``tdx-qgs.md`` §1.5)
GET_QUOTE_ERROR = 0x8000000000000000
GET_QUOTE_SERVICE_UNAVAILABLE = 0x8000000000000001


@dataclass(frozen=True, slots=True)
class QuoteForwarded:
    """The reply passed QEMU's checks: the quote copied back to the guest (the reply minus 28 bytes)."""

    quote: bytes


class QemuRefused(RemoteProtocolError):
    """QEMU refused the QGS's reply; ``guest_status`` is what the guest's status word then says."""

    def __init__(self, reason: str, guest_status: int = GET_QUOTE_ERROR) -> None:
        self.guest_status = guest_status
        super().__init__(
            f"QEMU refuses the QGS reply: {reason} (the guest's GetQuote status: {guest_status:#x})"
        )


class QemuGetQuote:
    """One GetQuote forwarded by QEMU (see the module doc).

    Args:
        guest_buffer: the guest's payload capacity after QEMU's 24-byte header (Linux: 8 KiB - 24).
    """

    __slots__ = ("_buf", "_eof", "guest_buffer", "state")

    def __init__(self, guest_buffer: int = LINUX_GUEST_PAYLOAD) -> None:
        if guest_buffer <= PREFIX_SIZE + _RESP_FIXED:
            raise LocalProtocolError(f"a {guest_buffer}-byte guest buffer cannot hold a quote")
        self.guest_buffer = guest_buffer
        self._buf = bytearray()
        self._eof = False
        self.state = "IDLE"

    def send(self, td_report: bytes) -> bytes:
        """The bytes QEMU writes for the guest's TDREPORT: GET_QUOTE_REQ v1.1, no id list, framed."""
        if self.state != "IDLE":
            raise LocalProtocolError("QEMU opens one QGS connection per GetQuote")
        self.state = "WAITING"
        return QgsClientConnection().send(GetQuoteRequest(td_report))

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif len(self._buf) < self.guest_buffer:  # QEMU reads into the guest buffer, no further
            self._buf += data[: self.guest_buffer - len(self._buf)]

    def next_event(self) -> QuoteForwarded | _NeedData:
        """The quote for the guest, or :data:`NEED_DATA`.

        Raises:
            QemuRefused: QEMU's checks refuse the reply (its reason; the guest's status word).
        """
        if self.state != "WAITING":
            raise LocalProtocolError("no GetQuote is waiting for a reply")
        buf = self._buf
        if len(buf) >= PREFIX_SIZE:
            length = int.from_bytes(buf[:PREFIX_SIZE], "big")
            capacity = self.guest_buffer - PREFIX_SIZE
            if length == 0 or length > capacity:
                self.state = "DONE"
                raise QemuRefused(f"message len {length} must be non-zero and at most {capacity}")
            if len(buf) >= PREFIX_SIZE + length:
                self.state = "DONE"
                return QuoteForwarded(self._check(bytes(buf[PREFIX_SIZE : PREFIX_SIZE + length]), capacity))
        if self._eof:
            self.state = "DONE"
            raise QemuRefused(
                f"end of file before reply received ({len(buf)} bytes)", GET_QUOTE_SERVICE_UNAVAILABLE
            )
        return NEED_DATA

    @staticmethod
    def _check(message: bytes, capacity: int) -> bytes:
        if len(message) < _RESP_FIXED:
            raise QemuRefused(f"a {len(message)}-byte reply is shorter than GET_QUOTE_RESP's {_RESP_FIXED}")
        major, minor, mtype, size, code, selected, quote_size = struct.unpack_from("<HHIIIII", message)
        if (major, minor) != (MAJOR_VERSION, MINOR_VERSION):
            raise QemuRefused(f"invalid QGS message header version {major}.{minor} (QEMU wants 1.1)")
        if mtype != MsgType.GET_QUOTE_RESP:
            raise QemuRefused(f"invalid QGS message type {mtype}")
        if size > capacity:
            raise QemuRefused(f"QGS message size {size} exceeds the payload capacity {capacity}")
        if code:
            raise QemuRefused(f"QGS message error code {code:#x}")
        if selected:
            raise QemuRefused(f"selected ID size {selected}, not 0")
        if quote_size != len(message) - _RESP_FIXED:
            raise QemuRefused(f"quote size {quote_size} does not match the {len(message)}-byte message")
        return message[_RESP_FIXED:]


__all__ = [
    "GET_QUOTE_ERROR",
    "GET_QUOTE_SERVICE_UNAVAILABLE",
    "LINUX_GUEST_PAYLOAD",
    "TDX_GET_QUOTE_HEADER",
    "QemuGetQuote",
    "QemuRefused",
    "QuoteForwarded",
]
