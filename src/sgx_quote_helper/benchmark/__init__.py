"""Benchmarks as product code: the ``sgx-quote-helper bench`` command and ``bench/run_suite.py`` use it.

- :mod:`.workload`: the AESM request a quote benchmark sends (full quote, dummy quote, size, key ids)
  prepared over the ordinary protocol, and how each answer is judged;
- :mod:`.spec`: what a load run is (:class:`LoadSpec`, the client styles) and the messages between
  the coordinator and its workers (the one module both import: no import circle);
- :mod:`.loadgen`: N concurrent clients over worker processes (intel, aesmd or keep-alive style),
  merged counts and latency percentiles; :mod:`.worker` is one load-generator process;
- :mod:`.intel`: one call made the way Intel's libsgx_quote_ex makes it, system call for system
  call (``bench quote --client intel``);
- :mod:`.ceilings`: one-core ECDSA sign and CMAC rates and the in-process engine's quote latency;
- :mod:`.verifier`: verifier throughput cold and warm;
- :mod:`.daemon`: a daemon under test in its own process (start-up time, RSS, CPU);
- :mod:`.machine`: what the numbers were measured on; :mod:`.timing`: rates and percentiles;
  :mod:`.progress`: the live display.

Layering: above client, engine, verify, wire and abi; never imports the server (a daemon under
test runs as ``python -m sgx_quote_helper serve`` in its own process).
"""

from __future__ import annotations

from .loadgen import LoadResult, Progress, run_load
from .spec import STYLES, LoadSpec, Style
from .timing import LatencySamples, LatencySummary, rate
from .workload import REQUEST_KINDS, SEQUENCES, RequestKind, Sequence, Workload, prepare_workload

__all__ = [
    "REQUEST_KINDS",
    "SEQUENCES",
    "STYLES",
    "LatencySamples",
    "LatencySummary",
    "LoadResult",
    "LoadSpec",
    "Progress",
    "RequestKind",
    "Sequence",
    "Style",
    "Workload",
    "prepare_workload",
    "rate",
    "run_load",
]
