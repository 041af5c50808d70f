"""Run an :class:`AesmServer` (or the upstream proxy) on a temporary Unix socket in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.unix import AesmServer
from sgx_quote_helper.service import AesmService


@contextmanager
def running(server: AesmServer) -> Iterator[AesmServer]:
    """Serve with ``server`` until the block ends (then a graceful stop)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        await server.serve_until_stopped()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="test-daemon")
    thread.start()
    ready.wait(30)
    if failure:
        thread.join(30)
        loop.close()
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(server.request_stop, "test over")
        thread.join(30)
        loop.close()


@contextmanager
def running_daemon(service: AesmService, socket_path: Path, **config: Any) -> Iterator[AesmServer]:
    """Serve ``service`` on ``socket_path`` until the block ends."""
    server = AesmServer(service, ServerConfig(socket_path=socket_path, use_uvloop=False, **config))
    with running(server) as srv:
        yield srv
