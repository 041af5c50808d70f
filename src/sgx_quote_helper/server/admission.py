"""Request admission: the one place that decides, for the daemon and the upstream proxy alike,
whether a request is answered BUSY, run on the event loop, or sent off it (engine thread / upstream).

:meth:`Admission.decide` takes what the decision depends on — the request's kind, the peer, the
load in flight, the recent cost of such requests, the reply bytes buffered, and ``now`` — and
returns a :class:`Decision`. The order of the checks is the contract (tests pin it):

1. per-peer limits (``PeerPolicy``: rate and in-flight per peer), unless the request is exempt
   (our HelperProbe: a successor's takeover must never be refused);
2. requests that need no engine run inline at once;
3. the global in-flight bound (``max_in_flight``): BUSY (18);
4. the global reply-buffer cap: a request whose reply may be large (GetQuoteEx, ``reply_hint`` its
   ``buf_size``) is BUSY when the replies already buffered for peers that do not read, plus this
   one, would pass ``max_reply_bytes`` (a flood of never-reading clients cannot grow memory).
   Replies of :data:`LARGE_REPLY` or more may fill only three quarters of the cap, so that
   ordinary quotes (a few KB) still get through while big-buffer clients hold the rest;
5. inline when the engine never blocks (``always_inline``), or when this kind is known to be fast
   and nothing slow holds the engine; else off the loop.

A refusal after step 1 gives the peer's slot back itself. No I/O and no clock: plain state, time
passed in, unit-tested without a socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .limits import PeerPolicy


class Action(enum.Enum):
    BUSY = "busy"  #: answer BUSY (18) now
    INLINE = "inline"  #: answer now, on the event loop
    OFFLOAD = "offload"  #: run in the engine thread (daemon) or forward upstream (proxy)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request.

    Attributes:
        action: see :class:`Action`.
        reason: for BUSY, the refusal reason (``rate``, ``peer_in_flight``, ``busy``, ``reply_buffer``).
        peer: the peer key holding a per-peer slot; give it back with :meth:`Admission.answered`.
        slow: OFFLOAD of a request not known to be fast (it may hold the engine a while).
    """

    action: Action
    reason: str = ""
    peer: int | None = None
    slow: bool = False


#: a reply this big (GetQuoteEx ``buf_size``) is "large": it may use only 3/4 of the reply cap
LARGE_REPLY = 64 << 10

_INLINE = Decision(Action.INLINE)
_BUSY = Decision(Action.BUSY, "busy")
_REPLY_FULL = Decision(Action.BUSY, "reply_buffer")


class Admission:
    """Admission state and decision (see the module doc).

    Args:
        policy: the per-peer limits.
        max_in_flight: requests off the loop (queued or running) before BUSY.
        inline_below: seconds; a kind of request whose moving average cost is below this runs inline
            (0: never inline).
        max_reply_bytes: the global cap on reply bytes buffered for peers (0: no cap).
        always_inline: the engine never blocks (``QuotingEngine.blocking`` false): engine requests
            run inline whatever their measured cost (a preempted sample must not send a fast
            engine to the thread).
    """

    __slots__ = (
        "_cost",
        "always_inline",
        "in_flight",
        "inline_below",
        "limit_peers",
        "max_in_flight",
        "max_reply_bytes",
        "policy",
        "reply_bytes",
        "slow_in_flight",
    )

    def __init__(
        self,
        policy: PeerPolicy,
        max_in_flight: int,
        inline_below: float = 0.0,
        max_reply_bytes: int = 0,
        always_inline: bool = False,
    ) -> None:
        self.policy = policy
        self.always_inline = always_inline
        self.limit_peers = policy.limits_peers
        self.max_in_flight = max_in_flight
        self.inline_below = inline_below
        self.max_reply_bytes = max_reply_bytes
        #: requests off the loop now
        self.in_flight = 0
        #: of which not known to be fast
        self.slow_in_flight = 0
        #: reply bytes buffered (written but not yet taken by the peers)
        self.reply_bytes = 0
        self._cost: dict[type, float] = {}

    def decide(
        self,
        kind: type,
        peer: int,
        now: float,
        *,
        engine: bool,
        exempt: bool = False,
        reply_hint: int = 0,
    ) -> Decision:
        """The decision for one request of type ``kind`` from peer key ``peer`` at ``now``."""
        key = None
        if self.limit_peers and not exempt:
            refusal = self.policy.admit(peer, now)
            if refusal is not None:
                return Decision(Action.BUSY, refusal)
            key = peer
        if not engine:
            return _INLINE if key is None else Decision(Action.INLINE, peer=key)
        refused = None
        if self.in_flight >= self.max_in_flight:
            refused = _BUSY
        elif reply_hint and self.max_reply_bytes:
            room = self.max_reply_bytes if reply_hint < LARGE_REPLY else self.max_reply_bytes * 3 // 4
            if self.reply_bytes + reply_hint > room:
                refused = _REPLY_FULL
        if refused is not None:
            if key is not None:
                self.policy.release(key)
            return refused
        if self.always_inline or (self.slow_in_flight == 0 and self.known_fast(kind)):
            return _INLINE if key is None else Decision(Action.INLINE, peer=key)
        return Decision(Action.OFFLOAD, peer=key, slow=not self.known_fast(kind))

    def started(self, decision: Decision) -> None:
        """An OFFLOAD decision is now in flight."""
        self.in_flight += 1
        self.slow_in_flight += decision.slow

    def finished(self, decision: Decision) -> None:
        """An OFFLOAD decision came back."""
        self.in_flight -= 1
        self.slow_in_flight -= decision.slow

    def answered(self, decision: Decision | None) -> None:
        """The request was answered (or dropped): its per-peer slot is free again."""
        if decision is not None and decision.peer is not None:
            self.policy.release(decision.peer)

    def known_fast(self, kind: type) -> bool:
        """Requests of this kind have recently cost less than ``inline_below``."""
        limit = self.inline_below
        return limit > 0 and self._cost.get(kind, limit) < limit

    def record_cost(self, kind: type, seconds: float) -> None:
        """Update the moving average of engine time for this kind of request."""
        old = self._cost.get(kind)
        self._cost[kind] = seconds if old is None else old * 0.8 + seconds * 0.2


__all__ = ["LARGE_REPLY", "Action", "Admission", "Decision"]
