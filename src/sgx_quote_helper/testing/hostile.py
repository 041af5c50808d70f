"""Hostile AESM clients and daemon resource probes (the hostile-client tests and the soak run).

Each behaviour talks to a daemon socket the way a broken or malicious container might:

- :func:`random_frames`: connections carrying random bytes, random bodies behind valid length
  prefixes, truncated frames, garbage protobuf, unknown envelopes;
- :func:`oversized_prefix`: a length prefix far above the frame limit (must be closed at once,
  without allocating);
- :func:`half_closed`: a request then ``shutdown(SHUT_WR)`` (answered, then closed), or half a frame
  then ``SHUT_WR`` (closed without reply);
- :func:`open_idle` (slowloris): many connections that send nothing, or a few bytes of a prefix;
- :class:`Pipeliner`: a connection that writes requests back to back and never reads a reply;
- :func:`never_reading`: connections that each ask one big reply (GetQuoteEx with a 1 MiB
  ``buf_size``) and never read it (the daemon must abort them after its idle timeout and free the
  buffered replies; past its reply-buffer cap it answers such requests BUSY).

:func:`rss_kib` and :func:`open_fds` read ``/proc/<pid>`` of the daemon process.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
from pathlib import Path

from ..wire import messages as m
from ..wire.framing import encode_frame

_PREFIX = struct.Struct("<I")


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _connect(path: Path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def _drain(s: socket.socket) -> int:
    """Read until EOF or timeout; bytes read."""
    n = 0
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            n += len(chunk)
    return n


def hostile_payload(rng: random.Random) -> bytes:
    """One random hostile request stream (see the module doc)."""
    kind = rng.randrange(6)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:  # random body behind a valid prefix
        body = rng.randbytes(rng.randrange(0, 2000))
        return _PREFIX.pack(len(body)) + body
    if kind == 2:  # truncated frame
        body = rng.randbytes(rng.randrange(10, 500))
        return _PREFIX.pack(len(body) + rng.randrange(1, 100)) + body
    if kind == 3:  # unknown envelope field
        field = rng.choice([3, 5, 99, 777, 5000])
        body = m.raw_envelope(field, b"")
        return _PREFIX.pack(len(body)) + body
    if kind == 4:  # a real request with bytes flipped
        frame = bytearray(
            encode_frame(m.encode_request(m.GetQuoteExRequest(bytes(432), bytes(256), None, 5000, 1)))
        )
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(4, len(frame))
            frame[i] ^= 1 << rng.randrange(8)
        return bytes(frame)
    return _PREFIX.pack(rng.choice([0xFFFFFFFF, 1 << 30, (1 << 20) + 1])) + rng.randbytes(16)


def random_frames(path: Path, rng: random.Random, count: int, timeout: float = 5.0) -> int:
    """``count`` connections each sending one hostile payload, half-closing and reading what comes
    back until the daemon closes. Returns how many connections the daemon closed (all should be)."""
    closed = 0
    for _ in range(count):
        with _connect(path, timeout) as s:
            with contextlib.suppress(OSError):
                s.sendall(hostile_payload(rng))
                s.shutdown(socket.SHUT_WR)
            _drain(s)
            closed += 1
    return closed


def oversized_prefix(path: Path, timeout: float = 5.0) -> bool:
    """Send a 4 GiB length prefix and keep writing; True when the daemon closed the connection."""
    with _connect(path, timeout) as s:
        try:
            s.sendall(_PREFIX.pack(0xFFFFFFFF))
            for _ in range(64):
                s.sendall(b"\0" * 65536)
        except OSError:
            return True  # reset/broken pipe: closed
        return _drain(s) == 0


def half_closed(path: Path, frame: bytes, timeout: float = 5.0) -> tuple[int, int]:
    """(bytes of reply to a whole request then SHUT_WR, bytes of reply to half a frame then SHUT_WR).
    The daemon answers the first and closes; it closes the second without a reply."""
    with _connect(path, timeout) as s:
        s.sendall(frame)
        s.shutdown(socket.SHUT_WR)
        whole = _drain(s)
    with _connect(path, timeout) as s:
        s.sendall(frame[: len(frame) // 2])
        s.shutdown(socket.SHUT_WR)
        half = _drain(s)
    return whole, half


def open_idle(path: Path, count: int, partial_every: int = 4) -> list[socket.socket]:
    """Slowloris: ``count`` connections that send nothing (every ``partial_every``-th sends 2 bytes
    of a length prefix and stalls). The caller closes them."""
    socks = []
    for i in range(count):
        s = _connect(path, 5.0)
        if partial_every and i % partial_every == 0:
            s.sendall(b"\x10\x00")
        socks.append(s)
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    """True when the daemon has closed ``s`` (non-blocking check)."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def never_reading(path: Path, frame: bytes, count: int, rcvbuf: int = 4096) -> list[socket.socket]:
    """``count`` connections that each send ``frame`` (a request with a big reply) and never read,
    with a small receive buffer (``rcvbuf``) so the reply stays in the daemon. Connections the
    daemon refuses are skipped. The caller closes them."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(5.0)
        try:
            s.connect(str(path))
            s.sendall(frame)
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


class Pipeliner:
    """A client that writes ``frame`` back to back (non-blocking) and never reads. ``sent`` counts
    the bytes the daemon accepted; a daemon that pauses reading keeps it small."""

    def __init__(self, path: Path, frame: bytes) -> None:
        self.sock = _connect(path, 5.0)
        self.sock.setblocking(False)
        self.frame = frame
        self.sent = 0

    def push(self, max_bytes: int = 4 << 20) -> int:
        """Write until the socket would block (or ``max_bytes``); returns bytes written now."""
        n = 0
        try:
            while n < max_bytes:
                n += self.sock.send(self.frame)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # closed by the daemon
        self.sent += n
        return n

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


__all__ = [
    "Pipeliner",
    "closed_by_peer",
    "half_closed",
    "hostile_payload",
    "never_reading",
    "open_fds",
    "open_idle",
    "oversized_prefix",
    "random_frames",
    "rss_kib",
]
