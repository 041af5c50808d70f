"""``ServerThread``: run the quote daemon's socket server in a background thread (tests, demos).

The server gets its own event loop (uvloop when available) in a daemon thread; the caller talks to
it with the blocking or asyncio client from any other thread::

    with ServerThread(AesmService(FakeEngine()), ServerConfig(socket_path=path)) as daemon:
        QuoteClient(path).get_supported_att_key_id_num()
    # leaving the block stops it gracefully (as SIGTERM does)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ..server.config import ServerConfig
from ..server.run import new_event_loop
from ..server.unix import AesmServer
from ..service import AesmService


class ServerThread:
    """A started :class:`AesmServer` on a private loop in a background thread.

    Args:
        service: what the server answers with.
        config: socket path and limits.
        use_uvloop: run on uvloop when installed (else asyncio's loop).
    """

    def __init__(self, service: AesmService, config: ServerConfig, use_uvloop: bool = True) -> None:
        self.service = service
        self.config = config
        self.use_uvloop = use_uvloop
        self.server: AesmServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_reason: str | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aesm-server", daemon=True)

    def __enter__(self) -> ServerThread:
        return self if self._thread.is_alive() or self._ready.is_set() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start and wait until the socket is published; re-raises a start-up error (ConfigError)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start")
        if self.error is not None:
            self._thread.join(timeout)
            raise self.error
        return self

    def _main(self) -> None:
        loop, _ = new_event_loop(self.use_uvloop)
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        server = AesmServer(self.service, self.config)
        try:
            await server.start()
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self.server = server
        self._ready.set()
        self.stop_reason = await server.serve_until_stopped()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop (thread-safe)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def request_stop(self, reason: str = "stop requested", unlink: bool = True) -> None:
        """Ask for a graceful stop without waiting (what the SIGTERM handler does)."""
        if self.server is not None:
            self.call(self.server.request_stop, reason, unlink)

    def join(self, timeout: float = 30.0) -> bool:
        """Wait for the server thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop and wait."""
        self.request_stop()
        self.join(timeout)


__all__ = ["ServerThread"]
