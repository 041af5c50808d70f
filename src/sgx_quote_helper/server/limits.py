"""Who may use the daemon and how much: peer allow-list, per-peer rate and in-flight limits, and
the log of refusals.

- :class:`PeerPolicy` decides at connect time (SO_PEERCRED uid/gid against the allow-lists) and per
  request (a token bucket per peer, refilled at ``rate`` requests/s up to ``burst``; and at most
  ``max_in_flight_per_peer`` engine requests of one peer queued or running). A peer is its uid, or
  its pid when ``by_pid`` (several apps of one uid, e.g. containers all running as root).
- :class:`RefusalLog` writes one log line per refusal, except that repeated refusals of the same
  peer for the same reason within ``quiet_seconds`` are counted and reported on the next line (a
  flood of refused requests must not become a flood of log lines; the metrics count every one).

Time comes in as a parameter (the loop's clock), so these are plain, testable objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

#: buckets not touched for this long are dropped (a peer that went away)
_FORGET_AFTER = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


@dataclass(slots=True)
class PeerPolicy:
    """Access and per-peer limits (see the module doc).

    Attributes:
        allow_uids / allow_gids: when either is non-empty, only peers whose uid is in
            ``allow_uids`` or whose (primary) gid is in ``allow_gids`` may connect.
        rate: requests per second per peer (0: unlimited); ``burst``: the bucket size.
        max_in_flight_per_peer: engine requests of one peer queued or running (0: unlimited).
        by_pid: key the per-peer limits by pid instead of uid.
    """

    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    rate: float = 0.0
    burst: int = 0
    max_in_flight_per_peer: int = 0
    by_pid: bool = False
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _last_sweep: float = 0.0

    @property
    def restricts_peers(self) -> bool:
        """An allow-list is configured."""
        return bool(self.allow_uids or self.allow_gids)

    @property
    def limits_peers(self) -> bool:
        """A per-peer rate or in-flight limit is configured."""
        return self.rate > 0 or self.max_in_flight_per_peer > 0

    def allowed(self, uid: int, gid: int) -> bool:
        """May a peer with this uid/gid connect?"""
        if not self.restricts_peers:
            return True
        return uid in self.allow_uids or gid in self.allow_gids

    def key(self, pid: int, uid: int) -> int:
        """The per-peer key of a connection."""
        return pid if self.by_pid else uid

    def admit(self, key: int, now: float) -> str | None:
        """Take one request of peer ``key``; None if admitted, else the refusal reason
        ("rate" or "peer_in_flight"). Admitted requests must be :meth:`release`-d when answered."""
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(max(self.burst, 1)), now)
            if now - self._last_sweep > _FORGET_AFTER:
                self._forget(now)
        if self.max_in_flight_per_peer and b.in_flight >= self.max_in_flight_per_peer:
            return "peer_in_flight"
        if self.rate > 0:
            b.tokens = min(float(max(self.burst, 1)), b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens < 1.0:
                return "rate"
            b.tokens -= 1.0
        b.in_flight += 1
        return None

    def release(self, key: int) -> None:
        """An admitted request of ``key`` was answered."""
        b = self._buckets.get(key)
        if b is not None and b.in_flight > 0:
            b.in_flight -= 1

    def _forget(self, now: float) -> None:
        self._last_sweep = now
        stale = [k for k, b in self._buckets.items() if b.in_flight == 0 and now - b.stamp > _FORGET_AFTER]
        for k in stale:
            del self._buckets[k]


@dataclass(slots=True)
class RefusalLog:
    """One log line per refusal, repeats of a (reason, peer) within ``quiet_seconds`` folded."""

    logger: logging.Logger
    quiet_seconds: float = 1.0
    _last: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)

    def refused(self, reason: str, pid: int, uid: int, detail: str, now: float, key: int = -1) -> bool:
        """Log a refusal unless a line for the same reason and peer was written recently.
        Returns True if a line was written."""
        k = (reason, uid if key == -1 else key)
        last = self._last.get(k)
        if last is not None and now - last[0] < self.quiet_seconds:
            self._last[k] = (last[0], last[1] + 1)
            return False
        folded = f" ({last[1]} more since the last line)" if last is not None and last[1] else ""
        self.logger.warning("refused client pid=%d uid=%d (%s): %s%s", pid, uid, reason, detail, folded)
        if len(self._last) > 4096:
            self._last.clear()
        self._last[k] = (now, 0)
        return True


__all__ = ["PeerPolicy", "RefusalLog"]
