"""What a load run is (:class:`LoadSpec`) and the messages between the coordinator and its workers.

The one module both :mod:`.loadgen` (the coordinator) and :mod:`.worker` (one load process) import,
so neither imports the other's internals and there is no import circle.

Worker protocol over a :func:`multiprocessing.Pipe` (tuples, so they pickle cheaply):
``(READY,)`` once started; the coordinator answers ``(GO, start_ns)``; then ``(PROGRESS, ok, errors)``
every :data:`PROGRESS_INTERVAL` seconds and finally
``(DONE, counts, samples_bytes, window_ns, event_loop_name, cpu_seconds)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .qgs import QgsWorkload
from .workload import Workload

#: ``intel``: Intel's libsgx_quote_ex socket code call for call (see :mod:`.intel`); ``aesmd``: a new
#: connection per request, frame written at once; ``keepalive``: one connection per client;
#: ``qgs``: a QGS client (a :class:`~.qgs.QgsWorkload`), a new connection per request as QEMU and
#: libtdx_attest, the request written at once
Style = Literal["intel", "aesmd", "keepalive", "qgs"]
#: the styles of an AESM service (``bench quote --client``)
STYLES: tuple[Style, ...] = ("intel", "aesmd", "keepalive")
#: who makes the calls: ``python`` (worker processes, :mod:`.worker`) or ``native`` (the C program
#: of :mod:`.native`, one process; the ``intel`` style only)
LoadGen = Literal["python", "native"]
LOADGENS: tuple[LoadGen, ...] = ("python", "native")

#: how often workers report progress (seconds)
PROGRESS_INTERVAL = 0.25

READY = "ready"
GO = "go"
PROGRESS = "progress"
DONE = "done"


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to run. ``processes=None`` picks :func:`~.loadgen.default_processes`; ``total_requests``
    ends the run after that many measured requests instead of after ``duration`` seconds."""

    socket_path: str
    workload: Workload | QgsWorkload
    clients: int = 1
    duration: float = 5.0
    warmup: float = 0.5
    style: Style = "aesmd"
    processes: int | None = None
    use_uvloop: bool = True
    total_requests: int | None = None
    grace: float = 15.0
    cpu_affinity: frozenset[int] | None = None
    loadgen: LoadGen = "python"

    def __post_init__(self) -> None:
        if (self.style == "qgs") != isinstance(self.workload, QgsWorkload):
            raise ValueError("a QGS workload runs in the qgs style, and the qgs style needs one")
        if self.loadgen == "native" and self.style != "intel":
            raise ValueError("the native load generator makes Intel-pattern calls only (style intel)")


__all__ = [
    "DONE",
    "GO",
    "LOADGENS",
    "PROGRESS",
    "PROGRESS_INTERVAL",
    "READY",
    "STYLES",
    "LoadGen",
    "LoadSpec",
    "Style",
]
