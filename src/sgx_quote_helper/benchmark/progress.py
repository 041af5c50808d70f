"""The live progress display of ``bench quote``: a rich status line on stderr, refreshed 4x a second."""

from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .loadgen import Progress


class LiveProgress:
    """Shows phase, elapsed time, answers so far, the current rate and errors while a load runs.

    Use as a context manager and pass :meth:`update` as ``run_load``'s ``on_progress``. With
    ``enabled=False`` (``--json``, or stderr not a terminal) it does nothing.
    """

    def __init__(self, total_seconds: float, unit: str, enabled: bool, stream: IO[str] | None = None) -> None:
        self.total = total_seconds
        self.unit = unit
        self.enabled = enabled
        self._live: Live | None = None
        if enabled:
            console = Console(file=stream, stderr=stream is None)
            self._live = Live(
                Text("starting load generator..."), console=console, refresh_per_second=4, transient=True
            )

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, p: Progress) -> None:
        """Show one snapshot."""
        if self._live is None:
            return
        width = 12
        done = min(1.0, max(0.0, p.elapsed / self.total)) if self.total > 0 else 0.0
        bar = "█" * int(done * width) + "·" * (width - int(done * width))
        line = Text.assemble(
            (f"{p.phase:7s} ", "bold cyan"),
            f"{bar} {p.elapsed:5.1f}/{self.total:g} s ",
            (f"{p.ok_per_s:9,.0f} {self.unit}/s", "bold green"),
            f" {p.ok:,} ok ",
            (f"{p.errors:,} errors", "bold red" if p.errors else "dim"),
        )
        self._live.update(line)


__all__ = ["LiveProgress"]
