"""Ownership of the daemon's socket path: who serves it now, and taking it over without a gap.

Before binding, :func:`probe_path` classifies the path:

- ``ABSENT`` / ``STALE`` (a socket file nobody listens on): just replace it;
- ``OURS``: a live sgx-quote-helper answers our HelperProbe request (envelope field 1000): take it
  over (an update replacing the running service);
- ``FOREIGN``: something listens but does not answer the probe (Intel's aesmd closes the connection
  on an unknown request) or the path is not a socket: refuse unless ``--replace``.

:func:`publish_socket` binds a listening socket under a temporary name in the same directory, sets
its mode, and ``rename()``-s it over the path: at every instant the path names a listening socket.
The previous owner notices that the path no longer names its own socket (device and inode, see
:func:`path_is` ), stops accepting, answers what it had queued and in flight, and exits.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from ..client.transport import receive
from ..errors import ConfigError
from ..service import IMPLEMENTATION
from ..wire import messages as m
from ..wire.connection import PEER_CLOSED, ClientConnection, ProtocolViolation

log = logging.getLogger(__name__)


class PathState(enum.Enum):
    ABSENT = "absent"
    STALE = "stale"
    OURS = "ours"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What serves a socket path. ``detail`` is one human sentence; ``pid`` only for OURS."""

    state: PathState
    detail: str
    pid: int = 0
    instance_id: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    """The (device, inode) of the socket file we bound: how we recognise "still ours"."""

    dev: int
    ino: int


def probe_path(path: Path, timeout: float = 2.0) -> ProbeResult:
    """Classify what serves ``path`` (see the module doc). Never raises for a live peer's behaviour."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ProbeResult(PathState.ABSENT, f"{path} does not exist")
    if not stat.S_ISSOCK(st.st_mode):
        return ProbeResult(PathState.FOREIGN, f"{path} exists and is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return ProbeResult(PathState.STALE, f"{path} is a socket nobody listens on (stale)")
        except OSError as exc:
            return ProbeResult(PathState.FOREIGN, f"cannot connect to {path}: {exc}")
        conn = ClientConnection()
        try:
            sock.sendall(conn.send(m.HelperProbeRequest()))
            reply = receive(conn, sock.recv)
        except TimeoutError:
            return ProbeResult(
                PathState.FOREIGN, f"{path} is served by a program that did not answer our probe"
            )
        except OSError as exc:
            return ProbeResult(PathState.FOREIGN, f"{path} is served by another program ({exc})")
        if reply is PEER_CLOSED:
            return ProbeResult(
                PathState.FOREIGN,
                f"{path} is served by another program (it closed on our probe, as Intel's aesmd does)",
            )
        if isinstance(reply, ProtocolViolation):
            return ProbeResult(
                PathState.FOREIGN, f"{path} is served by another program (bad reply: {reply.reason})"
            )
        if isinstance(reply, m.HelperProbeResponse) and reply.implementation == IMPLEMENTATION:
            return ProbeResult(
                PathState.OURS,
                f"{path} is served by sgx-quote-helper {reply.version} (pid {reply.pid})",
                reply.pid,
                reply.instance_id,
                reply.version,
            )
        return ProbeResult(PathState.FOREIGN, f"{path} is served by another program (unexpected reply)")
    finally:
        sock.close()


def path_is(path: Path, ident: SocketIdentity) -> bool:
    """True when ``path`` still names the socket file ``ident`` (not a successor's)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_dev == ident.dev and st.st_ino == ident.ino


def unlink_if_ours(path: Path, ident: SocketIdentity) -> bool:
    """Remove ``path`` only if it still names our socket. Returns True if removed."""
    if not path_is(path, ident):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def publish_socket(
    path: Path,
    *,
    mode: int,
    backlog: int,
    replace: bool,
    probe_timeout: float,
    group: int | None = None,
) -> tuple[socket.socket, SocketIdentity, ProbeResult]:
    """Bind, listen and atomically put a new socket at ``path`` (see the module doc).

    Returns the listening socket, its identity and what was at the path before. ``group`` (a gid)
    is given to the socket before it appears at the path (never visible with the wrong group).

    Raises:
        ConfigError: another program serves the path and ``replace`` is false; or binding failed.
    """
    before = probe_path(path, probe_timeout)
    if before.state is PathState.FOREIGN and not replace:
        raise ConfigError(f"{before.detail}; refusing to take it over (use --replace to force)")
    if path.is_dir() and not path.is_symlink():
        raise ConfigError(f"{path} is a directory")
    parent = path.parent
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the socket directory {parent}: {exc}") from exc
    tmp = parent / f".{path.name}.{secrets.token_hex(3)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        try:
            if group is not None:
                os.chown(tmp, -1, group)
            os.chmod(tmp, mode)
            sock.listen(backlog)
            st = os.lstat(tmp)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {path}: {exc}") from exc
    sock.setblocking(False)
    ident = SocketIdentity(st.st_dev, st.st_ino)
    if before.state is PathState.OURS:
        log.info(
            "took over %s from sgx-quote-helper pid %d; it finishes its work and exits", path, before.pid
        )
    elif before.state is PathState.FOREIGN:
        log.warning("replaced %s (--replace): %s", path, before.detail)
    elif before.state is PathState.STALE:
        log.info("replaced stale socket %s", path)
    return sock, ident, before


__all__ = [
    "PathState",
    "ProbeResult",
    "SocketIdentity",
    "path_is",
    "probe_path",
    "publish_socket",
    "unlink_if_ours",
]
