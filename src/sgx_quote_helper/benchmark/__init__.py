"""Benchmarks as product code: the ``sgx-quote-helper bench`` command and ``bench/run_suite.py`` use it.

- :mod:`.workload`: the AESM request a quote benchmark sends (full quote, dummy quote, size, key ids)
  prepared over the ordinary protocol, and how each answer is judged;
- :mod:`.loadgen`: N concurrent clients over worker processes (aesmd or keep-alive style), merged
  counts and latency percentiles; :mod:`.worker` is one load-generator process;
- :mod:`.ceilings`: one-core ECDSA sign and CMAC rates and the in-process engine's quote latency;
- :mod:`.verifier`: verifier throughput cold and warm;
- :mod:`.daemon`: a daemon under test in its own process (start-up time, RSS, CPU);
- :mod:`.machine`: what the numbers were measured on; :mod:`.timing`: rates and percentiles;
  :mod:`.progress`: the live display.

Layering: above client, engine, verify, wire and abi; never imports the server (a daemon under
test runs as ``python -m sgx_quote_helper serve`` in its own process).
"""

from __future__ import annotations

from .loadgen import LoadResult, LoadSpec, Progress, run_load
from .timing import LatencySamples, LatencySummary, rate
from .workload import REQUEST_KINDS, RequestKind, Workload, prepare_workload

__all__ = [
    "REQUEST_KINDS",
    "LatencySamples",
    "LatencySummary",
    "LoadResult",
    "LoadSpec",
    "Progress",
    "RequestKind",
    "Workload",
    "prepare_workload",
    "rate",
    "run_load",
]
