"""One load-generator worker process: its share of the clients as asyncio tasks on raw sockets.

Started by :func:`~sgx_quote_helper.benchmark.loadgen.run_load` (``spawn``); talks to it over a
pipe with the messages of :mod:`.spec`. Times come from the system-wide monotonic clock, so all
workers share one start and one measured window.

Client styles: ``intel`` runs :func:`.intel.transact` (Intel's libsgx_quote_ex socket code, call
for call) for every call of the workload's sequence in :class:`_IntelWorker`: a plain epoll loop
over the calls' own epoll fds (where Intel's client blocks in ``epoll_wait`` on its epoll fd, the
worker waits for that fd to become readable among all its calls', then calls ``epoll_wait`` on it
with timeout 0), no asyncio; ``aesmd`` connects, writes the whole frame at once and reads whatever
arrives (asyncio); ``keepalive`` does the same over one connection per client; ``qgs`` connects,
writes a QGS request at once and reads the reply with the workload's reader (:mod:`.qgs`: until
the framed response is complete, or in raw mode until the QGS closes).
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import signal
import socket
import time
from collections import Counter
from multiprocessing.connection import Connection

from ..wire.connection import NEED_DATA, ClientConnection
from . import intel
from .qgs import QgsWorkload
from .spec import DONE, PROGRESS, PROGRESS_INTERVAL, READY, LoadSpec
from .timing import LatencySamples
from .workload import OK, TIMEOUT, TRANSPORT


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
        kind = _IntelWorker if spec.style == "intel" else _Worker
        worker = kind(spec, clients, quota, start_ns, conn)
        cpu0 = time.process_time()
        if isinstance(worker, _IntelWorker):
            loop_name = "epoll"
            worker.run()
        else:
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
        self.body = spec.workload.body
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
        client = {"aesmd": self._aesmd_client, "qgs": self._qgs_client}.get(
            self.spec.style, self._keepalive_client
        )
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

    async def _aesmd_client(self) -> None:
        loop = asyncio.get_running_loop()
        clock = time.monotonic_ns
        while True:
            t0 = clock()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.path)
                label = self.judge(await _exchange(loop, sock, ClientConnection(), self.body))
            except (OSError, EOFError):
                label = TRANSPORT
            finally:
                sock.close()
            if not self._record(t0, clock(), label):
                return

    async def _qgs_client(self) -> None:
        workload = self.spec.workload
        assert isinstance(workload, QgsWorkload)
        loop = asyncio.get_running_loop()
        clock = time.monotonic_ns
        while True:
            t0 = clock()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.path)
                await loop.sock_sendall(sock, workload.frame)
                reply = workload.reply()
                label = None
                while label is None:
                    label = reply.feed(await loop.sock_recv(sock, 65536))
            except OSError:
                label = TRANSPORT
            finally:
                sock.close()
            if not self._record(t0, clock(), label):
                return

    async def _keepalive_client(self) -> None:
        loop = asyncio.get_running_loop()
        clock = time.monotonic_ns
        sock: socket.socket | None = None
        core = ClientConnection()
        try:
            while True:
                t0 = clock()
                try:
                    if sock is None:
                        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        sock.setblocking(False)
                        await loop.sock_connect(sock, self.path)
                        core = ClientConnection()
                    label = self.judge(await _exchange(loop, sock, core, self.body))
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


class _Slot:
    """One Intel-style client: the call in progress and where it is in the workload's sequence."""

    __slots__ = ("call", "deadline", "ep", "fd", "step", "t0")

    def __init__(self) -> None:
        self.call: intel.Call | None = None
        self.ep: select.epoll | None = None
        self.fd = -1  # the call's epoll fd while it is registered in the worker's epoll
        self.deadline = math.inf
        self.step = 0
        self.t0 = 0


class _IntelWorker(_Worker):
    """The ``intel`` style without asyncio: one epoll over the calls' own epoll fds.

    Registering a call's epoll fd costs one ``epoll_ctl`` in the worker's epoll; closing it at the
    end of the call (Intel's order) removes it there too. A readiness of that fd that finds no event
    on it (a number reused by a newer call within one batch) is ignored, so each call's generator
    sees only what Intel's ``epoll_wait`` would return.
    """

    def run(self) -> None:  # type: ignore[override]
        delay = (self.start_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        self.calls = [*self.spec.workload.prelude, (self.body, self.judge)]
        self.master = select.epoll()
        self.by_fd: dict[int, _Slot] = {}
        self.active = 0
        try:
            self._loop()
        finally:
            self.master.close()
        if self.quota is None:
            self.last_ns = self.measure_ns + int(self.spec.duration * 1e9)

    def _loop(self) -> None:
        clock = time.monotonic_ns
        slots = [_Slot() for _ in range(self.clients)]
        for slot in slots:
            self._begin_request(slot, clock())
        give_up = self.end_ns + self.spec.grace * 1e9
        next_report = clock() + PROGRESS_INTERVAL * 1e9
        poll = self.master.poll
        epoll_wait = intel.SYSCALLS.epoll_wait
        while self.active:
            now_ns = clock()
            if now_ns >= next_report:
                ok = self.counts.get(OK, 0)
                self.conn.send((PROGRESS, ok, sum(self.counts.values()) - ok))
                next_report = now_ns + PROGRESS_INTERVAL * 1e9
            if now_ns >= give_up:
                for slot in slots:
                    if slot.call is not None:
                        self.counts[TIMEOUT] += 1
                        self._abandon(slot)
                return
            now = now_ns / 1e9
            first = min((s.deadline for s in slots if s.call is not None), default=math.inf)
            timeout = min(first - now, (next_report - now_ns) / 1e9, (give_up - now_ns) / 1e9)
            events = poll(max(0.0, timeout))
            for fd, _ in events:
                ready = self.by_fd.get(fd)
                if ready is None or ready.ep is None:
                    continue
                got = epoll_wait(ready.ep, 0)
                if got:
                    self._advance(ready, got)
            if first <= time.monotonic():
                now = time.monotonic()
                for slot in slots:
                    if slot.call is not None and slot.deadline <= now:
                        self._advance(slot, [])  # Intel's epoll_wait timed out

    def _begin_request(self, slot: _Slot, t0: int) -> None:
        slot.t0, slot.step = t0, 0
        self.active += 1
        slot.call = intel.transact(self.path, self.calls[0][0])
        self._advance(slot, None)

    def _advance(self, slot: _Slot, events: list[tuple[int, int]] | None) -> None:
        """Resume the slot's call with ``events`` (``None``: start it) until it waits again or the
        client stops; finished calls go on to the next call of the sequence or the next request
        (a loop, not recursion: a call may finish without ever waiting)."""
        while True:
            call = slot.call
            assert call is not None
            label = OK
            try:
                wait = next(call) if events is None else call.send(events)
            except StopIteration as done:
                label = self.calls[slot.step][1](done.value)
            except intel.ServiceTimeout:
                label = TIMEOUT
            except (intel.IntelCallError, OSError):
                label = TRANSPORT
            else:
                fd = wait.ep.fileno()
                if slot.fd != fd:
                    self.master.register(fd, select.EPOLLIN)
                    slot.fd, slot.ep = fd, wait.ep
                    self.by_fd[fd] = slot
                timeout = wait.timeout_ms / 1000 if wait.timeout_ms >= 0 else math.inf
                slot.deadline = time.monotonic() + timeout
                return
            self._unregister(slot)
            slot.call, events = None, None
            if label == OK and slot.step + 1 < len(self.calls):
                slot.step += 1
            else:
                self.active -= 1
                t1 = time.monotonic_ns()
                if not self._record(slot.t0, t1, label):
                    return
                slot.t0, slot.step = t1, 0
                self.active += 1
            slot.call = intel.transact(self.path, self.calls[slot.step][0])

    def _unregister(self, slot: _Slot) -> None:
        """The call ended: its generator closed its epoll fd, which left the worker's epoll with it."""
        if self.by_fd.get(slot.fd) is slot:
            del self.by_fd[slot.fd]
        slot.fd, slot.ep, slot.deadline = -1, None, math.inf

    def _abandon(self, slot: _Slot) -> None:
        if slot.call is not None:
            slot.call.close()  # runs the call's finally: its descriptors are closed
            slot.call = None
        self._unregister(slot)
        self.active -= 1


async def _exchange(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, core: ClientConnection, body: bytes
) -> bytes:
    """One request over ``sock``, framed and read back by the protocol core (a thin adapter): the
    reply frame's body. Raises EOFError when the peer closes or breaks the protocol first."""
    await loop.sock_sendall(sock, core.send_body(body))
    while True:
        ev = core.take_frame()
        if type(ev) is bytes:
            return ev
        if ev is not NEED_DATA:
            raise EOFError(f"no reply: {ev!r}")
        core.receive_data(await loop.sock_recv(sock, 65536), 0.0)  # no core deadlines: time unused


__all__ = ["worker_main"]
