"""Hostile clients cost nothing: 500 clients that each ask GetQuoteEx with a 1 MiB ``buf_size`` and
never read the reply. The daemon (a subprocess, its /proc read) keeps serving good clients, holds at
most its reply-buffer cap, aborts the readers at its idle timeout (not a graceful close that waits
for a flush), frees their buffers and slots, and accepts new connections again."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.testing import hostile
from sgx_quote_helper.testing.restart import Daemons, Load
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

from ._aesm_helpers import short_dir

IDLE = 3.0
CAP_MIB = 32
MAX_CONNECTIONS = 600


def _fds_for(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs ~{n} file descriptors")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _ends_with_eof(s: socket.socket) -> bool:
    """Whatever reached the reader before the daemon dropped it, then EOF (or a reset)."""
    s.settimeout(2.0)
    try:
        while s.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@pytest.mark.slow
def test_500_clients_that_never_read_a_1mib_reply_cost_nothing_after_the_deadline() -> None:
    _fds_for(1400)
    with short_dir() as root:
        daemons = Daemons(
            root,
            (
                "--idle-timeout", str(IDLE), "--read-timeout", "1.5", "-q",
                "--max-connections", str(MAX_CONNECTIONS), "--max-reply-buffer", str(CAP_MIB),
            ),
        )  # fmt: skip
        daemons.start()
        assert daemons.current is not None
        pid = daemons.current.pid
        load = Load(daemons, clients=4)
        load.start()
        try:
            rep = load.reports[0]
            big = encode_frame(m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), load.key, None, 1 << 20)))

            def good() -> int:
                return sum(s.ok for s in load.stats)

            time.sleep(1.0)  # warm up: baseline after the good clients' first quotes
            rss0, fds0 = hostile.rss_kib(pid), hostile.open_fds(pid)
            readers = hostile.never_reading(daemons.path, big, 500)
            try:
                assert len(readers) >= 400  # the rest may meet --max-connections (600 with good ones)
                peak = hostile.rss_kib(pid)
                before = good()
                t_end = time.monotonic() + IDLE - 0.5
                while time.monotonic() < t_end:  # while they sit: good clients are served
                    peak = max(peak, hostile.rss_kib(pid))
                    time.sleep(0.1)
                assert good() > before, "good clients were not served while the readers sat"
                # the reply-buffer cap bounds what they hold: the cap counts the bytes not yet
                # written; the reply objects those bytes belong to, and the copies made while a
                # 1 MiB reply is built, are up to as much again (measured: +77 MiB with a 32 MiB cap)
                assert peak - rss0 < (2 * CAP_MIB + 24) * 1024, (peak, rss0)
                # after the deadline: aborted, buffers freed, fds and slots released
                deadline = time.monotonic() + IDLE + 6
                while hostile.open_fds(pid) > fds0 + 8:
                    assert time.monotonic() < deadline, (hostile.open_fds(pid), fds0)
                    time.sleep(0.1)
                assert all(_ends_with_eof(s) for s in readers)
                # --max-connections is free again: a new client gets a quote at once
                with QuoteClient(daemons.path, timeout=10, retry_deadline=0) as c:
                    c.init_quote_ex()
                    assert c.get_quote_size_ex() > 0
                time.sleep(0.5)
                rss1 = hostile.rss_kib(pid)
                assert rss1 - rss0 < 8 * 1024, f"RSS {rss0} KiB before, {rss1} KiB after, peak {peak}"
            finally:
                for s in readers:
                    s.close()
            for s in load.stats:
                assert s.failed == 0 and s.bad_quotes == 0, s.errors
        finally:
            load.stop()
            daemons.stop()
