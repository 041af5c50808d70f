"""testing/soak.py: the verdict, and a 15-second slice of the soak run (the documented long run is
``python bench/soak.py --minutes 5``; a million hostile frames: ``python bench/soak.py --frames
1000000 --good-clients 2 --hostile-threads 3``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.testing.soak import judge, run_soak

from ._aesm_helpers import short_dir


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def flat(n: int, rss: float, slope: float = 0.0) -> list[dict[str, float]]:
    return [{"t": float(i), "rss_kib": rss + slope * i, "fds": 20.0} for i in range(n)]


def test_judge_flat_memory_passes() -> None:
    v = judge(flat(60, 48_000), fds_before=16, fds_after=18)
    assert v["rss_ok"] and v["fds_ok"] and v["rss_growth_kib"] == 0


def test_judge_catches_a_leak_and_leaked_fds() -> None:
    v = judge(flat(60, 48_000, slope=400), fds_before=16, fds_after=40)  # +400 KiB/s: ~16 MiB
    assert not v["rss_ok"] and not v["fds_ok"]


def test_judge_ignores_warmup_growth() -> None:
    samples = flat(60, 48_000)
    for s in samples[:10]:
        s["rss_kib"] = 30_000 + s["t"] * 1_800  # allocator warm-up in the first seconds
    assert judge(samples, 16, 16)["rss_ok"]


@pytest.mark.slow
def test_soak_slice(root: Path) -> None:
    res = run_soak(root, 15.0, good_clients=6, hostile_threads=2, interval=0.5)
    assert res["passed"], {k: v for k, v in res.items() if k != "samples"}
    assert (
        res["hostile"]["random_frames"] > 0 and res["hostile"]["slowloris"] + res["hostile"]["pipelined"] > 0
    )
