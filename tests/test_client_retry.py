"""client: a request whose connection is lost before any reply byte (a daemon killed with it in
flight) is sent again on a new connection within the retry deadline, at most 3 tries."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.client import AsyncQuoteClient, QuoteClient
from sgx_quote_helper.errors import TransportError
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

from ._aesm_helpers import read_frame, short_dir

REPLY = encode_frame(m.encode_response(m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS, 1)))


class Flaky:
    """A socket server that drops the first ``drops`` connections after reading the request (reset
    or plain close), then answers."""

    def __init__(self, path: Path, drops: int, reset: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.drops, self.reset, self.accepted = drops, reset, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.accepted += 1
                if read_frame(conn) is None:
                    continue
                if self.accepted <= self.drops:
                    if self.reset:  # RST instead of FIN
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                    continue
                conn.sendall(REPLY)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def path() -> Iterator[Path]:
    with short_dir() as d:
        yield d / "s"


@pytest.mark.parametrize("reset", [False, True])
def test_sync_client_retries_a_lost_request(path: Path, reset: bool) -> None:
    srv = Flaky(path, drops=2, reset=reset)
    try:
        assert QuoteClient(path, retry_deadline=5).get_supported_att_key_id_num() == 1
        assert srv.accepted == 3
    finally:
        srv.close()


def test_sync_client_gives_up_after_three_tries(path: Path) -> None:
    srv = Flaky(path, drops=10, reset=False)
    try:
        with pytest.raises(TransportError, match="closed the connection without answering"):
            QuoteClient(path, retry_deadline=5).get_supported_att_key_id_num()
        assert srv.accepted == 3
    finally:
        srv.close()


def test_sync_client_no_retry_past_the_retry_deadline(path: Path) -> None:
    srv = Flaky(path, drops=1, reset=False)
    try:
        with pytest.raises(TransportError):
            QuoteClient(path, retry_deadline=1e-9).get_supported_att_key_id_num()
        assert srv.accepted == 1
    finally:
        srv.close()


def test_async_client_retries_a_lost_request(path: Path) -> None:
    srv = Flaky(path, drops=2, reset=False)

    async def go() -> int:
        return await AsyncQuoteClient(path, retry_deadline=5).get_supported_att_key_id_num()

    try:
        assert asyncio.run(go()) == 1
        assert srv.accepted == 3
    finally:
        srv.close()
