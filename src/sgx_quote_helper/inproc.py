"""One quoting entry point for Python apps, in-process or out-of-process by the system's rule.

The rule (Intel's libsgx_dcap_ql, Open Enclave, Gramine): ``SGX_AESM_ADDR`` set, to any value
(even empty), means **out-of-process**: quotes come from the AESM service on
/var/run/aesmd/aesm.socket through :class:`~sgx_quote_helper.client.QuoteClient` (the app needs no
SGX provisioning privilege). Unset means **in-process**: a quoting engine runs inside the app
(``SGX_QUOTE_HELPER_ENGINE``: ``auto`` by default, i.e. the DCAP hardware engine, which needs
/dev/sgx_enclave and /dev/sgx_provision; ``simulated`` uses the platform in
``SGX_QUOTE_HELPER_STATE``). A process uses one mode only: asking for the other one later (say,
``SGX_AESM_ADDR`` appeared, or an engine was started by hand) is refused with a
:class:`~sgx_quote_helper.errors.ConfigError`, as mixing would quote with two different QEs.

Usage::

    from sgx_quote_helper.inproc import QuoteProvider

    provider = QuoteProvider.from_environment()
    target = provider.target_info()              # give it to the enclave: EREPORT for the QE
    quote = provider.get_quote(report).quote     # the enclave's 432-byte REPORT in, quote out

Errors: in-process, :class:`~sgx_quote_helper.errors.EngineError` (a ``QuoteLibStatus``);
out-of-process, :class:`~sgx_quote_helper.errors.AesmError` / ``TransportError`` /
``BadResponseError`` from the client.
"""

from __future__ import annotations

import abc
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from .abi.aesm import AESM_ADDR_ENV
from .abi.keyid import AttKeyId, QeReportInfo
from .abi.report import Report, TargetInfo
from .client import DEFAULT_SOCKET_PATH, QuoteClient, out_of_process_mode, trim_quote
from .engine.base import InitQuoteResult, QuoteResult, QuotingEngine
from .engine.select import select_engine
from .errors import ConfigError

ENGINE_ENV = "SGX_QUOTE_HELPER_ENGINE"
STATE_ENV = "SGX_QUOTE_HELPER_STATE"

IN_PROCESS = "in-process"
OUT_OF_PROCESS = "out-of-process"


class QuoteProvider(abc.ABC):
    """What an app needs to get quotes, whichever the mode. Start with :meth:`from_environment`."""

    #: ``"in-process"`` or ``"out-of-process"``
    mode: str
    _target: TargetInfo | None = None

    @staticmethod
    def from_environment(
        environ: Mapping[str, str] | None = None,
        *,
        socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
        engine: str | None = None,
        state_dir: Path | None = None,
    ) -> QuoteProvider:
        """The process's provider, by the system's rule: see :func:`from_environment`."""
        return from_environment(environ, socket_path=socket_path, engine=engine, state_dir=state_dir)

    @abc.abstractmethod
    def init_quote(self) -> InitQuoteResult:
        """Initialise the attestation key: QE target info and the 32-byte ECDSA_ID."""

    def target_info(self) -> TargetInfo:
        """The QE's target info (initialises the key once): the enclave's EREPORT target."""
        if self._target is None:
            self._target = self.init_quote().target_info
        assert self._target is not None
        return self._target

    @abc.abstractmethod
    def get_quote(self, report: Report, qe_report_info: QeReportInfo | None = None) -> QuoteResult:
        """Quote a REPORT made for the QE (exact quote bytes, no padding)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine or connection."""


# -- one mode per process ------------------------------------------------------------------------

_lock = threading.Lock()
_create_lock = threading.Lock()
_claimed: str | None = None
_why: str = ""
_shared: QuoteProvider | None = None


def _claim(mode: str, why: str) -> None:
    global _claimed, _why
    with _lock:
        if _claimed is not None and _claimed != mode:
            raise ConfigError(
                f"this process already quotes {_claimed} ({_why}); refusing to also quote {mode} "
                f"({why}): one process uses one quoting mode. Decide once with {AESM_ADDR_ENV} "
                f"(set: out-of-process via the AESM socket; unset: in-process)."
            )
        _claimed, _why = mode, why


def _release(mode: str) -> None:
    global _claimed, _why
    with _lock:
        if _claimed == mode:
            _claimed, _why = None, ""


def current_mode() -> str | None:
    """The mode this process has committed to (``None`` before the first provider)."""
    return _claimed


def _reset_for_tests() -> None:
    """Forget the process's mode and shared provider (tests only)."""
    global _claimed, _why, _shared
    with _lock:
        shared, _shared = _shared, None
        _claimed, _why = None, ""
    if shared is not None:
        shared.close()


# -- the two providers ---------------------------------------------------------------------------


class InProcessProvider(QuoteProvider):
    """Quotes from an engine running in this process (hardware or simulated).

    Raises:
        ConfigError: ``SGX_AESM_ADDR`` is set, or this process already quotes out-of-process.
    """

    mode = IN_PROCESS

    def __init__(self, engine: QuotingEngine, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        if AESM_ADDR_ENV in env:
            raise ConfigError(
                f"{AESM_ADDR_ENV} is set, which means out-of-process quoting for every SGX library "
                f"in this process; refusing to run the {engine.name} engine in-process as well "
                f"(unset {AESM_ADDR_ENV}, or use QuoteProvider.from_environment())"
            )
        _claim(IN_PROCESS, f"the {engine.name} engine runs inside it")
        self.engine = engine
        self.key_id = engine.supported_key_ids()[0]

    def init_quote(self) -> InitQuoteResult:
        result = self.engine.init_quote(self.key_id, want_pub_key_id=True)
        self._target = result.target_info
        return result

    def get_quote(self, report: Report, qe_report_info: QeReportInfo | None = None) -> QuoteResult:
        return self.engine.get_quote(report, self.key_id, qe_report_info)

    def close(self) -> None:
        self.engine.close()


class OutOfProcessProvider(QuoteProvider):
    """Quotes from the AESM service (our daemon or Intel's aesmd) over its Unix socket.

    Raises:
        ConfigError: this process already runs an engine in-process.
    """

    mode = OUT_OF_PROCESS

    def __init__(self, client: QuoteClient | None = None, *, key_id: AttKeyId | None = None) -> None:
        _claim(OUT_OF_PROCESS, f"{AESM_ADDR_ENV} is set: quotes come from the AESM socket")
        self.client = client if client is not None else QuoteClient(DEFAULT_SOCKET_PATH)
        self.key_id = key_id or AttKeyId.ecdsa_p256_qe3()

    def init_quote(self) -> InitQuoteResult:
        r = self.client.init_quote_ex(self.key_id, want_pub_key_id=True)
        self._target = r.target_info
        return InitQuoteResult(r.pub_key_id_size, r.target_info, r.pub_key_id)

    def get_quote(self, report: Report, qe_report_info: QeReportInfo | None = None) -> QuoteResult:
        r = self.client.get_quote_ex(report, self.key_id, qe_report_info=qe_report_info)
        return QuoteResult(trim_quote(r.quote), r.qe_report_info)

    def close(self) -> None:
        self.client.close()


# -- the entry point -----------------------------------------------------------------------------


def from_environment(
    environ: Mapping[str, str] | None = None,
    *,
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
    engine: str | None = None,
    state_dir: Path | None = None,
) -> QuoteProvider:
    """The process's provider, by the system's rule (created on first use, then shared).

    Args:
        environ: the environment to decide from (default ``os.environ``).
        socket_path: the AESM socket (out-of-process; the rule never reads an address from
            ``SGX_AESM_ADDR``).
        engine: in-process engine name (default ``$SGX_QUOTE_HELPER_ENGINE``, else ``auto``).
        state_dir: simulated platform (default ``$SGX_QUOTE_HELPER_STATE``).

    Raises:
        ConfigError: the other mode is already in use in this process, or (in-process) the engine
            cannot start (``auto`` on a node without SGX names what is missing).
    """
    global _shared
    env = os.environ if environ is None else environ
    decision = out_of_process_mode(env)
    wanted = OUT_OF_PROCESS if decision.out_of_process else IN_PROCESS
    with _create_lock:  # one engine per process, even when threads race here
        if _shared is not None and _shared.mode == wanted:
            return _shared
        provider: QuoteProvider
        if decision.out_of_process:
            provider = OutOfProcessProvider(QuoteClient(socket_path))
        else:
            fresh = current_mode() is None
            _claim(IN_PROCESS, decision.reason)  # refuse before starting an engine
            name = engine or env.get(ENGINE_ENV) or "auto"
            state = state_dir or (Path(env[STATE_ENV]) if env.get(STATE_ENV) else None)
            try:
                provider = InProcessProvider(select_engine(name, state_dir=state), environ=env)
            except BaseException:
                if fresh:
                    _release(IN_PROCESS)  # nothing runs in-process after all
                raise
        if _shared is None:
            _shared = provider
        return provider


def get_quote(report: Report, qe_report_info: QeReportInfo | None = None) -> QuoteResult:
    """Quote ``report`` with the process's provider (:func:`from_environment`)."""
    return from_environment().get_quote(report, qe_report_info)


__all__ = [
    "IN_PROCESS",
    "OUT_OF_PROCESS",
    "InProcessProvider",
    "OutOfProcessProvider",
    "QuoteProvider",
    "current_mode",
    "from_environment",
    "get_quote",
]
