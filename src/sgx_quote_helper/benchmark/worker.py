"""One load-generator worker process: its share of the clients as asyncio tasks on raw sockets.

Started by :func:`~sgx_quote_helper.benchmark.loadgen.run_load` (``spawn``); talks to it over a
pipe with the messages of :mod:`.spec`. Times come from the system-wide monotonic clock, so all
workers share one start and one measured window.

Client styles: ``intel`` runs :func:`.intel.transact` (Intel's libsgx_quote_ex socket code, call
for call) for every call of the workload's sequence, its ``epoll_wait`` answered by this event loop;
``aesmd`` connects, writes the whole frame at once and reads whatever arrives; ``keepalive`` does the
same over one connection per client.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import struct
import time
from collections import Counter
from multiprocessing.connection import Connection

from . import intel
from .spec import DONE, PROGRESS, PROGRESS_INTERVAL, READY, LoadSpec
from .timing import LatencySamples
from .workload import OK, TIMEOUT, TRANSPORT

_HDR = struct.Struct("<I")
_MAX_REPLY = 4 << 20


def worker_main(conn: Connection, spec: LoadSpec, clients: int, quota: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's: it ends the workers
    if spec.cpu_affinity and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec.cpu_affinity)
    loop_name = "asyncio"
    loop: asyncio.AbstractEventLoop
    if spec.use_uvloop:
        try:
            import uvloop

            loop, loop_name = uvloop.new_event_loop(), "uvloop"
        except ImportError:
            loop = asyncio.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        conn.send((READY,))
        _, start_ns = conn.recv()
        worker = _Worker(spec, clients, quota, start_ns, conn)
        cpu0 = time.process_time()
        loop.run_until_complete(worker.run())
        cpu = time.process_time() - cpu0
        window_ns = worker.last_ns - worker.measure_ns
        conn.send((DONE, dict(worker.counts), worker.samples.to_bytes(), window_ns, loop_name, cpu))
    finally:
        loop.close()
        conn.close()


class _Worker:
    def __init__(
        self, spec: LoadSpec, clients: int, quota: int | None, start_ns: int, conn: Connection
    ) -> None:
        self.spec = spec
        self.path = spec.socket_path
        self.frame = spec.workload.frame
        self.judge = spec.workload.judge
        self.clients = clients
        self.quota = quota
        self.conn = conn
        self.start_ns = start_ns
        self.measure_ns = start_ns + int(spec.warmup * 1e9)
        self.end_ns = math.inf if quota is not None else self.measure_ns + int(spec.duration * 1e9)
        self.last_ns = self.measure_ns
        self.counts: Counter[str] = Counter()
        self.samples = LatencySamples()
        self.measured = 0
        self.stopping = False

    def _record(self, t0: int, t1: int, label: str) -> bool:
        """Record one finished request; False when the client should stop."""
        if t1 < self.measure_ns:
            return True
        if t1 >= self.end_ns or self.stopping:
            return False
        self.samples.add(t1 - t0)
        self.counts[label] += 1
        self.measured += 1
        self.last_ns = t1
        if self.quota is not None and self.measured >= self.quota:
            self.stopping = True
            return False
        return True

    async def run(self) -> None:
        delay = (self.start_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        client = {
            "intel": self._intel_client,
            "aesmd": self._aesmd_client,
            "keepalive": self._keepalive_client,
        }[self.spec.style]
        tasks = [asyncio.ensure_future(client()) for _ in range(self.clients)]
        reporter = asyncio.ensure_future(self._report())
        end = self.end_ns
        timeout = None if end == math.inf else max(0.0, (end - time.monotonic_ns()) / 1e9) + self.spec.grace
        _, stuck = await asyncio.wait(tasks, timeout=timeout)
        for task in stuck:
            task.cancel()
            self.counts[TIMEOUT] += 1
        if stuck:
            await asyncio.wait(stuck)
        reporter.cancel()
        if self.quota is None:
            self.last_ns = self.measure_ns + int(self.spec.duration * 1e9)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            ok = self.counts.get(OK, 0)
            self.conn.send((PROGRESS, ok, sum(self.counts.values()) - ok))

    async def _intel_client(self) -> None:
        calls = [*self.spec.workload.prelude, (self.frame[4:], self.judge)]
        clock = time.monotonic_ns
        path = self.path
        while True:
            t0 = clock()
            label = OK
            for body, judge in calls:
                try:
                    label = judge(await self._drive(intel.transact(path, body)))
                except intel.ServiceTimeout:
                    label = TIMEOUT
                except (intel.IntelCallError, OSError):
                    label = TRANSPORT
                if label != OK:
                    break
            if not self._record(t0, clock(), label):
                return

    async def _drive(self, call: intel.Call) -> bytes:
        """Run one Intel-style call; each ``epoll_wait`` Intel would block in is answered once the
        call's own epoll fd is readable in this loop (or its timeout passed)."""
        try:
            wait = next(call)
            while True:
                wait = call.send(await self._epoll_wait(wait))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _epoll_wait(self, wait: intel.Wait) -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = wait.ep.fileno()
        loop.add_reader(fd, wake)
        timer = loop.call_later(wait.timeout_ms / 1000, wake) if wait.timeout_ms >= 0 else None
        try:
            await fut
        finally:
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()
        return intel.SYSCALLS.epoll_wait(wait.ep, 0)

    async def _aesmd_client(self) -> None:
        loop = asyncio.get_running_loop()
        clock = time.monotonic_ns
        while True:
            t0 = clock()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.path)
                await loop.sock_sendall(sock, self.frame)
                label = self.judge(await _read_frame(loop, sock))
            except (OSError, EOFError):
                label = TRANSPORT
            finally:
                sock.close()
            if not self._record(t0, clock(), label):
                return

    async def _keepalive_client(self) -> None:
        loop = asyncio.get_running_loop()
        clock = time.monotonic_ns
        sock: socket.socket | None = None
        try:
            while True:
                t0 = clock()
                try:
                    if sock is None:
                        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        sock.setblocking(False)
                        await loop.sock_connect(sock, self.path)
                    await loop.sock_sendall(sock, self.frame)
                    label = self.judge(await _read_frame(loop, sock))
                except (OSError, EOFError):
                    label = TRANSPORT
                    if sock is not None:
                        sock.close()
                    sock = None
                if not self._record(t0, clock(), label):
                    return
        finally:
            if sock is not None:
                sock.close()


async def _read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """One length-prefixed reply body (raises EOFError if the peer closes early)."""
    buf = b""
    need = 4
    while len(buf) < need:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise EOFError("closed before a whole reply")
        buf += chunk
        if need == 4 and len(buf) >= 4:
            size = _HDR.unpack_from(buf)[0]
            if size > _MAX_REPLY:
                raise EOFError("reply frame too large")
            need = 4 + size
    return buf[4:need]


__all__ = ["worker_main"]
