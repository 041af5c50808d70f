"""Ownership of the daemon's socket path: who serves it now, and taking it over without a gap.

Before binding, :func:`probe_path` classifies the path:

- ``ABSENT`` / ``STALE`` (a socket file nobody listens on): just replace it;
- ``OURS``: a live sgx-quote-helper answers our HelperProbe request (envelope field 1000; on a QGS
  socket the QGS-framed probe of wire/qgs.py, :func:`probe_qgs_path`): take it over (an update
  replacing the running service);
- ``FOREIGN``: something listens but does not answer the probe (Intel's aesmd closes the connection
  on an unknown request) or the path is not a socket: refuse unless ``--replace``.

:func:`publish_socket` binds a listening socket under a temporary name in the same directory, sets
its mode, and ``rename()``-s it over the path: at every instant the path names a listening socket.
The previous owner notices that the path no longer names its own socket (device and inode, see
:func:`path_is` ) and asks :func:`judge_loss` what happened:

- a live sgx-quote-helper answers the probe on the path: it is the successor; the previous owner
  stops accepting, answers what it had queued and in flight, and stays up drained (never exits by
  itself: under Kubernetes an exit means a container restart, see server/handover.py);
- anything else (a program that does not answer the probe, a file, nothing at all): the path is
  put back (:func:`publish_socket` again) and the foreign listener is named in an alert
  (:func:`listener_credentials`: SO_PEERCRED of the process that listens there). A program that
  accepts but does not answer is given ``foreign_grace`` seconds first (a successor whose loop is
  still starting looks like that for a moment).

"Newer": every instance has a start time (``started_ns``: Unix ns of the pod's first daemon, kept
across container restarts in the pod's private directory, server/instance.py). A starting daemon
never takes the path from a live sgx-quote-helper newer than itself (:class:`NewerOwner`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..client.transport import receive
from ..errors import ConfigError, RemoteProtocolError
from ..service import IMPLEMENTATION
from ..wire import messages as m
from ..wire.connection import PEER_CLOSED, ClientConnection, ProtocolViolation
from ..wire.qgs import CloseConnection, ProbeAnswer, QgsProbeClient

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
    started_ns: int = 0
    #: the owner's own word (``serving``, ``handed-over``, ...); ``""`` from older helpers
    owner_state: str = ""
    #: FOREIGN only: it accepted but said nothing within the timeout (maybe a successor still starting)
    silent: bool = False


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    """The (device, inode) of the socket file we bound: how we recognise "still ours"."""

    dev: int
    ino: int


#: how to ask a socket path who serves it (:func:`probe_path` for AESM, :func:`probe_qgs_path`)
Prober = Callable[[Path, float], ProbeResult]


class _Identity(Protocol):
    """What our probe's answer says (the AESM HelperProbe answer and the QGS one alike)."""

    @property
    def implementation(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def started_ns(self) -> int: ...
    @property
    def state(self) -> str: ...


def probe_path(path: Path, timeout: float = 2.0) -> ProbeResult:
    """Classify what serves ``path`` (see the module doc), asking in the AESM protocol (HelperProbe).
    Never raises for a live peer's behaviour."""
    return _probe(path, timeout, _ask_aesm, "Intel's aesmd")


def probe_qgs_path(path: Path, timeout: float = 2.0) -> ProbeResult:
    """:func:`probe_path` for a QGS socket: asks with the QGS-framed probe (wire/qgs.py)."""
    return _probe(path, timeout, _ask_qgs, "Intel's qgsd")


def _ask_aesm(sock: socket.socket) -> _Identity | str:
    conn = ClientConnection()
    sock.sendall(conn.send(m.HelperProbeRequest()))
    reply = receive(conn, sock.recv)
    if reply is PEER_CLOSED:
        return "closed"
    if isinstance(reply, ProtocolViolation):
        return f"bad reply: {reply.reason}"
    if isinstance(reply, m.HelperProbeResponse):
        return _AesmIdentity(reply)
    return "unexpected reply"


class _AesmIdentity:
    __slots__ = ("implementation", "instance_id", "pid", "started_ns", "state", "version")

    def __init__(self, reply: m.HelperProbeResponse) -> None:
        self.implementation = reply.implementation
        self.version = reply.version
        self.pid = reply.pid
        self.instance_id = reply.instance_id
        self.started_ns = reply.started_ns or 0
        self.state = reply.state or ""


def _ask_qgs(sock: socket.socket) -> _Identity | str:
    client = QgsProbeClient()
    sock.sendall(client.send())
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)  # Intel's server then closes at once instead of waiting 30 s
    while True:
        try:
            event = client.next_event()
        except RemoteProtocolError as exc:
            return f"bad reply: {exc}"
        if isinstance(event, ProbeAnswer):
            return event
        if isinstance(event, CloseConnection):
            return "closed"
        client.receive_data(sock.recv(4096))


def _probe(
    path: Path, timeout: float, ask: Callable[[socket.socket], _Identity | str], intel: str
) -> ProbeResult:
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
        try:
            reply = ask(sock)
        except TimeoutError:
            return ProbeResult(
                PathState.FOREIGN,
                f"{path} is served by a program that did not answer our probe",
                silent=True,
            )
        except OSError as exc:
            return ProbeResult(PathState.FOREIGN, f"{path} is served by another program ({exc})")
        if reply == "closed":
            return ProbeResult(
                PathState.FOREIGN,
                f"{path} is served by another program (it closed on our probe, as {intel} does)",
            )
        if isinstance(reply, str):
            return ProbeResult(PathState.FOREIGN, f"{path} is served by another program ({reply})")
        if reply.implementation == IMPLEMENTATION:
            return ProbeResult(
                PathState.OURS,
                f"{path} is served by sgx-quote-helper {reply.version} (pid {reply.pid})",
                reply.pid,
                reply.instance_id,
                reply.version,
                reply.started_ns,
                reply.state,
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


class NewerOwner(ConfigError):
    """The path is served by a live sgx-quote-helper newer than the one starting: leave it alone."""

    def __init__(self, owner: ProbeResult) -> None:
        super().__init__(
            f"{owner.detail} started after this instance: not taking the path from a newer instance"
        )
        self.owner = owner


def is_newer(owner: ProbeResult, started_ns: int, instance_id: str) -> bool:
    """Is ``owner`` (a live sgx-quote-helper) newer than the instance (``started_ns``, ``instance_id``)?

    Larger start time is newer; an owner that does not say (older helpers: 0) is older than anyone.
    The same instance (a restarted container of the same pod) is not newer than itself.
    """
    if owner.state is not PathState.OURS or owner.instance_id == instance_id:
        return False
    return owner.started_ns > started_ns


def publish_socket(
    path: Path,
    *,
    mode: int,
    backlog: int,
    replace: bool,
    probe_timeout: float,
    group: int | None = None,
    started_ns: int = 0,
    instance_id: str = "",
    before: ProbeResult | None = None,
    probe: Prober | None = None,
) -> tuple[socket.socket, SocketIdentity, ProbeResult]:
    """Bind, listen and atomically put a new socket at ``path`` (see the module doc).

    Returns the listening socket, its identity and what was at the path before. ``group`` (a gid)
    is given to the socket before it appears at the path (never visible with the wrong group).
    ``started_ns``/``instance_id``: this instance, to refuse taking over a newer one. ``before``:
    what the caller already found at the path (no second probe; used to put our socket back).
    ``probe``: how to ask the path who serves it (default :func:`probe_path`, the AESM protocol;
    the QGS service passes :func:`probe_qgs_path`).

    Raises:
        NewerOwner: a live sgx-quote-helper newer than this instance serves the path.
        ConfigError: another program serves the path and ``replace`` is false; or binding failed.
    """
    if before is None:
        before = (probe or probe_path)(path, probe_timeout)
        if before.state is PathState.FOREIGN and not replace:
            raise ConfigError(f"{before.detail}; refusing to take it over (use --replace to force)")
        if started_ns and is_newer(before, started_ns, instance_id):
            raise NewerOwner(before)
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
            "took over %s from sgx-quote-helper instance %s (pid %d); it finishes its work and stays "
            "drained until its pod is deleted",
            path,
            before.instance_id,
            before.pid,
        )
    elif before.state is PathState.FOREIGN:
        log.warning("replaced %s (--replace): %s", path, before.detail)
    elif before.state is PathState.STALE:
        log.info("replaced stale socket %s", path)
    return sock, ident, before


def bind_private(path: Path, *, backlog: int) -> tuple[socket.socket, SocketIdentity]:
    """Listen on the pod-private socket ``path`` (the probes' way to this very daemon).

    Only this pod's containers see the directory (an emptyDir), so whatever is there is a previous
    container's leftover: replaced without a probe. Mode 0600: the probes run as the daemon's user.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(3)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        try:
            os.chmod(tmp, 0o600)
            sock.listen(backlog)
            st = os.lstat(tmp)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve the private socket {path}: {exc}") from exc
    sock.setblocking(False)
    return sock, SocketIdentity(st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class Listener:
    """Who listens on a socket path (SO_PEERCRED of the listening socket), as far as we can see."""

    pid: int
    uid: int
    gid: int
    command: str = ""

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid else "a process outside our pid namespace"
        cmd = f" ({self.command})" if self.command else ""
        return f"{who}{cmd}, uid {self.uid}, gid {self.gid}"


def listener_credentials(path: Path, timeout: float = 1.0) -> Listener | None:
    """SO_PEERCRED of whatever listens on ``path`` (its pid, uid, gid at listen() time), with its
    command line from /proc when visible; None when nothing accepts a connection there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    pid, uid, gid = struct.unpack("3i", raw)
    command = ""
    if pid > 0:
        with contextlib.suppress(OSError):
            command = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode("utf-8", "replace")
                .strip()[:200]
            )
    return Listener(pid, uid, gid, command)


class Loss(enum.Enum):
    """What to do when the path no longer names our socket (:func:`judge_loss`)."""

    HAND_OVER = "hand over"  # a live sgx-quote-helper serves it: our successor
    RESTORE = "restore"  # something else (or nothing): put our socket back
    WAIT = "wait"  # it accepted but said nothing yet: look again soon
    RETAKE = "retake"  # an older sgx-quote-helper version took it: take it back (no alert)


def judge_loss(found: ProbeResult, silent_for: float, foreign_grace: float, started_ns: int = 0) -> Loss:
    """Decide on a lost path (see the module doc). ``silent_for``: seconds the listener there has
    accepted without answering our probe so far; ``started_ns``: our start time.

    An sgx-quote-helper too old to report its start time (``started_ns`` 0) that took the path from
    a daemon that does report one is a previous version restarted by its supervisor after it exited
    on our takeover (what versions before the instance record did): we take the path back
    (RETAKE) rather than leave the node to the version being replaced."""
    if found.state is PathState.OURS:
        if found.started_ns == 0 and started_ns > 0:
            return Loss.RETAKE
        return Loss.HAND_OVER
    if found.silent and silent_for < foreign_grace:
        return Loss.WAIT
    return Loss.RESTORE


__all__ = [
    "Listener",
    "Loss",
    "NewerOwner",
    "PathState",
    "ProbeResult",
    "Prober",
    "SocketIdentity",
    "bind_private",
    "is_newer",
    "judge_loss",
    "listener_credentials",
    "path_is",
    "probe_path",
    "probe_qgs_path",
    "publish_socket",
    "unlink_if_ours",
]
