"""Choosing the quoting engine by name: ``auto``, ``dcap`` (hardware) or ``simulated``; and the
TDX QGS engine (:func:`select_qgs_engine`): ``auto``, ``tdx`` (Intel's TDX quote library) or
``simulated``.

``auto`` is for production nodes: it starts the DCAP hardware engine when the SGX devices and
Intel's quote library are present, and otherwise refuses with a :class:`ConfigError` that names what
is missing and says that ``--engine simulated`` runs the simulated platform instead. It never falls
back to simulated quotes on its own (the same for the QGS ``auto`` and ``tdx``). Each engine module
is imported only when selected.

(``proxy`` is not an engine: it forwards whole AESM frames, so the server layer handles it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import QuotingEngine
from .dcap_library import QE3_LOGIC_LIBRARY
from .tdx_library import TDX_LOGIC_LIBRARY

if TYPE_CHECKING:
    from .tdx import TdxLibraryEngine
    from .tdx_simulated import SimulatedTdxEngine

#: names accepted by :func:`select_engine`
ENGINE_NAMES = ("auto", "dcap", "simulated")

AUTO_REFUSAL_HINT = (
    "`--engine auto` never serves simulated quotes on its own; "
    "`--engine simulated` runs the simulated platform instead (its quotes chain to a SIMULATED "
    "Intel root, not Intel's)."
)


@dataclass(frozen=True, slots=True)
class DcapOptions:
    """Where the hardware engine finds its library and devices (see :class:`DcapEngine`)."""

    library: str = QE3_LOGIC_LIBRARY
    pce_library: str | None = ""
    device_root: Path = Path("/dev")
    qpl_path: str | None = None


def select_engine(
    name: str,
    *,
    state_dir: Path | None = None,
    create_state: bool = False,
    dcap: DcapOptions | None = None,
) -> QuotingEngine:
    """Build the engine called ``name``.

    Args:
        name: ``auto``, ``dcap`` or ``simulated``.
        state_dir: the simulated platform's state directory (``simulated`` only).
        create_state: create the simulated platform if the directory is empty.
        dcap: library and device locations for the hardware engine.

    Raises:
        ConfigError: unknown name, hardware missing (for ``auto``: with the ``--engine simulated``
            hint), or no state directory for ``simulated``.
        PlatformStateError: the simulated platform's state is unusable.
    """
    options = dcap or DcapOptions()
    if name == "simulated":
        if state_dir is None:
            raise ConfigError("the simulated engine needs a platform state directory (--state-dir)")
        from ..sim.platform import Platform
        from .simulated import SimulatedEngine

        return SimulatedEngine(Platform.open(state_dir, create=create_state))
    if name == "dcap":
        return _dcap(options)
    if name == "auto":
        try:
            return _dcap(options)
        except ConfigError as exc:
            raise ConfigError(f"{exc} {AUTO_REFUSAL_HINT}") from exc
    if name == "proxy":
        raise ConfigError("proxy is not a quoting engine: it is served by the server's upstream proxy")
    raise ConfigError(f"unknown engine {name!r}: choose one of {', '.join(ENGINE_NAMES)}")


def _dcap(options: DcapOptions) -> QuotingEngine:
    from .dcap import DcapEngine

    return DcapEngine(
        library=options.library,
        pce_library=options.pce_library,
        device_root=options.device_root,
        qpl_path=options.qpl_path,
    )


#: names accepted by :func:`select_qgs_engine`
QGS_ENGINE_NAMES = ("auto", "tdx", "simulated")

QGS_AUTO_REFUSAL_HINT = (
    "`--engine auto` never serves simulated quotes on its own; "
    "`--engine simulated` runs the simulated platform's TDX side instead (its quotes chain to a "
    "SIMULATED Intel root, not Intel's)."
)


@dataclass(frozen=True, slots=True)
class TdxOptions:
    """Where the TDX engine finds its library, devices and files (see :class:`TdxLibraryEngine`)."""

    library: str = TDX_LOGIC_LIBRARY
    device_root: Path = Path("/dev")
    qpl_path: str | None = None
    tdqe_path: str | None = None


def select_qgs_engine(
    name: str,
    *,
    state_dir: Path | None = None,
    create_state: bool = False,
    contexts: int = 1,
    tdx: TdxOptions | None = None,
) -> SimulatedTdxEngine | TdxLibraryEngine:
    """Build the QGS engine called ``name``.

    Args:
        name: ``auto``, ``tdx`` or ``simulated``.
        state_dir: the simulated platform's state directory (``simulated`` only).
        create_state: create the simulated platform if the directory is empty.
        contexts: TDX library contexts, one per server worker (``tdx``/``auto``).
        tdx: library and device locations for the TDX engine.

    Raises:
        ConfigError: unknown name, TDX host pieces missing (for ``auto``: with the
            ``--engine simulated`` hint), or no state directory for ``simulated``.
        PlatformStateError: the simulated platform's state is unusable.
    """
    if name == "simulated":
        if state_dir is None:
            raise ConfigError("the simulated engine needs a platform state directory (--state-dir)")
        from ..sim.platform import Platform
        from .tdx_simulated import SimulatedTdxEngine

        return SimulatedTdxEngine(Platform.open(state_dir, create=create_state))
    options = tdx or TdxOptions()
    if name == "tdx":
        return _tdx(options, contexts)
    if name == "auto":
        try:
            return _tdx(options, contexts)
        except ConfigError as exc:
            raise ConfigError(f"{exc} {QGS_AUTO_REFUSAL_HINT}") from exc
    raise ConfigError(f"unknown QGS engine {name!r}: choose one of {', '.join(QGS_ENGINE_NAMES)}")


def _tdx(options: TdxOptions, contexts: int) -> TdxLibraryEngine:
    from .tdx import TdxLibraryEngine

    return TdxLibraryEngine(
        library=options.library,
        device_root=options.device_root,
        contexts=contexts,
        qpl_path=options.qpl_path,
        tdqe_path=options.tdqe_path,
    )


__all__ = [
    "AUTO_REFUSAL_HINT",
    "ENGINE_NAMES",
    "QGS_AUTO_REFUSAL_HINT",
    "QGS_ENGINE_NAMES",
    "DcapOptions",
    "TdxOptions",
    "select_engine",
    "select_qgs_engine",
]
