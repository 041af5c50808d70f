"""Settings of the quote daemon's socket server, validated once (``ServerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..abi.aesm import DEFAULT_SOCKET_PATH
from ..errors import ConfigError
from ..wire.framing import DEFAULT_MAX_FRAME_SIZE

#: the default global cap on reply bytes buffered for clients that do not read (64 MiB)
DEFAULT_MAX_REPLY_BYTES = 64 << 20
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
        socket_group: group id given to the socket file (``None``: the process's group).
        allow_uids / allow_gids: when either is non-empty, only peers (SO_PEERCRED) whose uid or
            primary gid is listed may connect; others are closed at once with one log line.
        rate_limit: requests per second per peer (0: no limit); past it, BUSY (18).
        rate_burst: requests a peer may send at once before the rate applies (bucket size).
        max_in_flight_per_peer: engine requests of one peer queued or running before its next ones
            are answered BUSY (0: no per-peer limit, only ``max_in_flight``).
        limit_by_pid: key per-peer limits by the peer's pid instead of its uid.
        max_connections: open client connections; a new one past it is closed with a log line.
        max_connections_per_uid: open connections of one peer uid (SO_PEERCRED); a new one past it
            is closed with a log line, so one uid cannot take every slot (a second line behind the
            allow-list). 0: no per-uid cap (only ``max_connections``).
        max_reply_bytes: reply bytes buffered for clients that have not read them yet, all
            connections together; past it new GetQuoteEx requests are answered BUSY (18) (a flood
            of clients that ask for big quote buffers and never read cannot grow memory). 0: no cap.
        metrics_port: serve Prometheus metrics on this TCP port (``None``: no metrics endpoint;
            0: any free port, see ``AesmServer.metrics_server``).
        private_dir: the pod's private directory (an emptyDir under Kubernetes): the instance record
            and the private socket the probes use (server/instance.py); ``None``: neither.
        handover_window: on SIGTERM while we still serve the path, seconds we keep serving it for a
            successor to take it over before we stop (0: stop at once).
        foreign_grace: seconds a program at our path may accept without answering our probe before
            we call it foreign and put our socket back (a successor may still be starting).
        metrics_host: the address the metrics endpoint binds (loopback unless asked otherwise).
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
    socket_group: int | None = None
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    rate_limit: float = 0.0
    rate_burst: int = 0
    max_in_flight_per_peer: int = 0
    limit_by_pid: bool = False
    max_connections: int = 2048
    max_connections_per_uid: int = 0
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    private_dir: Path | None = None
    handover_window: float = 0.0
    foreign_grace: float = 10.0

    def __post_init__(self) -> None:
        if len(str(self.socket_path).encode()) > MAX_UNIX_PATH - 12:
            raise ConfigError(
                f"socket path {str(self.socket_path)!r} is too long for a Unix socket "
                f"(at most {MAX_UNIX_PATH - 12} bytes here, to leave room for the temporary name)"
            )
        if not 0 <= self.socket_mode <= 0o7777:
            raise ConfigError(f"socket mode {self.socket_mode:o} is not a permission mode")
        for name in ("backlog", "max_in_flight", "max_frame_size", "max_connections"):
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
        if self.rate_limit < 0 or self.rate_burst < 0 or self.max_in_flight_per_peer < 0:
            raise ConfigError("rate_limit, rate_burst and max_in_flight_per_peer must not be negative")
        if self.max_connections_per_uid < 0:
            raise ConfigError("max_connections_per_uid must not be negative")
        if self.max_reply_bytes < 0:
            raise ConfigError("max_reply_bytes must not be negative")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} is not a TCP port")
        if self.socket_group is not None and self.socket_group < 0:
            raise ConfigError(f"socket group {self.socket_group} is not a group id")


__all__ = ["DEFAULT_SOCKET_PATH", "ServerConfig"]
