"""Hostile and heavy clients against the QGS service (attestation-services.md §4: 100 parallel
requests crashed a TD's path; a guest can push anything through raw mode). A real QgsServer on a
Unix socket: garbage of every shape, clients that never read their reply, and a burst of 100
parallel TD requests; good clients are served throughout and the server ends with nothing held."""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.testing.restart import check_td_quote

from ._aesm_helpers import short_dir
from .test_qgs_ops import exchange, make_server, quote_frame, running, wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("qgshostile") / "p")


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def good_quote(path: Path, platform: Platform, data: bytes) -> None:
    reply = exchange(path, quote_frame(platform, data))
    (size,) = struct.unpack(">I", reply[:4])
    assert size == len(reply) - 4
    resp = q.GetQuoteResponse.from_bytes(reply[4:])
    assert resp.error_code == 0
    assert check_td_quote(resp.quote, data, {}) is None


def garbage(rng: random.Random) -> bytes:
    """One hostile input: random bytes, a lying prefix, a huge prefix, a bad header, 1024 bytes of
    noise (raw mode), a frame cut short."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 3000))
    if kind == 1:
        body = rng.randbytes(rng.randrange(0, 200))
        return struct.pack(">I", len(body) + rng.randrange(1, 50)) + body  # says more than it sends
    if kind == 2:
        return struct.pack(">I", 0xFFFF_FFF0) + rng.randbytes(16)  # far past the 1 MiB cap
    if kind == 3:  # a header of the right size with nonsense fields
        return struct.pack(">I", 16) + struct.pack("<HHIII", 1, 1, rng.randrange(1 << 32), 16, 7)
    if kind == 4:
        return rng.randbytes(1024)  # "raw mode" noise: not a TDREPORT of this platform
    return quote_frame_cut(rng)


_FRAME: bytes = b""


def quote_frame_cut(rng: random.Random) -> bytes:
    return _FRAME[: rng.randrange(1, len(_FRAME))]


def test_garbage_never_harms_the_service(platform: Platform, root: Path) -> None:
    global _FRAME
    _FRAME = quote_frame(platform, b"cut")
    path = root / "qgs.socket"
    rng = random.Random(1234)
    server = make_server(platform, path, timeout=1.0, workers=2)
    inputs = [garbage(rng) for _ in range(120)]
    bad: list[str] = []

    def hostile(data: bytes) -> None:
        reply = exchange(path, data, timeout=30)
        # an answer is a whole frame of Intel's error form, never anything else
        if reply and (len(reply) < 4 or struct.unpack(">I", reply[:4])[0] != len(reply) - 4):
            bad.append(reply[:40].hex())

    with running(server):
        threads = [threading.Thread(target=hostile, args=(d,)) for d in inputs]
        for t in threads:  # all at once: the ones that lie about their length hold a slot meanwhile
            t.start()
        for i in range(5):
            good_quote(path, platform, f"good {i}".encode())
        for t in threads:
            t.join(60)
        assert not bad
        good_quote(path, platform, b"after the garbage")
        wait_for(lambda: not server.connections and server.in_flight == 0)


def test_clients_that_never_read_are_cut_off(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    server = make_server(platform, path, idle_timeout=0.5, timeout=5.0, workers=2)
    held: list[socket.socket] = []
    with running(server):
        try:
            for i in range(50):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.connect(str(path))
                s.sendall(quote_frame(platform, f"never read {i}".encode()))
                held.append(s)
            good_quote(path, platform, b"served meanwhile")
            # a TD quote reply fits the kernel's socket buffer: each is written whole and the
            # connection released at once (replies that do not fit are aborted after idle_timeout)
            wait_for(lambda: not server.connections and server.in_flight == 0, timeout=60)
            good_quote(path, platform, b"served after")
        finally:
            for s in held:
                s.close()


@pytest.mark.parametrize("max_in_flight", [128, 16])
def test_a_hundred_parallel_td_requests(platform: Platform, root: Path, max_in_flight: int) -> None:
    """Each of 100 parallel requests gets a valid quote, or (past max_in_flight) the immediate
    0x12001 that libtdx_attest reports as an error: never a hang, a cut reply or a crash."""
    path = root / "qgs.socket"
    server = make_server(platform, path, workers=4, max_in_flight=max_in_flight)
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    def one(i: int) -> None:
        data = f"td {i}".encode()
        start.wait(30)
        reply = exchange(path, quote_frame(platform, data), timeout=60)
        resp = q.GetQuoteResponse.from_bytes(reply[4:])
        if resp.error_code == 0:
            outcome = "quote" if check_td_quote(resp.quote, data, {}) is None else "bad quote"
        else:
            outcome = "busy" if resp.error_code == q.MsgError.UNEXPECTED else f"error {resp.error_code:#x}"
        with lock:
            results.append(outcome)

    with running(server):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 100
        assert set(results) <= {"quote", "busy"}, sorted(set(results))
        if max_in_flight >= 100:
            assert results.count("quote") == 100
        else:
            assert results.count("quote") >= max_in_flight
        good_quote(path, platform, b"after the burst")
        wait_for(lambda: not server.connections and server.in_flight == 0)
