"""server/admission.py: the one admission decision, pure (no socket, time passed in), its order of
checks pinned."""

from __future__ import annotations

from sgx_quote_helper.server.admission import Action, Admission
from sgx_quote_helper.server.limits import PeerPolicy
from sgx_quote_helper.wire import messages as m

Q, NUM = m.GetQuoteExRequest, m.GetSupportedAttKeyIDNumRequest


def test_cheap_requests_run_inline_engine_ones_off_the_loop_until_known_fast() -> None:
    adm = Admission(PeerPolicy(), max_in_flight=4, inline_below=0.001)
    assert adm.decide(NUM, 0, 0.0, engine=False).action is Action.INLINE
    d = adm.decide(Q, 0, 0.0, engine=True)
    assert d.action is Action.OFFLOAD and d.slow  # never measured: the engine thread first
    adm.record_cost(Q, 0.0001)
    assert adm.decide(Q, 0, 0.0, engine=True).action is Action.INLINE
    adm.started(d)  # a slow one in the thread: do not block the loop behind the engine lock
    d2 = adm.decide(Q, 0, 0.0, engine=True)
    assert d2.action is Action.OFFLOAD and not d2.slow
    adm.finished(d)
    assert adm.in_flight == 0 and adm.slow_in_flight == 0


def test_global_bound_is_busy_for_engine_requests_only() -> None:
    adm = Admission(PeerPolicy(), max_in_flight=1)
    d = adm.decide(Q, 0, 0.0, engine=True)
    adm.started(d)
    busy = adm.decide(Q, 0, 0.0, engine=True)
    assert busy.action is Action.BUSY and busy.reason == "busy"
    assert adm.decide(NUM, 0, 0.0, engine=False).action is Action.INLINE


def test_peer_limits_come_first_and_a_later_refusal_gives_the_slot_back() -> None:
    policy = PeerPolicy(max_in_flight_per_peer=1)
    adm = Admission(policy, max_in_flight=1)
    held = adm.decide(Q, 7, 0.0, engine=True)
    assert held.action is Action.OFFLOAD and held.peer == 7
    adm.started(held)
    refused = adm.decide(Q, 7, 0.0, engine=True)
    assert (refused.action, refused.reason) == (Action.BUSY, "peer_in_flight")
    other = adm.decide(Q, 8, 0.0, engine=True)  # peer 8 admitted by its limits, refused globally
    assert (other.action, other.reason) == (Action.BUSY, "busy")
    adm.finished(held)
    adm.answered(held)
    again = adm.decide(Q, 8, 0.0, engine=True)  # peer 8's slot was given back by the refusal
    assert again.action is Action.OFFLOAD


def test_exempt_requests_skip_the_peer_limits() -> None:
    adm = Admission(PeerPolicy(rate=1.0, burst=1), max_in_flight=8)
    assert adm.decide(NUM, 1, 0.0, engine=False).action is Action.INLINE
    assert adm.decide(NUM, 1, 0.0, engine=False).reason == "rate"
    assert adm.decide(m.HelperProbeRequest, 1, 0.0, engine=False, exempt=True).action is Action.INLINE
    assert adm.decide(NUM, 1, 1.0, engine=False).action is Action.INLINE  # time refills the bucket


def test_reply_buffer_cap_refuses_big_replies_and_lets_small_ones_through() -> None:
    adm = Admission(PeerPolicy(), max_in_flight=8, max_reply_bytes=4 << 20)
    adm.reply_bytes = 2 << 20
    big = adm.decide(Q, 0, 0.0, engine=True, reply_hint=1 << 20)
    assert big.action is Action.OFFLOAD  # exactly fits the 3/4 large replies may fill
    adm.reply_bytes += 1
    refused = adm.decide(Q, 0, 0.0, engine=True, reply_hint=1 << 20)
    assert (refused.action, refused.reason) == (Action.BUSY, "reply_buffer")
    adm.reply_bytes = 3 << 20
    assert (refused.action, refused.reason) == (Action.BUSY, "reply_buffer")
    assert adm.decide(Q, 0, 0.0, engine=True, reply_hint=5000).action is Action.OFFLOAD  # small fits
    adm.reply_bytes = (4 << 20) - 4999
    assert adm.decide(Q, 0, 0.0, engine=True, reply_hint=5000).action is Action.BUSY
    adm.reply_bytes = (4 << 20) - 5000
    assert adm.decide(Q, 0, 0.0, engine=True, reply_hint=5000).action is Action.OFFLOAD
    assert (
        Admission(PeerPolicy(), 8).decide(Q, 0, 0.0, engine=True, reply_hint=1 << 30).action is Action.OFFLOAD
    )


def test_an_engine_that_never_blocks_runs_inline_whatever_a_sample_cost() -> None:
    adm = Admission(PeerPolicy(), max_in_flight=1, inline_below=0.0005, always_inline=True)
    adm.record_cost(Q, 0.05)  # a preempted sample on a busy node
    assert adm.decide(Q, 0, 0.0, engine=True).action is Action.INLINE
    adm.in_flight = 1  # still bounded
    assert adm.decide(Q, 0, 0.0, engine=True).action is Action.BUSY
