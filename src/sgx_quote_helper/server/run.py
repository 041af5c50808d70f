"""Run the quote daemon in the foreground: event loop choice, signals, start-up checks.

``run_server(service, config)`` blocks until SIGTERM or SIGINT and returns why it stopped. A daemon
whose path a successor took over does not exit by itself: under Kubernetes (restartPolicy Always)
an exit means a container restart. It stays up, drained and not ready, until its pod is deleted.

- SIGTERM: when a successor already serves the path, stop at once (finishing what is owed); while
  we still serve it, keep serving up to ``config.handover_window`` seconds so a successor can take
  it over without a gap (an orchestrator that stops us early), then stop and remove the socket.
- SIGINT (Ctrl-C): stop at once (finishing what is owed), removing the socket if still ours.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from ..service import AesmService
from .config import ServerConfig
from .lifecycle import PathServer
from .unix import AesmServer

log = logging.getLogger(__name__)

#: file descriptors we want: room for at least 1,024 concurrent client connections
WANTED_NOFILE = 4096


def protobuf_backend() -> str:
    """The protobuf runtime in use ("upb" is the fast one; "python" is ~15x slower)."""
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


def uvloop_available() -> bool:
    """True when uvloop can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


#: glibc mallopt parameter M_MMAP_THRESHOLD (malloc.h)
_M_MMAP_THRESHOLD = -3
#: allocations above this come from mmap, so a freed reply buffer goes back to the system at once
MMAP_THRESHOLD = 128 << 10


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (default 128 KiB, but it grows to the largest block freed).

    A reply of up to 1 MiB (GetQuoteEx pads the quote to ``buf_size``) is one malloc; with the
    growing threshold, hundreds of them freed together (clients aborted for not reading) stay in the
    heap and the RSS never comes back. Pinned, each is its own mapping and is unmapped when freed.
    Returns False where there is no glibc (nothing done).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def check_environment() -> list[str]:
    """Start-up checks; returns the warnings it logged (protobuf backend, fd limit)."""
    warnings: list[str] = []
    backend = protobuf_backend()
    if backend != "upb":
        warnings.append(
            f"protobuf runs on its {backend!r} backend, not 'upb': each request costs ~15x more CPU "
            "(unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION / install the protobuf wheel)"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < WANTED_NOFILE:
        target = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft < 1100:
            warnings.append(f"only {soft} file descriptors allowed: fewer than ~1,024 concurrent clients")
    for w in warnings:
        log.warning("%s", w)
    return warnings


def new_event_loop(use_uvloop: bool = True) -> tuple[asyncio.AbstractEventLoop, str]:
    """A fresh event loop (uvloop when wanted and installed) and its name."""
    if use_uvloop and uvloop_available():
        import uvloop

        return uvloop.new_event_loop(), "uvloop"
    if use_uvloop:
        log.warning("uvloop is not installed: using asyncio's default loop (about 2x slower per connection)")
    return asyncio.new_event_loop(), "asyncio"


S = TypeVar("S", bound=PathServer)


async def serve(
    service: AesmService | None,
    config: ServerConfig,
    on_ready: Callable[[AesmServer], None] | None = None,
    *,
    server: AesmServer | None = None,
    also: tuple[PathServer, ...] = (),
) -> str:
    """Start an :class:`AesmServer` (or the given ``server``, e.g. the upstream proxy), stop it on
    SIGTERM (after the handover window) or SIGINT; returns why it stopped. ``also``: more servers
    of this process (the QGS service, ``serve --qgs-socket``), started after it and stopped with it."""
    if server is None:
        server = AesmServer(service, config)
    if also:
        return await serve_paths((server, *also), on_ready)
    return await serve_path(server, on_ready)


async def serve_paths(servers: tuple[PathServer, ...], on_ready: Callable[[Any], None] | None = None) -> str:
    """:func:`serve_path` for several servers in one process (one event loop): all start (or none
    stays up), SIGTERM/SIGINT go to each, and each stops by its own lifecycle; the reasons joined."""
    started: list[PathServer] = []
    try:
        for srv in servers:
            await srv.start()
            started.append(srv)
    except BaseException:
        for srv in started:
            srv.request_stop("another service of this process failed to start")
            await srv.serve_until_stopped()
        raise

    def each(method: str, reason: str) -> None:
        for srv in servers:
            getattr(srv, method)(reason)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, each, "terminate", "signal SIGTERM")
    loop.add_signal_handler(signal.SIGINT, each, "request_stop", "signal SIGINT")
    if on_ready is not None:
        on_ready(servers[0])
    try:
        reasons = await asyncio.gather(*(s.serve_until_stopped() for s in servers))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    return "; ".join(f"{s.protocol}: {r}" for s, r in zip(servers, reasons, strict=True))


async def serve_path(server: S, on_ready: Callable[[S], None] | None = None) -> str:
    """Start any of our servers (AESM, proxy, QGS), stop it on SIGTERM (after the handover window)
    or SIGINT; returns why it stopped."""
    await server.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.terminate, "signal SIGTERM")
    loop.add_signal_handler(signal.SIGINT, server.request_stop, "signal SIGINT")
    if on_ready is not None:
        on_ready(server)
    try:
        return await server.serve_until_stopped()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            # stopped already (e.g. after a takeover): a supervisor's SIGTERM now must not turn our
            # clean exit into death by signal
            signal.signal(sig, signal.SIG_IGN)


def run_server(
    service: AesmService | None,
    config: ServerConfig,
    on_ready: Callable[[AesmServer], None] | None = None,
    *,
    server: AesmServer | None = None,
    also: tuple[PathServer, ...] = (),
) -> str:
    """Blocking entry point (see the module doc). Raises ConfigError if the path cannot be served.

    ``server`` replaces the default ``AesmServer(service, config)`` (the upstream proxy passes its
    ``ProxyServer`` and no service); ``also``: more servers on the same loop (see :func:`serve`).
    """
    check_environment()
    fix_mmap_threshold()
    loop, name = new_event_loop(config.use_uvloop)
    log.info("event loop: %s, protobuf backend: %s", name, protobuf_backend())
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(serve(service, config, on_ready, server=server, also=also))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def run_path_server(
    server: S, on_ready: Callable[[S], None] | None = None, *, use_uvloop: bool = True
) -> str:
    """:func:`run_server` for any of our servers (the QGS service): blocks until SIGTERM/SIGINT."""
    fix_mmap_threshold()
    loop, name = new_event_loop(use_uvloop)
    log.info("event loop: %s", name)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(serve_path(server, on_ready))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


__all__ = [
    "check_environment",
    "new_event_loop",
    "protobuf_backend",
    "run_path_server",
    "run_server",
    "serve",
    "serve_path",
    "serve_paths",
    "uvloop_available",
]
