"""AESM socket framing: a 4-byte little-endian length, then that many bytes of protobuf.

Sans-I/O. :class:`FrameDecoder` is fed whatever chunks the socket delivers (Intel's client writes
the prefix and the body in two writes; other clients in one) and returns the complete frames. The
length prefix is checked against ``max_frame_size`` as soon as its 4 bytes are there, before any
body byte is buffered, so a hostile prefix never makes us allocate. See
``shared/specs/aesm-protocol.md`` §2 (``IPC/SocketTransporter.cpp``: a raw host-order ``uint32``
on x86-64, i.e. little-endian).
"""

from __future__ import annotations

import struct

from ..errors import Fault, LocalProtocolError, RemoteProtocolError

#: the length prefix: ``uint32_t`` in host order (x86-64: little-endian)
HEADER = struct.Struct("<I")
HEADER_SIZE = HEADER.size
#: our default cap on a frame body; Intel sets none, the largest normal request is ~1.7 KB
DEFAULT_MAX_FRAME_SIZE = 1 << 20
#: a ``uint32`` length cannot say more than this
MAX_ENCODABLE = 0xFFFFFFFF


def encode_frame(body: bytes, max_frame_size: int = MAX_ENCODABLE) -> bytes:
    """Prefix ``body`` with its 4-byte little-endian length.

    Raises:
        LocalProtocolError: ``body`` is longer than ``max_frame_size`` (or than a u32 can say).
    """
    n = len(body)
    if n > max_frame_size or n > MAX_ENCODABLE:
        raise LocalProtocolError(f"frame body of {n} bytes exceeds the limit of {max_frame_size}")
    return HEADER.pack(n) + body


class FrameDecoder:
    """Incremental frame decoder: ``feed(chunk) -> [complete frame bodies]``.

    After a :class:`RemoteProtocolError` the decoder is poisoned (the stream cannot be resynced):
    further ``feed`` calls raise again.
    """

    __slots__ = ("_buf", "_error", "_need", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 <= max_frame_size <= MAX_ENCODABLE:
            raise ValueError(f"max_frame_size must be within 0..{MAX_ENCODABLE}")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need = -1  # body length of the frame in progress, -1 while reading the header
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (0 between frames)."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """True when part of a frame (header or body) has arrived but not all of it."""
        return bool(self._buf) or self._need >= 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame body now complete, in order.

        Raises:
            RemoteProtocolError: a length prefix above ``max_frame_size``.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        # fast path: one whole frame in one chunk, nothing pending
        if not buf and self._need < 0 and len(data) >= HEADER_SIZE:
            (n,) = HEADER.unpack_from(data, 0)
            if n > self.max_frame_size:
                raise self._fail(n)
            if len(data) == HEADER_SIZE + n:
                return [bytes(data[HEADER_SIZE:])]
        buf += data
        frames: list[bytes] = []
        while True:
            if self._need < 0:
                if len(buf) < HEADER_SIZE:
                    return frames
                (n,) = HEADER.unpack_from(buf, 0)
                if n > self.max_frame_size:
                    raise self._fail(n)
                del buf[:HEADER_SIZE]
                self._need = n
            if len(buf) < self._need:
                return frames
            frames.append(bytes(buf[: self._need]))
            del buf[: self._need]
            self._need = -1

    def eof(self) -> None:
        """The peer closed its side. Raises RemoteProtocolError if a frame was cut short."""
        if self._error is not None:
            raise self._error
        if self.in_frame:
            have = len(self._buf)
            if self._need < 0:
                reason = f"connection closed inside a length prefix ({have} of {HEADER_SIZE} bytes)"
            else:
                reason = f"connection closed inside a frame ({have} of {self._need} body bytes)"
            raise RemoteProtocolError(reason, Fault.TRUNCATED)

    def _fail(self, n: int) -> RemoteProtocolError:
        self._buf.clear()
        self._error = RemoteProtocolError(
            f"length prefix {n} exceeds the maximum frame size {self.max_frame_size}", Fault.OVERSIZED
        )
        return self._error


__all__ = ["DEFAULT_MAX_FRAME_SIZE", "HEADER_SIZE", "FrameDecoder", "encode_frame"]
