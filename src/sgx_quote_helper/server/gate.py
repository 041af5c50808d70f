"""The door of every quote service: who may open a connection, and how many (AESM and QGS alike).

At ``connection_made`` each service's connection asks :meth:`Gate.open` with the peer's
credentials (:func:`peer_credentials`: SO_PEERCRED pid/uid/gid of a Unix peer; ``(-1, -1, -1)`` when
the transport has none, e.g. vsock). The checks, in order (tests pin it):

1. ``max_connections``: open connections of this service;
2. the allow-list (``PeerPolicy``: uid or primary gid; a peer whose credentials cannot be read is
   refused when a list is configured: nothing fails open);
3. ``max_connections_per_uid``: open connections of one peer uid.

A refusal is counted in the metrics (``refused_total{reason}``: ``max_connections``,
``not_allowed``, ``max_connections_per_uid``) and logged through the :class:`RefusalLog` (repeats
folded); the caller closes the transport. An admitted connection that holds a per-uid slot gives it
back with :meth:`Gate.close`. No event loop, no clock: ``now`` is passed in.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from .limits import PeerPolicy, RefusalLog
from .metrics import ServerMetrics

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
#: what :func:`peer_credentials` says when it cannot tell
UNKNOWN_PEER = (-1, -1, -1)


def peer_credentials(transport: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of ``transport`` (SO_PEERCRED); :data:`UNKNOWN_PEER` if unavailable."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            pid, uid, gid = _PEERCRED.unpack(raw)
            return pid, uid, gid
        except (OSError, AttributeError, struct.error):
            pass
    return UNKNOWN_PEER


class Gate:
    """Connection admission of one service (see the module doc).

    Args:
        policy: the allow-lists (``PeerPolicy.allowed``).
        max_connections: open connections before new ones are refused.
        max_connections_per_uid: open connections of one uid before its new ones are refused (0: off).
        metrics / refusals: where refusals are counted and logged.
    """

    __slots__ = (
        "counts_only",
        "max_connections",
        "max_connections_per_uid",
        "metrics",
        "per_uid",
        "policy",
        "refusals",
    )

    def __init__(
        self,
        policy: PeerPolicy,
        max_connections: int,
        max_connections_per_uid: int,
        metrics: ServerMetrics,
        refusals: RefusalLog,
    ) -> None:
        self.policy = policy
        self.max_connections = max_connections
        self.max_connections_per_uid = max_connections_per_uid
        self.metrics = metrics
        self.refusals = refusals
        #: open connections per peer uid (only with a per-uid cap)
        self.per_uid: dict[int, int] = {}
        #: no allow-list and no per-uid cap: :meth:`open` checks ``max_connections`` only (so a
        #: caller may check that itself and not call)
        self.counts_only = not policy.restricts_peers and not max_connections_per_uid

    def open(
        self, open_now: int, peer: Callable[[], tuple[int, int, int]], now: float
    ) -> tuple[bool, int | None]:
        """May a new connection open, with ``open_now`` already open? ``peer`` reads its
        credentials (called only when a check needs them). Returns (admitted, the uid holding a
        per-uid slot or None); a refusal is already counted and logged."""
        if open_now >= self.max_connections:
            self.refuse("max_connections", f"{self.max_connections} connections open", peer, now)
            return False, None
        if self.policy.restricts_peers or self.max_connections_per_uid:
            _, uid, gid = peer()
            if self.policy.restricts_peers and not self.policy.allowed(uid, gid):
                self.refuse("not_allowed", "uid/gid not in the allow-list", peer, now)
                return False, None
            if self.max_connections_per_uid:
                n = self.per_uid.get(uid, 0)
                if n >= self.max_connections_per_uid:
                    self.refuse("max_connections_per_uid", f"uid {uid} has {n} connections open", peer, now)
                    return False, None
                self.per_uid[uid] = n + 1
                return True, uid
        return True, None

    def refuse(self, reason: str, detail: str, peer: Callable[[], tuple[int, int, int]], now: float) -> None:
        """Count and log one refused connection."""
        self.metrics.refuse(reason)
        pid, uid, _ = peer()
        self.refusals.refused(reason, pid, uid, f"{detail}; connection closed", now)

    def close(self, uid: int | None) -> None:
        """A connection admitted holding the per-uid slot of ``uid`` closed."""
        if uid is None:
            return
        left = self.per_uid.get(uid, 1) - 1
        if left > 0:
            self.per_uid[uid] = left
        else:
            self.per_uid.pop(uid, None)


__all__ = ["UNKNOWN_PEER", "Gate", "peer_credentials"]
