"""Soak run: good and hostile clients against one daemon subprocess, its RSS and fds sampled.

Good clients (:class:`~sgx_quote_helper.testing.restart.Load`: Intel-style and QuoteClient) quote
continuously with every quote checked; hostile threads cycle through the behaviours of
:mod:`~sgx_quote_helper.testing.hostile` (random frames on their own connections, oversized
prefixes, half-closed sockets, bursts of slowloris connections left to the daemon's timeouts,
pipeliners that never read, clients that ask a 1 MiB GetQuoteEx reply and never read it: the daemon
runs with a small ``--max-reply-buffer`` so they hold little, and aborts them at its idle timeout). A sampler reads the daemon's ``/proc/<pid>`` every ``interval``.

Verdict (:func:`judge`): after a warm-up (the first quarter, at least 3 s), the RSS of the last
quarter may exceed that of the first post-warm-up quarter by at most ``rss_tolerance_kib`` (default
8 MiB) and 10 %; once the hostile clients stop and the timeouts pass, the daemon's fds must be back
within 8 of where they were before the run; good clients must see zero failures and no bad quote.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from ..wire import messages as m
from ..wire.framing import encode_frame
from . import hostile
from .restart import Daemons, Load, summarize

IDLE_TIMEOUT = 2.0
READ_TIMEOUT = 1.0
#: MiB of replies the soak daemon buffers for clients that do not read (--max-reply-buffer)
REPLY_BUFFER_MIB = 2


class Hostiles:
    """``threads`` hostile client threads (see the module doc) until :meth:`stop`, or until
    ``max_frames`` random frames were sent."""

    def __init__(
        self, path: Path, frame: bytes, threads: int, seed: int, max_frames: int | None, big: bytes = b""
    ) -> None:
        self.path, self.frame, self.max_frames, self.big = path, frame, max_frames, big or frame
        self.counts = {
            "random_frames": 0, "oversized": 0, "half_closed": 0, "slowloris": 0, "pipelined": 0,
            "never_reading": 0,
        }  # fmt: skip
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._run, args=(random.Random(seed + i),), daemon=True, name=f"hostile-{i}"
            )
            for i in range(threads)
        ]

    def start(self) -> None:
        """Start the threads."""
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop and join the threads."""
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def done(self) -> bool:
        """``max_frames`` reached."""
        return self.max_frames is not None and self.counts["random_frames"] >= self.max_frames

    def _add(self, key: str, n: int) -> None:
        with self._lock:
            self.counts[key] += n

    def _run(self, rng: random.Random) -> None:
        while not self._stop.is_set() and not self.done():
            try:
                self._round(rng)
            except OSError as exc:  # the daemon refused or reset us: fine, note the first few
                if len(self.errors) < 10:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def _round(self, rng: random.Random) -> None:
        what = rng.random()
        if what < 0.80 or (self.max_frames is not None and what < 0.97):
            self._add("random_frames", hostile.random_frames(self.path, rng, 50))
        elif what < 0.85:
            self._add("oversized", sum(hostile.oversized_prefix(self.path) for _ in range(5)))
        elif what < 0.90:
            hostile.half_closed(self.path, self.frame)
            self._add("half_closed", 1)
        elif what < 0.93:
            readers = hostile.never_reading(self.path, self.big, 20)
            self._add("never_reading", len(readers))
            self._stop.wait(rng.uniform(0.2, IDLE_TIMEOUT + 1))  # some are aborted by the daemon
            for s in readers:
                s.close()
        elif what < 0.95:
            socks = hostile.open_idle(self.path, 100)
            self._add("slowloris", len(socks))
            self._stop.wait(rng.uniform(0.2, IDLE_TIMEOUT + 1))  # some live to be closed by the daemon
            for s in socks:
                s.close()
        else:
            pipes = [hostile.Pipeliner(self.path, self.frame) for _ in range(5)]
            for _ in range(10):
                for p in pipes:
                    p.push()
                self._stop.wait(0.05)
            self._add("pipelined", len(pipes))
            for p in pipes:
                p.close()


def judge(
    samples: list[dict[str, float]], fds_before: int, fds_after: int, rss_tolerance_kib: int = 8192
) -> dict[str, Any]:
    """The growth verdict over ``samples`` (dicts with t, rss_kib, fds); see the module doc."""
    n = len(samples)
    t_end = samples[-1]["t"] if samples else 0.0
    warm = max(3.0, t_end / 4)
    steady = [s for s in samples if s["t"] >= warm]
    q = max(1, len(steady) // 4)
    first = statistics.median(s["rss_kib"] for s in steady[:q]) if steady else 0.0
    last = statistics.median(s["rss_kib"] for s in steady[-q:]) if steady else 0.0
    allowed = max(rss_tolerance_kib, first * 0.10)
    rss_ok = bool(steady) and last - first <= allowed
    fds_ok = fds_after <= fds_before + 8
    return {
        "samples": n,
        "warmup_s": round(warm, 1),
        "rss_first_quarter_kib": first,
        "rss_last_quarter_kib": last,
        "rss_growth_kib": last - first,
        "rss_allowed_growth_kib": round(allowed),
        "rss_max_kib": max((s["rss_kib"] for s in samples), default=0),
        "fds_before": fds_before,
        "fds_max": max((s["fds"] for s in samples), default=0),
        "fds_after": fds_after,
        "rss_ok": rss_ok,
        "fds_ok": fds_ok,
    }


def run_soak(
    root: Path,
    seconds: float,
    *,
    good_clients: int = 8,
    hostile_threads: int = 2,
    interval: float = 0.5,
    max_frames: int | None = None,
    seed: int = 1,
    rss_tolerance_kib: int = 8192,
) -> dict[str, Any]:
    """Run the soak (see the module doc) for ``seconds`` (or until ``max_frames`` random frames);
    returns the result with ``passed``."""
    daemons = Daemons(
        root,
        (
            "--idle-timeout", str(IDLE_TIMEOUT), "--read-timeout", str(READ_TIMEOUT), "-q",
            "--max-reply-buffer", str(REPLY_BUFFER_MIB),
        ),
    )  # fmt: skip
    daemons.start()
    assert daemons.current is not None
    pid = daemons.current.pid
    samples: list[dict[str, float]] = []
    try:
        load = Load(daemons, good_clients)
        fds_before = hostile.open_fds(pid)
        rep = load.reports[0]
        frame = encode_frame(
            m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), load.key, None, load.size, 1000))
        )
        big = encode_frame(
            m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), load.key, None, 1 << 20, 1000))
        )
        bad = Hostiles(daemons.path, frame, hostile_threads, seed, max_frames, big)
        t0 = time.monotonic()
        load.start()
        bad.start()
        try:
            while True:
                t = time.monotonic() - t0
                samples.append(
                    {"t": round(t, 2), "rss_kib": hostile.rss_kib(pid), "fds": hostile.open_fds(pid)}
                )
                if bad.done() or (max_frames is None and t >= seconds):
                    break
                time.sleep(interval)
        finally:
            bad.stop()
        settle_end = time.monotonic() + IDLE_TIMEOUT + READ_TIMEOUT + 3
        while hostile.open_fds(pid) > fds_before + 8 and time.monotonic() < settle_end:
            time.sleep(0.2)
        fds_after = hostile.open_fds(pid)
        load.stop()
        elapsed = time.monotonic() - t0
    finally:
        daemons.stop()
    verdict = judge(samples, fds_before, fds_after, rss_tolerance_kib)
    good = summarize(load.stats)
    good_ok = all(good[k]["failed"] == 0 and good[k]["bad_quotes"] == 0 and good[k]["ok"] > 0 for k in good)
    return {
        "seconds": round(elapsed, 1),
        "good_clients": good_clients,
        "hostile_threads": hostile_threads,
        "hostile": dict(bad.counts),
        "hostile_errors": bad.errors,
        "good": good,
        "verdict": verdict,
        "daemon_exit_codes": daemons.exit_codes,
        "passed": verdict["rss_ok"] and verdict["fds_ok"] and good_ok and daemons.exit_codes == [0],
        "samples": samples,
    }


__all__ = ["Hostiles", "judge", "run_soak"]
