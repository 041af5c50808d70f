"""Settings of the quote daemon's socket server, validated once (``ServerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..wire.framing import DEFAULT_MAX_FRAME_SIZE

#: where every AESM client looks (compiled into Intel's libraries: CONFIG_SOCKET_PATH)
DEFAULT_SOCKET_PATH = Path("/var/run/aesmd/aesm.socket")
#: sun_path is 108 bytes including the terminating NUL
MAX_UNIX_PATH = 107


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the daemon listens and protects itself.

    Attributes:
        socket_path: the Unix socket path clients connect to.
        socket_mode: permission bits of the socket file (aesmd: 0777; the shared directory is
            what controls access).
        backlog: ``listen()`` backlog (aesmd uses 32; bursts of one-connection-per-request clients
            need far more).
        max_in_flight: engine requests queued for or running in the engine thread before new ones
            are answered BUSY (18) (requests run inline on the loop never queue in the process).
        max_frame_size: the largest request body accepted (checked on the length prefix).
        idle_timeout: seconds a connection may sit idle between requests before we close it.
        read_timeout: seconds a client has to finish a request once it began sending it.
        replace: take the path even when another program (not sgx-quote-helper) serves it.
        probe_timeout: seconds to wait for the current owner of the path to identify itself.
        path_check_interval: how often we check the path still names our socket (takeover).
        shutdown_grace: upper bound in seconds on finishing queued and in-flight work at shutdown.
        use_uvloop: use uvloop's event loop when it is installed.
        inline_engine_below: engine requests of a kind that recently took less than this many
            seconds run directly on the event loop when nothing waits for the engine thread (a
            thread hop costs ~100 µs, more than a simulated quote); slower engines (hardware, ms
            per quote) always run in the engine thread. 0 = always use the engine thread.
    """

    socket_path: Path = DEFAULT_SOCKET_PATH
    socket_mode: int = 0o777
    backlog: int = 1024
    max_in_flight: int = 256
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    idle_timeout: float = 30.0
    read_timeout: float = 15.0
    replace: bool = False
    probe_timeout: float = 2.0
    path_check_interval: float = 0.5
    shutdown_grace: float = 10.0
    use_uvloop: bool = True
    inline_engine_below: float = 0.0005

    def __post_init__(self) -> None:
        if len(str(self.socket_path).encode()) > MAX_UNIX_PATH - 12:
            raise ConfigError(
                f"socket path {str(self.socket_path)!r} is too long for a Unix socket "
                f"(at most {MAX_UNIX_PATH - 12} bytes here, to leave room for the temporary name)"
            )
        if not 0 <= self.socket_mode <= 0o7777:
            raise ConfigError(f"socket mode {self.socket_mode:o} is not a permission mode")
        for name in ("backlog", "max_in_flight", "max_frame_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "idle_timeout",
            "read_timeout",
            "probe_timeout",
            "path_check_interval",
            "shutdown_grace",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")


__all__ = ["DEFAULT_SOCKET_PATH", "ServerConfig"]
